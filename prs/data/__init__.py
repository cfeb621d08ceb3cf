"""Data: datasets, the offline synthetic CIFAR-100, data-scale subsets and the two loaders.

- `datasets`: "cifar100", "synthetic" and "imagefolder:<path>" by name, the data root, loading;
- `arrays`: datasets we write ourselves (`.npz`, no pickle) and their reader with torchvision's CIFAR-100 API;
- `synthetic`: the synthetic CIFAR-100 generator;
- `subsets`: which training images a data ratio keeps (the test set is always complete);
- `order`: epoch seeds and each rank's shard of an epoch;
- `device_loader`, `torchvision_loader`: the two loaders, both driven by `set_epoch(epoch)`,
  so that an epoch's order and augmentation are a function of (seed, epoch) only;
- `validation`: what the loaders refuse, in the user's settings;
- `loaders`: `build_loaders` for a config, `build_mixup`, `sample_images`.

Everything is importable from `prs.data` itself.
"""

from prs.data.arrays import ARRAY_FOLDER, ArrayCIFAR100, read_array_split, write_array_dataset
from prs.data.datasets import (CIFAR100_MEAN, CIFAR100_STD, CIFAR_FOLDER, DATASET_FORMS, GENERATED, IMAGENET_MEAN,
                               IMAGENET_STD, check_dataset_name, data_root, download_cifar100, is_imagefolder, labels_of,
                               load_datasets)
from prs.data.device_loader import DeviceLoader, EpochPlan, crop_flip_normalize, draw_augmentation, normalize_uint8
from prs.data.loaders import build_loaders, build_mixup, sample_images
from prs.data.order import epoch_seed, shard_order
from prs.data.subsets import balanced_subset, imagefolder_subset, indices_sha, train_indices
from prs.data.synthetic import synthetic_class_names, write_synthetic_cifar100
from prs.data.torchvision_loader import TorchvisionLoader, torchvision_transform
from prs.data.validation import CONFIG, SettingNames

__all__ = [
    "ARRAY_FOLDER", "ArrayCIFAR100", "CIFAR100_MEAN", "CIFAR100_STD", "CIFAR_FOLDER", "CONFIG", "DATASET_FORMS",
    "DeviceLoader", "EpochPlan", "GENERATED", "IMAGENET_MEAN", "IMAGENET_STD", "SettingNames", "TorchvisionLoader", "balanced_subset",
    "build_loaders", "build_mixup", "check_dataset_name", "crop_flip_normalize", "data_root", "download_cifar100",
    "draw_augmentation", "epoch_seed", "imagefolder_subset", "indices_sha", "is_imagefolder", "labels_of",
    "load_datasets", "normalize_uint8", "read_array_split", "sample_images", "shard_order", "synthetic_class_names", "torchvision_transform",
    "train_indices", "write_array_dataset", "write_synthetic_cifar100",
]
