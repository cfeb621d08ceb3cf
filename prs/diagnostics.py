"""Is a switched layer attention? Measurements of the mechanism, as plain numbers.

* `collapse_gap`: evaluate the model as it is and with every switched layer put back to the
  convolution it came from (same weights, `reparam.as_convolutions`). If training after the switch
  only kept the convolution, the two agree; the gap in loss and top-1, and how much the logits move,
  say how much the trained model relies on what attention added.
* `layer_diagnostics`: per switchable layer, plain numbers: mode and form, gate, content fraction,
  localities and the mean distance in pixels between a query and what it attends to.
* `mechanism_record`: per switched layer, the gate (mean and per head), content fraction, localities,
  attention distances on a fixed batch, and how far the q/k projections have moved since the switch.
* `mechanism_series`: the per-epoch curves of a run's recorded diagnostics, for plots.

The training engine records `collapse_gap` and `mechanism_record` in every history row from the first
switch on.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from prs import reparam
from prs.distributed import sum_across_ranks
from prs.env import autocast
from prs.errors import UserError


class CollapseGap:
    """Accumulates, batch by batch, the model's logits against its collapsed twin's (every switched
    layer back to its convolution) and the labels; `result()` sums over the ranks of a distributed run."""

    def __init__(self, device: torch.device):
        # loss, loss_conv, top1, top1_conv, agree, |conv - logits|, |logits|, images
        self.sums = torch.zeros(8, device=device, dtype=torch.float64)

    @torch.no_grad()
    def update(self, logits: torch.Tensor, conv: torch.Tensor, y: torch.Tensor) -> None:
        logits, conv = logits.float(), conv.float()
        pred, pred_conv = logits.argmax(-1), conv.argmax(-1)
        self.sums += torch.stack([
            F.cross_entropy(logits, y, reduction="sum"), F.cross_entropy(conv, y, reduction="sum"),
            (pred == y).sum(), (pred_conv == y).sum(), (pred == pred_conv).sum(),
            (conv - logits).abs().mean(-1).sum(), logits.abs().mean(-1).sum(), logits.new_tensor(y.numel())]).double()  # all on the logits' device

    def result(self) -> dict:
        """{"loss", "top1", "loss_conv", "top1_conv", "loss_gap" (conv - model), "top1_gap" (model - conv),
        "logit_change" (mean |logits_conv - logits| / mean |logits|), "agreement" (same top-1 prediction)}."""
        loss, loss_conv, top1, top1_conv, agree, change, size, n = (v.item() for v in sum_across_ranks(*self.sums))
        out = {"loss": loss / n, "top1": 100 * top1 / n, "loss_conv": loss_conv / n, "top1_conv": 100 * top1_conv / n,
               "agreement": agree / n, "logit_change": change / max(size, 1e-30)}
        out["loss_gap"] = out["loss_conv"] - out["loss"]
        out["top1_gap"] = out["top1"] - out["top1_conv"]
        return out


@torch.no_grad()
def collapse_gap(model: nn.Module, loader, device: torch.device, amp_dtype=None) -> dict:
    """Test loss and top-1 of the model and of its collapsed twin (see `CollapseGap.result`)."""
    model.eval()
    gap = CollapseGap(device)
    with autocast(device, amp_dtype):
        for x, y in loader:
            logits = model(x)
            with reparam.as_convolutions(model):
                gap.update(logits, model(x), y)
    return gap.result()


def _forward_eval(model: nn.Module, inputs: torch.Tensor, hooks) -> None:
    """One forward pass of `model` in eval mode on `inputs` (for what its `hooks` capture); then the
    model's training mode is restored and the hooks removed, whatever happened."""
    was_training = model.training
    try:
        model.eval()
        model(inputs)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()


@torch.no_grad()
def layer_diagnostics(model: nn.Module, image_size: tuple[int, int] | None = None,
                      inputs: torch.Tensor | None = None) -> list[dict]:
    """Per switchable layer, plain numbers: mode and form; the gate g (mean and per head: the weight
    of positional attention); the content fraction 1 - g; the locality alpha of the positional
    attention ("sigmoid") and of the content bias; the mean distance in pixels between a query and
    what it attends to, for positional, content and mixed attention.

    `inputs`, if given, is a batch for the model: content attention is then measured on it (hooks
    capture each layer's input); otherwise only positional terms are reported.
    """
    captured: dict[str, torch.Tensor] = {}
    hooks = []
    if inputs is not None:
        for name, m in model.named_modules():
            if isinstance(m, reparam.ReparamConv2d) and m.is_attention:
                hooks.append(m.register_forward_hook(lambda mod, inp, out, n=name: captured.__setitem__(n, inp[0])))
        _forward_eval(model, inputs, hooks)
    rows = []
    for name, m in model.named_modules():
        if isinstance(m, reparam.ReparamConv2d):
            rows.append(layer_row(name, m, captured.get(name), image_size))
    return rows


