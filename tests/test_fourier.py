"""prs.fourier: spectra of inputs with known answers, block layouts of each model family."""

import json
import math

import numpy as np
import pytest
import torch
from torch import nn
from timm.models.convit import ConVit
from timm.models.resnet import BasicBlock, ResNet
from timm.models.vision_transformer import VisionTransformer

import prs.models
from prs.errors import UserError
from prs.fourier import (
    LOG_EPS,
    FeatureBlock,
    _tokens_to_map,
    diagonal_frequencies,
    feature_blocks,
    fourier_curves,
    relative_log_amplitude,
)
from prs.reparam import ReparamConv2d, switch_to_attention, switchable_layers


def gaussian_noise(shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def angular_frequency_grid(h, w):
    """Per-axis angular frequencies (radians per pixel) of np.fft.fft2 bins."""
    wy = 2 * np.pi * np.fft.fftfreq(h)
    wx = 2 * np.pi * np.fft.fftfreq(w)
    return wy[:, None], wx[None, :]


def blur_in_fourier_domain(x, sigma):
    """Circular Gaussian blur: multiply the spectrum by exp(-sigma^2 (wx^2 + wy^2) / 2)."""
    wy, wx = angular_frequency_grid(*x.shape[-2:])
    gain = torch.from_numpy(np.exp(-(sigma**2) * (wx**2 + wy**2) / 2))
    return torch.fft.ifft2(torch.fft.fft2(x) * gain).real


# ---------------------------------------------------------------- frequencies and indexing


@pytest.mark.parametrize(
    "h, w, expected",
    [
        (4, 4, [0.0, 0.5]),  # even: positive side 0, 2/n; Nyquist excluded
        (5, 5, [0.0, 0.4, 0.8]),  # odd: 0, 2/n, 4/n
        (32, 32, [2 * k / 32 for k in range(16)]),
        (8, 4, [0.0, 0.5]),  # non-square: only bins with w_x == w_y (g = 4)
        (16, 8, [0.0, 0.25, 0.5, 0.75]),
        (12, 8, [0.0, 0.5]),
        (7, 5, [0.0]),  # coprime: only zero frequency lies on w_x == w_y
        (1, 1, [0.0]),
    ],
)
def test_diagonal_frequencies_and_curve_length(h, w, expected):
    freqs = diagonal_frequencies(h, w)
    assert freqs.tolist() == pytest.approx(expected, abs=1e-12)
    assert relative_log_amplitude(gaussian_noise((2, 3, h, w))).shape == (len(expected),)


@pytest.mark.parametrize(
    "h, w, hand_indices",
    [
        (4, 4, [(2, 2), (3, 3)]),
        (5, 5, [(2, 2), (3, 3), (4, 4)]),
        (8, 4, [(4, 2), (6, 3)]),
        (12, 8, [(6, 4), (9, 6)]),
    ],
)
def test_matches_hand_indexed_numpy_fft(h, w, hand_indices):
    x = gaussian_noise((3, 2, h, w), seed=1).numpy()
    log_amplitude = np.log(np.abs(np.fft.fft2(x)) + 1e-6)
    centred = np.fft.fftshift(log_amplitude.mean(axis=(0, 1)))
    expected = np.array([centred[i, j] for i, j in hand_indices])
    got = relative_log_amplitude(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, expected - expected[0], rtol=0, atol=1e-12)
    # The frequency labels agree with numpy's, in cycles per pixel, on both axes.
    fy = np.fft.fftshift(np.fft.fftfreq(h))
    fx = np.fft.fftshift(np.fft.fftfreq(w))
    labels = diagonal_frequencies(h, w).numpy()
    np.testing.assert_allclose([fy[i] for i, _ in hand_indices], labels / 2, atol=1e-12)
    np.testing.assert_allclose([fx[j] for _, j in hand_indices], labels / 2, atol=1e-12)


def test_zero_frequency_is_exactly_zero():
    for shape in [(2, 3, 8, 8), (1, 1, 7, 7), (4, 5, 16, 8), (2, 2, 3, 9)]:
        for dtype in (torch.float32, torch.float64):
            assert relative_log_amplitude(gaussian_noise(shape).to(dtype) * 5 + 2)[0].item() == 0.0


def test_half_precision_input_is_computed_in_float32():
    x = gaussian_noise((2, 3, 8, 8))
    out = relative_log_amplitude(x.to(torch.bfloat16))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, relative_log_amplitude(x.to(torch.bfloat16).float()))


