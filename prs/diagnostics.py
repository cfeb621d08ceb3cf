"""Is a switched layer attention? Measurements of the mechanism, as plain numbers.

* `collapse_gap`: evaluate the model as it is and with every switched layer put back to the
  convolution it came from (same weights, `reparam.as_convolutions`). If training after the switch
  only kept the convolution, the two agree; the gap in loss and top-1, and how much the logits move,
  say how much the trained model relies on what attention added.
* `mechanism_record`: per switched layer, the gate (mean and per head), content fraction, localities,
  attention distances on a fixed batch, and how far the q/k projections have moved since the switch.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn

from prs import reparam


def _autocast(device: torch.device, amp_dtype):
    return torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()


@torch.no_grad()
def collapse_gap(model: nn.Module, loader, device: torch.device, amp_dtype=None) -> dict:
    """Test loss and top-1 of the model and of its collapsed twin (switched layers back to convs).

    Returns {"loss", "top1", "loss_conv", "top1_conv", "loss_gap" (conv - model), "top1_gap"
    (model - conv), "logit_change" (mean |logits_conv - logits| / mean |logits|), "agreement"
    (fraction of images with the same top-1 prediction)}. Sums over ranks are the caller's business:
    this is for one process (the diagnostics run on rank 0).
    """
    model.eval()
    sums = {"loss": 0.0, "top1": 0.0, "loss_conv": 0.0, "top1_conv": 0.0, "abs_change": 0.0, "abs_logits": 0.0,
            "agree": 0.0}
    total = 0
    with _autocast(device, amp_dtype):
        for x, y in loader:
            logits = model(x).float()
            with reparam.as_convolutions(model):
                conv = model(x).float()
            n = y.numel()
            sums["loss"] += F.cross_entropy(logits, y, reduction="sum").item()
            sums["loss_conv"] += F.cross_entropy(conv, y, reduction="sum").item()
            sums["top1"] += (logits.argmax(-1) == y).sum().item()
            sums["top1_conv"] += (conv.argmax(-1) == y).sum().item()
            sums["agree"] += (logits.argmax(-1) == conv.argmax(-1)).sum().item()
            sums["abs_change"] += (conv - logits).abs().mean(-1).sum().item()
            sums["abs_logits"] += logits.abs().mean(-1).sum().item()
            total += n
    out = {"loss": sums["loss"] / total, "top1": 100 * sums["top1"] / total,
           "loss_conv": sums["loss_conv"] / total, "top1_conv": 100 * sums["top1_conv"] / total,
           "agreement": sums["agree"] / total,
           "logit_change": sums["abs_change"] / max(sums["abs_logits"], 1e-30)}
    out["loss_gap"] = out["loss_conv"] - out["loss"]
    out["top1_gap"] = out["top1"] - out["top1_conv"]
    return out


def qk_snapshot(model: nn.Module, names) -> dict[str, torch.Tensor]:
    """Copies of the named switchable layers' q/k weights (taken at their switch)."""
    layers = dict(model.named_modules())
    return {name: layers[name].qk.weight.detach().float().cpu().clone() for name in names}


@torch.no_grad()
def mechanism_record(model: nn.Module, probe: torch.Tensor | None = None,
                     qk_at_switch: dict[str, torch.Tensor] | None = None) -> list[dict]:
    """`reparam.layer_diagnostics` rows of the switched layers, each with "qk_moved": the RMS change
    of the q/k weights since the switch relative to their RMS at the switch (None without a snapshot)."""
    rows = [r for r in reparam.layer_diagnostics(model, inputs=probe) if r["is_attention"]]
    layers = dict(model.named_modules())
    for row in rows:
        ref = (qk_at_switch or {}).get(row["name"])
        if ref is None:
            row["qk_moved"] = None
            continue
        now = layers[row["name"]].qk.weight.detach().float().cpu()
        row["qk_moved"] = ((now - ref).norm() / ref.norm().clamp_min(1e-12)).item()
    return rows