def layer_row(name: str, m: reparam.ReparamConv2d, x: torch.Tensor | None, image_size=None) -> dict:
    """`layer_diagnostics`' row of one layer; `x`, if given, is the layer's input (content attention is
    measured on it), else only positional terms are, on an `image_size` (default 8x8) map."""
    row = {"name": name, "is_attention": m.is_attention, "form": m.form if m.is_attention else None,
           "gate": None, "gate_per_head": None, "content_fraction": None, "content_weight_abs": None,
           "positional_fraction": None,
           "locality": None, "content_locality": None, "positional_distance": None, "content_distance": None,
           "attention_distance": None}
    if not m.is_attention:
        return row
    gate = m.gate_values().float()
    row.update(gate=gate.mean().item(), gate_per_head=[round(v, 6) for v in gate.tolist()],
               content_fraction=(1 - gate).mean().item(), positional_fraction=gate.mean().item(),
               content_weight_abs=(1 - gate).abs().mean().item())  # differs from the fraction for free gates
    if m.form == "sigmoid":
        row["locality"] = (-m.pos_weight[:, 2].float()).mean().item()
    if m.has_content_bias:
        row["content_locality"] = (-m.content_pos_weight[:, 2].float()).mean().item()
    h, w = x.shape[-2:] if x is not None else (image_size or (8, 8))
    device = m.weight.device
    dist = pixel_distances(h, w, device)
    pos_dist = (m.positional_attention(h, w).float() * dist).sum(-1).mean(-1)  # (heads,)
    row["positional_distance"] = pos_dist.mean().item()
    row["attention_distance"] = row["positional_distance"]
    if x is not None:
        con_dist = (m.content_attention(x).float() * dist).sum(-1).mean(dim=(0, 2))  # (heads,)
        row["content_distance"] = con_dist.mean().item()
        row["attention_distance"] = (gate * pos_dist + (1 - gate) * con_dist).mean().item()
    return row


def pixel_distances(h: int, w: int, device=None) -> torch.Tensor:
    """(N, N) Euclidean distances between the pixels of an h x w map (row-major)."""
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    pos = torch.stack([yy.flatten(), xx.flatten()], dim=1).float().to(device)
    return torch.cdist(pos, pos)


def qk_snapshot(model: nn.Module, names) -> dict[str, torch.Tensor]:
    """Copies of the named switchable layers' q/k weights (taken at their switch)."""
    layers = dict(model.named_modules())
    return {name: layers[name].qk.weight.detach().float().cpu().clone() for name in names}


@torch.no_grad()
def mechanism_record(model: nn.Module, probe: torch.Tensor | None = None,
                     qk_at_switch: dict[str, torch.Tensor] | None = None) -> list[dict]:
    """`layer_diagnostics` rows of the switched layers, each with "qk_moved": the RMS change
    of the q/k weights since the switch relative to their RMS at the switch (None without a snapshot)."""
    rows = [r for r in layer_diagnostics(model, inputs=probe) if r["is_attention"]]
    layers = dict(model.named_modules())
    for row in rows:
        ref = (qk_at_switch or {}).get(row["name"])
        if ref is None:
            row["qk_moved"] = None
            continue
        now = layers[row["name"]].qk.weight.detach().float().cpu()
        row["qk_moved"] = ((now - ref).norm() / ref.norm().clamp_min(1e-12)).item()
    return rows


MECHANISM_SERIES = ("top1_gap", "logit_change", "gate", "content_distance", "qk_moved")


def mechanism_series(history) -> dict[str, list]:
    """Per-epoch series from a run's history rows, over the epochs after the first switch:
    "epoch"; the collapse gap's "top1_gap" and "logit_change"; and, as means over the switched
    layers, "gate", "content_distance" (pixels, on the probe images) and "qk_moved"."""
    series = {key: [] for key in ("epoch", *MECHANISM_SERIES)}
    for row in history:
        if "mechanism" not in row:
            continue
        layers = row["mechanism"]
        series["epoch"].append(row["epoch"])
        series["top1_gap"].append(row["collapse"]["top1_gap"])
        series["logit_change"].append(row["collapse"]["logit_change"])
        for key in ("gate", "content_distance", "qk_moved"):
            values = [layer[key] for layer in layers if layer.get(key) is not None]
            series[key].append(sum(values) / len(values) if values else None)
    return series


# ----------------------------------------------------------------------------- convolution-likeness