def test_rejects_non_4d_input():
    with pytest.raises(UserError, match="4-D"):
        relative_log_amplitude(torch.zeros(3, 8, 8))
    with pytest.raises(UserError, match="positive"):
        diagonal_frequencies(0, 4)


# ---------------------------------------------------------------- known spectra


def test_constant_map_has_only_zero_frequency():
    c, h, w = 3.0, 8, 8
    delta_f = relative_log_amplitude(torch.full((2, 3, h, w), c, dtype=torch.float64))
    expected = math.log(LOG_EPS) - math.log(c * h * w + LOG_EPS)  # all other bins are exactly empty
    assert delta_f[0].item() == 0.0
    torch.testing.assert_close(delta_f[1:], torch.full_like(delta_f[1:], expected), atol=1e-5, rtol=0)


def test_white_noise_is_flat_at_half_log_two():
    # Non-zero bins of white noise are complex Gaussian, the zero bin is real Gaussian:
    # E log|X(w)| - E log|X(0)| = log(2) / 2 at every w > 0.
    delta_f = relative_log_amplitude(gaussian_noise((256, 16, 16, 16)))
    assert delta_f[1:].mean().item() == pytest.approx(math.log(2) / 2, abs=0.06)
    assert (delta_f[1:].max() - delta_f[1:].min()).item() < 0.08


@pytest.mark.parametrize("h, w", [(16, 16), (15, 15), (16, 8)])
def test_gaussian_blur_lowers_delta_f_by_its_transfer_function(h, w):
    # Blurring multiplies every bin by exp(-sigma^2 (wx^2 + wy^2) / 2) = exp(-sigma^2 w^2) on the diagonal,
    # so dF drops by exactly sigma^2 w^2 (w = pi * normalised frequency): this also checks the labels.
    sigma = 0.75  # keeps blurred bins far above the 1e-6 inside the log
    noise = gaussian_noise((16, 8, h, w), seed=2)
    white = relative_log_amplitude(noise)
    blurred = relative_log_amplitude(blur_in_fourier_domain(noise, sigma))
    omega = math.pi * diagonal_frequencies(h, w)
    torch.testing.assert_close(blurred - white, -(sigma**2) * omega**2, atol=1e-4, rtol=0)
    assert blurred[-1] < white[-1] - 1.0


def test_spatial_blur_lowers_high_frequencies():
    noise = gaussian_noise((16, 4, 16, 16), seed=3).float()
    kernel_1d = torch.exp(-torch.arange(-2.0, 3.0) ** 2 / 2)
    kernel = (kernel_1d[:, None] * kernel_1d[None, :] / kernel_1d.sum() ** 2).expand(4, 1, 5, 5)
    blurred = nn.functional.conv2d(noise, kernel, padding=2, groups=4)
    white, smooth = relative_log_amplitude(noise), relative_log_amplitude(blurred)
    assert (smooth[-3:] < white[-3:] - 1.0).all()


@pytest.mark.parametrize("h, w, k", [(16, 16, 1), (16, 16, 3), (16, 16, 7), (15, 15, 5), (16, 8, 2), (16, 8, 3)])
def test_diagonal_sinusoid_peaks_at_its_frequency(h, w, k):
    # cos(2 pi k/g (i + j)) has w_x = w_y = 2 pi k / g, i.e. normalised frequency 2k/g at diagonal index k.
    g = math.gcd(h, w)
    i = torch.arange(h, dtype=torch.float64)[:, None]
    j = torch.arange(w, dtype=torch.float64)[None, :]
    wave = torch.cos(2 * math.pi * k / g * (i + j) + 0.3).expand(2, 3, h, w)
    delta_f = relative_log_amplitude(wave)
    assert int(delta_f.argmax()) == k
    assert diagonal_frequencies(h, w)[k].item() == pytest.approx(2 * k / g)
    # |X| = h*w/2 at +-k; every other bin (zero frequency included) is empty up to rounding.
    spike = math.log(h * w / 2) - math.log(LOG_EPS)
    assert delta_f[k].item() == pytest.approx(spike, abs=1e-3)
    others = torch.cat([delta_f[:k], delta_f[k + 1 :]])
    torch.testing.assert_close(others, torch.zeros_like(others), atol=1e-3, rtol=0)


