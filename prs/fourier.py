"""Fourier analysis of feature maps (Park & Kim 2022, "How do vision transformers work?").

For a block output x (B, C, h, w):
  F = log(|FFT2(x)| + 1e-6) per sample and channel, zero frequency shifted to the centre,
  averaged over batch and channels, read along the diagonal from the centre outwards,
  and reported relative to zero frequency: dF(w) = F(w) - F(0).

Frequencies are "normalised": in units of pi radians per pixel, so 0 is the mean and 1 the
Nyquist frequency. Along the diagonal both axes have the same frequency, w_x = w_y = w.

Even sizes: after the shift, zero frequency sits at index n // 2 and the positive side holds
0, 2/n, ..., 1 - 2/n; the Nyquist bin (-pi) lies on the other side and is not used, so the
highest frequency is 1 - 2/n ("close to pi"), as in Park & Kim's code. Odd sizes reach 1 - 1/n.

Non-square maps (h != w): index steps (k, k) would mean different frequencies on the two axes,
so we keep only the bins where w_x == w_y exactly. With g = gcd(h, w) these are rows
h//2 + k*h/g and columns w//2 + k*w/g, at frequency 2k/g. Square maps give Park & Kim's diagonal;
a 16x8 map gives the frequencies of an 8x8 one; coprime sizes leave only zero frequency.

`feature_blocks` finds the blocks to analyse in each supported model family, and
`fourier_curves` runs a batch through the model with forward hooks and returns plain,
JSON-able data for `prs.plots`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import torch
from torch import nn
from timm.models.convit import ConVit
from timm.models.resnet import ResNet
from timm.models.vision_transformer import VisionTransformer

from prs.errors import UserError

LOG_EPS = 1e-6  # Park & Kim's epsilon inside the log

# Block kinds. A ResNet block is "attention" when all of its spatial mixers (3x3-like convs and
# switchable layers) are switched to attention, "mixed" when only some are.
KINDS = ("conv", "downsample", "attention", "mixed", "embed", "mlp")


# ---------------------------------------------------------------- spectra


def _diagonal_steps(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Row and column offsets from the centre along w_x == w_y, and g = gcd(h, w)."""
    if not (isinstance(h, int) and isinstance(w, int) and h >= 1 and w >= 1):
        raise UserError(f"feature map size ({h!r}, {w!r}) is invalid: height and width must be positive integers")
    g = math.gcd(h, w)
    row_step, col_step = h // g, w // g
    # last in-range index on the positive side is n - 1, the centre is n // 2
    k_max = min((h - 1 - h // 2) // row_step, (w - 1 - w // 2) // col_step)
    k = torch.arange(k_max + 1)
    return k * row_step, k * col_step, g


def diagonal_frequencies(h: int, w: int) -> torch.Tensor:
    """Normalised frequencies (units of pi, 0 .. <1) of the points `relative_log_amplitude` returns."""
    rows, _, g = _diagonal_steps(h, w)
    k = rows // (h // g)
    return 2.0 * k.double() / g


def relative_log_amplitude(x: torch.Tensor) -> torch.Tensor:
    """dF along the diagonal of the centred, batch- and channel-averaged log amplitude; dF[0] == 0."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise UserError(f"feature map has shape {shape}: expected a 4-D tensor (batch, channels, height, width)")
    if x.dtype != torch.float64:
        x = x.float()  # half/bfloat16 FFTs are limited and imprecise
    h, w = x.shape[-2:]
    log_amplitude = torch.log(torch.fft.fft2(x).abs() + LOG_EPS)
    centred = torch.fft.fftshift(log_amplitude, dim=(-2, -1)).mean(dim=(0, 1))
    row_offsets, col_offsets, _ = _diagonal_steps(int(h), int(w))
    diagonal = centred[h // 2 + row_offsets, w // 2 + col_offsets]
    return diagonal - diagonal[0]


# ---------------------------------------------------------------- blocks


def _as_map(x: torch.Tensor) -> torch.Tensor:
    if x.ndim != 4:
        raise UserError(f"block output has shape {tuple(x.shape)}: expected (batch, channels, height, width)")
    return x


def _tokens_to_map(x: torch.Tensor, prefix_tokens: int, prefix_optional: bool = False) -> torch.Tensor:
    """(B, prefix + N, C) tokens -> (B, C, sqrt N, sqrt N); timm's NHWC patch embeddings pass through.

    prefix_optional: the prefix tokens may be absent (ConViT joins its class token late); they are
    then dropped only when the token count is not already a square.
    """
    if x.ndim == 4:  # (B, H, W, C) from a dynamic-size timm patch embedding
        return x.permute(0, 3, 1, 2)
    if x.ndim != 3:
        raise UserError(f"block output has shape {tuple(x.shape)}: expected tokens (batch, tokens, channels)")
    tokens = x.shape[1]
    if prefix_optional and math.isqrt(tokens) ** 2 == tokens:
        prefix_tokens = 0
    patches = tokens - prefix_tokens
    side = math.isqrt(max(patches, 0))
    if patches <= 0 or side * side != patches:
        raise UserError(
            f"block output has {tokens} tokens ({prefix_tokens} prefix): the rest do not form a square "
            "grid; use square images whose size is a multiple of the patch size"
        )
    grid = x[:, prefix_tokens:]
    return grid.reshape(x.shape[0], side, side, x.shape[2]).permute(0, 3, 1, 2)


@dataclass
class FeatureBlock:
    """One point of the network whose features are analysed: the output of `module` (read="output")
    or its first input (read="input", e.g. the residual stream entering a block's second norm).
    `to_map` turns them into (B, C, h, w)."""

    name: str
    module: nn.Module = field(repr=False)
    kind: str
    downsample: bool = False  # reduces spatial resolution (also true for strided attention/mixed blocks)
    to_map: Callable[[torch.Tensor], torch.Tensor] = field(default=_as_map, repr=False)
    read: str = "output"


def _strided(module: nn.Module) -> bool:
    for m in module.modules():
        stride = getattr(m, "stride", 1)
        strides = stride if isinstance(stride, tuple) else (stride,)
        if any(isinstance(s, int) and s > 1 for s in strides):
            return True
    return False


def _conv_block_kind(module: nn.Module) -> str:
    """conv / downsample / attention / mixed, from the block's spatial mixers.

    Switchable layers are found by duck typing (any submodule with `is_attention`); plain convs
    inside them are part of the switchable layer, not separate mixers. 1x1 convs do not mix space.
    """
    switchable = {name: m for name, m in module.named_modules() if hasattr(m, "is_attention")}
    plain_spatial = 0
    for name, m in module.named_modules():
        inside_switchable = any(name.startswith(prefix + ".") for prefix in switchable)
        if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1) and not inside_switchable and name not in switchable:
            plain_spatial += 1
    attention = sum(bool(m.is_attention) for m in switchable.values())
    if attention == 0:
        return "downsample" if _strided(module) else "conv"
    return "attention" if attention == plain_spatial + len(switchable) else "mixed"


def _resnet_blocks(model: ResNet) -> list[FeatureBlock]:
    # The stem output is the output of the max-pool (nn.Identity in the CIFAR stem).
    stem = nn.ModuleList([model.conv1, model.bn1, model.act1, model.maxpool])
    blocks = [FeatureBlock("stem", model.maxpool, "downsample" if _strided(stem) else "conv", _strided(stem))]
    for stage in ("layer1", "layer2", "layer3", "layer4"):
        for index, block in enumerate(getattr(model, stage)):
            kind = _conv_block_kind(block)
            blocks.append(FeatureBlock(f"{stage}.{index}", block, kind, _strided(block)))
    return blocks


def _transformer_blocks(model: nn.Module, to_map: Callable) -> list[FeatureBlock]:
    """Park and Kim's granularity: the patch tokens after the position embedding (the input of the
    first block), then in every block the residual stream after attention (the input of its second
    norm, `norm2`) and after the MLP (the block's output)."""
    blocks = [FeatureBlock("pos_embed", model.blocks[0], "embed", _strided(model.patch_embed), to_map, "input")]
    for index, block in enumerate(model.blocks):
        blocks.append(FeatureBlock(f"blocks.{index}.attn", block.norm2, "attention", False, to_map, "input"))
        blocks.append(FeatureBlock(f"blocks.{index}.mlp", block, "mlp", False, to_map))
    return blocks


def _vit_blocks(model: VisionTransformer) -> list[FeatureBlock]:
    return _transformer_blocks(model, partial(_tokens_to_map, prefix_tokens=model.num_prefix_tokens))


def _convit_blocks(model: ConVit) -> list[FeatureBlock]:
    # The class token is joined only before the first non-GPSA block: detect it from the token count.
    prefix = getattr(model, "num_prefix_tokens", 1)  # older timm ConVit: always one class token
    return _transformer_blocks(model, partial(_tokens_to_map, prefix_tokens=prefix, prefix_optional=True))


def feature_blocks(model: nn.Module) -> list[FeatureBlock]:
    """The blocks Park & Kim analyse, in forward order: a ResNet's stem and every block; a ViT's or
    ConViT's tokens after the position embedding, then after attention and after the MLP of every block."""
    if isinstance(model, ConVit):
        return _convit_blocks(model)
    if isinstance(model, VisionTransformer):
        return _vit_blocks(model)
    if isinstance(model, ResNet):
        return _resnet_blocks(model)
    raise UserError(
        f"model type {type(model).__name__} has no Fourier block layout: supported are timm ResNet "
        "(incl. hybrids), VisionTransformer and ConVit; pass blocks=[FeatureBlock(...)] explicitly"
    )


# ---------------------------------------------------------------- curves


def fourier_curves(model: nn.Module, images: torch.Tensor, blocks: list[FeatureBlock] | None = None) -> dict:
    """Relative log amplitude of every block's output for one batch, as JSON-able lists.

    Runs in eval mode without gradients; restores every module's training flag and removes the
    hooks afterwards, also on error. Images are moved to the model's device.
    """
    blocks = feature_blocks(model) if blocks is None else list(blocks)
    if not blocks:
        raise UserError("blocks is empty: pass at least one FeatureBlock, or None for the model's default blocks")
    results: list[tuple[torch.Tensor, tuple[int, int]] | None] = [None] * len(blocks)

    def hook(index: int, module: nn.Module, inputs, output=None) -> None:
        if results[index] is not None:
            raise UserError(f"block {blocks[index].name} ran twice in one forward pass: its output is ambiguous")
        feature_map = blocks[index].to_map(inputs[0] if blocks[index].read == "input" else output)
        results[index] = (relative_log_amplitude(feature_map).cpu(), tuple(feature_map.shape[-2:]))

    training_flags = [(m, m.training) for m in model.modules()]
    handles = []
    try:
        for index, block in enumerate(blocks):
            register = (block.module.register_forward_pre_hook if block.read == "input"
                        else block.module.register_forward_hook)
            handles.append(register(partial(hook, index)))
        model.eval()
        parameter = next(model.parameters(), None)
        if parameter is not None:
            images = images.to(parameter.device)
        with torch.no_grad():
            model(images)
    finally:
        for handle in handles:
            handle.remove()
        for module, flag in training_flags:
            module.training = flag

    missing = [b.name for b, r in zip(blocks, results) if r is None]
    if missing:
        raise UserError(f"blocks {missing} did not run in the forward pass: they are not part of this model")
    last = max(len(blocks) - 1, 1)
    return {
        "names": [b.name for b in blocks],
        "kinds": [b.kind for b in blocks],
        "downsample": [b.downsample for b in blocks],
        "depth": [i / last for i in range(len(blocks))],
        "freqs": [diagonal_frequencies(*size).tolist() for _, size in results],
        "delta_f": [delta_f.tolist() for delta_f, _ in results],
        "high_freq": [delta_f[-1].item() for delta_f, _ in results],
        "sizes": [list(size) for _, size in results],
    }