def _tap_mass(kernel_size: int, h: int, w: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per tap of a KxK convolution on an h x w map (in `reparam`'s tap order): how many queries have
    that tap inside the image (zero padding adds nothing), and the tap's distance. O(K^2), so that
    large maps cost nothing (the dense one-hot maps would be K^2 N^2)."""
    r = torch.arange(kernel_size, device=device, dtype=torch.float64) - kernel_size // 2
    dy, dx = r.repeat_interleave(kernel_size), r.repeat(kernel_size)
    count = (h - dy.abs()).clamp(min=0) * (w - dx.abs()).clamp(min=0)
    return count, torch.hypot(dy, dx)


def _reach(module: nn.Module, x: torch.Tensor) -> float:
    """How far a convolution or a switchable layer reaches on its input x, in x's pixels (mass-weighted
    over queries): a convolution reaches its taps inside the image; a switched layer the gated mix of
    its taps (or the sigmoid form's positional attention) and its content attention, over the batch."""
    h, w = x.shape[-2:]
    kernel = module.kernel_size if isinstance(module, reparam.ReparamConv2d) else module.kernel_size[0]
    count, distance = _tap_mass(kernel, h, w, x.device)
    if not (isinstance(module, reparam.ReparamConv2d) and module.is_attention):
        return ((count * distance).sum() / count.sum()).item()
    gate = module.gate_values().double()
    pixels = pixel_distances(h, w, x.device).double()
    content = (module.content_attention(x).double().mean(0) * pixels).sum(dim=(-1, -2))  # per head; rows sum to 1
    if module.form == "linear":
        tap_sum, tap_mass = count * distance, count
    else:
        positional = module.positional_attention(h, w).double()
        tap_sum, tap_mass = (positional * pixels).sum(dim=(-1, -2)), positional.sum(dim=(-1, -2))
    total = gate * tap_sum + (1 - gate) * content
    mass = gate * tap_mass + (1 - gate) * h * w
    return (total.sum() / mass.sum()).item()


def _token_distance(attention: torch.Tensor, prefix: int) -> float:
    """Mean distance in tokens over a (B, heads, N, N) attention map, patch queries to patch keys
    (`prefix` class tokens left out; each row renormalised over the patch keys)."""
    patches = attention[..., prefix:, prefix:].float()
    patches = patches / patches.sum(-1, keepdim=True).clamp_min(1e-12)
    side = math.isqrt(patches.shape[-1])
    return (patches * pixel_distances(side, side, patches.device)).sum(-1).mean().item()


def _vit_attention(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, heads, N, N) of a timm ViT `Attention` or ConViT MHSA on its input tokens."""
    b, n, _ = x.shape
    q, k, _ = module.qkv(x).reshape(b, n, 3, module.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k = getattr(module, "q_norm", nn.Identity())(q), getattr(module, "k_norm", nn.Identity())(k)
    return (q @ k.transpose(-2, -1) * module.scale).softmax(-1)


def _gpsa_attention(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, heads, N, N) of a ConViT GPSA: its gated mix of content and positional attention."""
    b, n, c = x.shape
    q, k = module.qk(x).reshape(b, n, 2, module.num_heads, c // module.num_heads).permute(2, 0, 3, 1, 4)
    content = (q @ k.transpose(-2, -1) * module.scale).softmax(-1)
    rel = module.get_rel_indices(n)[0]
    positional = module.pos_proj(rel).permute(2, 0, 1).softmax(-1)
    gate = torch.sigmoid(module.gating_param).view(1, -1, 1, 1)
    return (1 - gate) * content + gate * positional


@torch.no_grad()
def mean_attention_distance_px(model: nn.Module, images: torch.Tensor) -> float:
    """How far, in input pixels, the model's spatial-mixing layers reach on `images`: the mean over
    layers of each layer's mass-weighted mean distance from a query to what it mixes in, scaled by
    the input pixels per pixel (or token) of that layer. A KxK convolution reaches its taps inside
    the image (about 1.07 of its own pixels for 3x3 on a large map); attention reaches where its
    attention mass lies (class tokens left out); a switched layer mixes both by its gate, so at
    the switch it reaches exactly as far as its convolution did. Patchifying convolutions (kernel =
    stride) and 1x1 convolutions do not mix space and are left out. Smaller = more convolution-like.
    """
    from timm.models.convit import GPSA, MHSA
    from timm.models.vision_transformer import Attention

    image_size = images.shape[-1]
    distances: list[float] = []
    hooks = []

    def measure(module, inputs, _output):
        x = inputs[0]
        if isinstance(module, (reparam.ReparamConv2d, nn.Conv2d)):
            distances.append(_reach(module, x) * image_size / x.shape[-1])
        else:
            attention = _gpsa_attention(module, x) if isinstance(module, GPSA) else _vit_attention(module, x)
            prefix = x.shape[1] - math.isqrt(x.shape[1]) ** 2  # class tokens ahead of the square grid of patches
            distances.append(_token_distance(attention, prefix) * image_size / math.isqrt(x.shape[1] - prefix))

    for module in model.modules():
        mixing_conv = (isinstance(module, nn.Conv2d) and module.kernel_size[0] > 1
                       and module.kernel_size != module.stride)
        if isinstance(module, (reparam.ReparamConv2d, Attention, GPSA, MHSA)) or mixing_conv:
            hooks.append(module.register_forward_hook(measure))
    _forward_eval(model, images, hooks)
    if not distances:
        raise UserError(f"{type(model).__name__} has no spatial-mixing layer to measure")
    return sum(distances) / len(distances)
