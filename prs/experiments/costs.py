"""What each entry of a results table costs: parameters, training FLOPs per image (forward +
backward, counted by PyTorch, with the layers switched as they were at the end of the run),
measured images per second and training hours, so that comparisons can be read against size and
compute (the switched hybrid has more parameters and FLOPs than ResNet-18)."""

from __future__ import annotations

from functools import lru_cache
from typing import Mapping, Sequence


@lru_cache(maxsize=None)
def train_flops_per_image(model: str, switchable_stages: tuple[int, ...] | None = None,
                          attention_layers: tuple[str, ...] = ()) -> float:
    """Forward + backward FLOPs per 32x32 image of a registered model (100 classes) with
    `attention_layers` switched to attention; counted on the CPU with a batch of 2."""
    import torch

    from prs import models, reparam
    from prs.bench import flops_per_image

    stages = {} if switchable_stages is None else {"switchable_stages": list(switchable_stages)}
    net = models.use_fused_attention(models.create(model, num_classes=100, **stages))
    if attention_layers:
        reparam.switch_to_attention(net, list(attention_layers))
    return flops_per_image(net.train(), torch.device("cpu"), batch=2)


def cost_columns(rows: Sequence[Mapping]) -> dict:
    """For the rows of one entry (one per seed): parameters (millions), training GFLOP per image at
    the end of the run, mean measured images/s, and training hours summed over the seeds."""
    first = rows[0]
    stages = first.get("switchable_stages")
    flops = train_flops_per_image(first["model"], tuple(stages) if stages else None,
                                  tuple(first.get("attention_layers") or ()))
    return {"params_m": first["parameters"] / 1e6 if first.get("parameters") else None,
            "gflops": flops / 1e9,
            "img_per_s": sum(r["img_per_s"] for r in rows) / len(rows),
            "train_hours": sum(r["wall_time_s"] for r in rows) / 3600}
