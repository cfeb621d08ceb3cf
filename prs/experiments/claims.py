"""The paper's claims, one per notebook, in the words of its abstract (Lee et al. 2022, CC BY 4.0).

The abstract gives no numbers, so every number attributed to the paper in the book is "unknown".
Each notebook's spec (`prs.experiments.specs`) and verdict (`prs.experiments.verdicts`) take
their claim from here.
"""

PAPER_CLAIMS = {
    "01_data_scale": "The more convolution-like inductive bias is included in the model, the smaller the data "
                     "scale is required where the ViT-like model outperforms the ResNet performance.",
    "02_fourier": "Through Fourier analysis of feature maps ... we observe which inductive bias is advantageous "
                  "for each data scale.",
    "03_interpolation": "By adjusting the number of epochs the model stays in the convolution, we show that "
                        "reparameterization from convolution to self-attention interpolates the Fourier analysis "
                        "pattern between CNNs and ViTs.",
    "04_prs_cifar100": "PRS outperformed previous studies on the small-scale dataset, e.g., CIFAR-100.",
}
