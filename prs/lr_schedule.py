"""The learning-rate schedule, stepped every optimizer step: timm's cosine or multi-step schedulers,
or, with `train.lr_restart_at_switch`, `RestartingCosine`, a cosine that warms up again and restarts
at every switch (the ablation of the late-switch confound).
"""

from __future__ import annotations

import math

from prs.config import TrainConfig


def build_lr_scheduler(optimizer, t: TrainConfig, steps_per_epoch: int, switch_epochs=()):
    """timm's schedulers, updated every step; with `train.lr_restart_at_switch`, a cosine that
    restarts at every epoch in `switch_epochs` (`RestartingCosine`)."""
    from timm.scheduler import CosineLRScheduler, MultiStepLRScheduler

    if t.lr_restart_at_switch:
        return RestartingCosine(optimizer, t, steps_per_epoch, switch_epochs)

    warmup = int(round(t.warmup_epochs * steps_per_epoch))
    if t.lr_schedule == "cosine":
        return CosineLRScheduler(optimizer, t_initial=t.epochs * steps_per_epoch, warmup_t=warmup,
                                 warmup_lr_init=t.lr * 1e-3 if warmup else 0.0, warmup_prefix=True,
                                 lr_min=0.0, t_in_epochs=False)
    return MultiStepLRScheduler(optimizer, decay_t=[m * steps_per_epoch for m in t.milestones], decay_rate=t.gamma,
                                warmup_t=warmup, warmup_lr_init=t.lr * 1e-3 if warmup else 0.0, t_in_epochs=False)


class RestartingCosine:
    """Cosine learning rate that restarts, after a linear warm-up, at given epochs (the switches).

    Between restart points r_0 = 0 < r_1 < ... the rate warms up linearly from lr * 1e-3 to lr over
    the first `warmup` steps after r_k (after r_0 the config's warm-up), then follows a cosine from lr
    to 0 at the end of training. The rate is a function of the step alone, so a resumed run needs
    no state. Each group's rate is scaled by its `lr_scale`, as timm's schedulers do.
    """

    def __init__(self, optimizer, t: TrainConfig, steps_per_epoch: int, restart_epochs):
        self.optimizer = optimizer
        self.total = t.epochs * steps_per_epoch
        self.starts = [0] + sorted({e * steps_per_epoch for e in restart_epochs if e is not None and 0 < e < t.epochs})
        self.first_warmup = int(round(t.warmup_epochs * steps_per_epoch))
        self.warmup = int(round(t.restart_warmup_epochs * steps_per_epoch))
        self.base_lr = t.lr
        self.step_update(0)

    def factor(self, step: int) -> float:
        start = max(s for s in self.starts if s <= step)
        warmup = self.first_warmup if start == 0 else self.warmup
        if step - start < warmup:
            return 1e-3 + (1 - 1e-3) * (step - start) / warmup
        span = max(self.total - start - warmup, 1)
        return 0.5 * (1 + math.cos(math.pi * min(step - start - warmup, span) / span))

    def step_update(self, num_updates: int) -> None:
        lr = self.base_lr * self.factor(num_updates)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