# ---------------------------------------------------------------- tiny models


def tiny_resnet():
    model = ResNet(BasicBlock, [1, 1, 1, 1], channels=(16, 32, 64, 128), stem_width=16, num_classes=10)
    model.conv1 = nn.Conv2d(3, model.bn1.num_features, 3, stride=1, padding=1, bias=False)  # CIFAR stem
    model.maxpool = nn.Identity()
    return model


def tiny_vit(**kw):
    return VisionTransformer(img_size=32, patch_size=4, embed_dim=32, depth=2, num_heads=2, num_classes=10, **kw)


def tiny_convit():
    return ConVit(img_size=32, patch_size=4, embed_dim=48, depth=3, num_heads=4, local_up_to_layer=2, num_classes=10)


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def intermediate_delta_fs(model, images, **kw):
    """Reference block outputs from timm's own forward_intermediates (prefix tokens stripped)."""
    model.eval()
    with torch.no_grad():
        maps = model.forward_intermediates(images, intermediates_only=True, **kw)
    return [relative_log_amplitude(m).tolist() for m in maps]


def test_resnet_blocks_and_curves(images):
    model = tiny_resnet()
    curves = fourier_curves(model, images)
    assert curves["names"] == ["stem", "layer1.0", "layer2.0", "layer3.0", "layer4.0"]
    assert curves["kinds"] == ["conv", "conv", "downsample", "downsample", "downsample"]
    assert curves["downsample"] == [False, False, True, True, True]
    assert curves["depth"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert curves["sizes"] == [[32, 32], [32, 32], [16, 16], [8, 8], [4, 4]]
    assert [len(f) for f in curves["freqs"]] == [16, 16, 8, 4, 2]
    assert [len(d) for d in curves["delta_f"]] == [16, 16, 8, 4, 2]
    assert curves["high_freq"] == [d[-1] for d in curves["delta_f"]]
    assert json.loads(json.dumps(curves)) == curves
    # timm's stem (act1) and stage outputs are the block outputs here (one block per stage, no max-pool).
    reference = intermediate_delta_fs(model, images)
    for got, want in zip(curves["delta_f"], reference, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize(
    "kw, prefix",
    [({}, 1), ({"reg_tokens": 2}, 3), ({"class_token": False, "global_pool": "avg"}, 0)],
)
def test_vit_drops_prefix_tokens(images, kw, prefix):
    model = tiny_vit(**kw)
    assert model.num_prefix_tokens == prefix
    curves = fourier_curves(model, images)
    assert curves["names"] == ["pos_embed", "blocks.0.attn", "blocks.0.mlp", "blocks.1.attn", "blocks.1.mlp"]
    assert curves["kinds"] == ["embed", "attention", "mlp", "attention", "mlp"]
    assert curves["downsample"] == [True, False, False, False, False]
    assert curves["sizes"] == [[8, 8]] * 5
    reference = intermediate_delta_fs(model, images)  # block outputs, prefix tokens stripped by timm
    for got, want in zip(curves["delta_f"][2::2], reference, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_vit_embedding_is_the_token_grid_after_the_position_embedding(images):
    model = tiny_vit().eval()
    with torch.no_grad():
        tokens = model.patch_embed(images) + model.pos_embed[:, model.num_prefix_tokens:]  # (B, 64, C), row-major
    grid = tokens.reshape(2, 8, 8, -1).permute(0, 3, 1, 2)
    # a direct reshape check: token r*8+c is pixel (r, c)
    assert torch.equal(grid[:, :, 2, 5], tokens[:, 2 * 8 + 5])
    got = fourier_curves(model, images)["delta_f"][0]
    np.testing.assert_allclose(got, relative_log_amplitude(grid).tolist(), atol=1e-5)


def test_vit_is_read_after_attention_and_after_the_mlp(images):
    """Park and Kim's granularity: the residual stream after attention is x + attn(norm1(x))."""
    model = tiny_vit().eval()
    block = model.blocks[1]
    seen = {}
    handle = block.register_forward_pre_hook(lambda m, inputs: seen.update(x=inputs[0]))
    curves = fourier_curves(model, images)
    handle.remove()
    with torch.no_grad():
        after_attention = seen["x"] + block.ls1(block.attn(block.norm1(seen["x"])))
    grid = after_attention[:, model.num_prefix_tokens:].reshape(2, 8, 8, -1).permute(0, 3, 1, 2)
    index = curves["names"].index("blocks.1.attn")
    np.testing.assert_allclose(curves["delta_f"][index], relative_log_amplitude(grid).tolist(), atol=1e-5)


def test_convit_class_token_detected_from_token_count(images):
    model = tiny_convit()
    token_counts = []
    handles = [b.register_forward_hook(lambda m, i, o: token_counts.append(o.shape[1])) for b in model.blocks]
    curves = fourier_curves(model, images)
    for handle in handles:
        handle.remove()
    assert token_counts == [64, 64, 65]  # class token joins before the first non-GPSA block
    assert curves["names"] == ["pos_embed"] + [f"blocks.{i}.{part}" for i in range(3) for part in ("attn", "mlp")]
    assert curves["kinds"] == ["embed"] + ["attention", "mlp"] * 3
    assert curves["sizes"] == [[8, 8]] * 7
    reference = intermediate_delta_fs(model, images)
    for got, want in zip(curves["delta_f"][2::2], reference, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_tokens_that_are_not_a_square_grid_raise():
    with pytest.raises(UserError, match="square"):
        _tokens_to_map(torch.zeros(2, 63, 8), prefix_tokens=1)
    with pytest.raises(UserError, match="square"):
        _tokens_to_map(torch.zeros(2, 66, 8), prefix_tokens=1, prefix_optional=True)
    assert _tokens_to_map(torch.zeros(2, 64, 8), prefix_tokens=1, prefix_optional=True).shape == (2, 8, 8, 8)


class FakeSwitchable(nn.Module):
    """Duck-typed stand-in for prs.reparam.ReparamConv2d: a conv with an `is_attention` flag."""

    def __init__(self, conv, is_attention):
        super().__init__()
        self.conv = conv
        self.is_attention = is_attention

    def forward(self, x):
        return self.conv(x)


def test_hybrid_block_kinds(images):
    model = tiny_resnet()
    model.layer1[0].conv1 = FakeSwitchable(model.layer1[0].conv1, True)
    model.layer1[0].conv2 = FakeSwitchable(model.layer1[0].conv2, True)  # all mixers attention
    model.layer2[0].conv2 = FakeSwitchable(model.layer2[0].conv2, False)  # switchable, still a conv
    model.layer3[0].conv2 = FakeSwitchable(model.layer3[0].conv2, True)  # stride-2 conv1 stays a conv
    model.layer4[0].conv1 = FakeSwitchable(model.layer4[0].conv1, True)
    model.layer4[0].conv2 = FakeSwitchable(model.layer4[0].conv2, True)
    blocks = feature_blocks(model)
    assert [(b.name, b.kind, b.downsample) for b in blocks] == [
        ("stem", "conv", False),
        ("layer1.0", "attention", False),
        ("layer2.0", "downsample", True),
        ("layer3.0", "mixed", True),
        ("layer4.0", "attention", True),
    ]
    assert fourier_curves(model, images)["kinds"] == [b.kind for b in blocks]


def test_imagenet_stem_is_a_downsampling_block():
    model = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=10)  # 7x7 stride-2 conv + max-pool
    assert feature_blocks(model)[0].kind == "downsample"


def test_mode_restored_hooks_removed_no_grad(images):
    model = tiny_resnet().train()
    model.layer2.eval()  # a mixed state must come back exactly
    before = [m.training for m in model.modules()]
    seen = []
    probe = model.layer3.register_forward_hook(lambda m, i, o: seen.append((m.training, torch.is_grad_enabled())))
    fourier_curves(model, images)
    probe.remove()
    assert seen == [(False, False)]  # ran in eval mode, without gradients
    assert [m.training for m in model.modules()] == before
    assert all(not m._forward_hooks for m in model.modules())


def test_mode_restored_hooks_removed_on_error():
    model = tiny_resnet().train()
    with pytest.raises(RuntimeError):
        fourier_curves(model, torch.zeros(1, 5, 32, 32))  # wrong channel count
    assert all(m.training for m in model.modules())
    assert all(not m._forward_hooks for m in model.modules())


def test_explicit_blocks_and_errors(images):
    model = tiny_resnet()
    subset = feature_blocks(model)[2:4]
    curves = fourier_curves(model, images, blocks=subset)
    assert curves["names"] == ["layer2.0", "layer3.0"] and curves["depth"] == [0.0, 1.0]
    stray = FeatureBlock("stray", nn.Conv2d(3, 3, 1), "conv")
    with pytest.raises(UserError, match="did not run"):
        fourier_curves(model, images, blocks=[stray])
    with pytest.raises(UserError, match="ResNet"):
        feature_blocks(nn.Sequential(nn.Conv2d(3, 3, 3)))
    with pytest.raises(UserError, match="empty"):
        fourier_curves(model, images, blocks=[])


# ---------------------------------------------------------------- every registered model

def expected_layout(name, model):
    """Names and sizes of the analysed blocks, from the model's structure (32x32 input)."""
    if prs.models.family(name) in ("resnet", "hybrid"):
        names, sizes = ["stem"], [[32, 32]]
        for stage in range(1, 5):
            side = 32 // 2 ** (stage - 1)  # CIFAR stem: stages at 32/16/8/4
            for index in range(len(getattr(model, f"layer{stage}"))):
                names.append(f"layer{stage}.{index}")
                sizes.append([side, side])
        return names, sizes
    names = ["pos_embed"] + [f"blocks.{i}.{part}" for i in range(len(model.blocks)) for part in ("attn", "mlp")]
    return names, [[8, 8]] * len(names)  # 32 px, patch 4


def expected_hybrid_kind(block):
    """By class, not by the duck typing prs.fourier uses: attention if every 3x3 mixer is switched."""
    spatial = [m for m in block.modules() if isinstance(m, ReparamConv2d)
               or (isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1))]
    switched = [m for m in spatial if isinstance(m, ReparamConv2d) and m.is_attention]
    return "attention" if len(switched) == len(spatial) else "mixed" if switched else None


@pytest.mark.parametrize("name", prs.models.names())
def test_curves_for_every_registered_model(name):
    model = prs.models.create(name, num_classes=10)
    curves = fourier_curves(model, torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    names, sizes = expected_layout(name, model)
    assert curves["names"] == names
    assert curves["sizes"] == sizes
    assert [len(f) for f in curves["freqs"]] == [h // 2 for h, _ in sizes]
    assert all(d[0] == 0.0 and all(math.isfinite(v) for v in d) for d in curves["delta_f"])
    family = prs.models.family(name)
    if family in ("vit", "convit"):
        assert curves["kinds"] == ["embed"] + ["attention", "mlp"] * (len(names) // 2)
    else:  # nothing switched yet: hybrids look like their ResNet
        assert set(curves["kinds"]) <= {"conv", "downsample"}
        assert curves["downsample"] == [k == "downsample" for k in curves["kinds"]]


@pytest.mark.parametrize("name", ["hybrid_tiny", "hybrid_resnet18"])
def test_switched_hybrid_kinds(name):
    model = prs.models.create(name, num_classes=10)
    switch_to_attention(model, switchable_layers(model))
    curves = fourier_curves(model, torch.randn(1, 3, 32, 32))
    modules = dict(model.named_modules())
    for block_name, kind, downsample in zip(curves["names"][1:], curves["kinds"][1:], curves["downsample"][1:]):
        expected = expected_hybrid_kind(modules[block_name])
        if expected is None:
            expected = "downsample" if downsample else "conv"
        assert kind == expected, block_name
    assert "attention" in curves["kinds"] or name == "hybrid_tiny"
    assert curves["kinds"].count("mixed") == 3  # stride-2 convs of stages 2-4 stay convolutions
