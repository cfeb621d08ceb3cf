"""Is a switched layer attention? Measurements of the mechanism, as plain numbers.

* `collapse_gap`: evaluate the model as it is and with every switched layer put back to the
  convolution it came from (same weights, `reparam.as_convolutions`). If training after the switch
  only kept the convolution, the two agree; the gap in loss and top-1, and how much the logits move,
  say how much the trained model relies on what attention added.
* `mechanism_record`: per switched layer, the gate (mean and per head), content fraction, localities,
  attention distances on a fixed batch, and how far the q/k projections have moved since the switch.
* `mechanism_series`: the per-epoch curves of a run's recorded diagnostics, for plots.

The training engine records the first two in every history row from the first switch on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from prs import reparam
from prs.distributed import sum_across_ranks
from prs.env import autocast


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
            (conv - logits).abs().mean(-1).sum(), logits.abs().mean(-1).sum(), torch.tensor(y.numel())]).double()

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
