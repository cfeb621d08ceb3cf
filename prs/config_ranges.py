"""The meaningful range of every numeric config field, one `Range` row per field.

`prs.config` checks each field of a config against its row (a value outside is a `UserError` that
quotes the row); `ranges_markdown` prints the table for the docs (book/decisions.md).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Range:
    """The meaningful values of a numeric field: low/high are numbers, another field's name
    (e.g. "train.epochs") or None (unbounded); `why` says what the field is, for messages and docs."""

    low: float | str | None
    high: float | str | None
    why: str
    low_open: bool = False
    high_open: bool = False

    def contains(self, value, field_value=lambda name: None) -> bool:
        low = field_value(self.low) if isinstance(self.low, str) else self.low
        high = field_value(self.high) if isinstance(self.high, str) else self.high
        if low is not None and (value <= low if self.low_open else value < low):
            return False
        return high is None or (value < high if self.high_open else value <= high)

    def text(self) -> str:
        if self.low is None and self.high is None:
            return "any finite number"
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low}"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {self.high}"
        return f"in {'(' if self.low_open else '['}{self.low}, {self.high}{')' if self.high_open else ']'}"


MAX_SEED = 2**32 - 1
# One row per numeric field (list fields: per item): what the validation checks and the docs show
# (`ranges_markdown`). A new numeric field needs a row here (tests/test_config.py checks that).
RANGES = {
    "model.drop_path": Range(0, 1, "stochastic-depth probability", high_open=True),
    "data.ratio": Range(0, 1, "fraction of the training set kept", low_open=True),
    "data.subset_seed": Range(0, MAX_SEED, "seed of the data-ratio subset"),
    "data.num_workers": Range(0, 256, "loader worker processes"),
    "data.image_size": Range(8, 1024, "side of the square input image, pixels"),
    "data.augment.crop_padding": Range(0, "data.image_size", "random-crop padding, pixels", high_open=True),
    "data.augment.mixup": Range(0, None, "Mixup Beta(alpha, alpha); 0 = off"),
    "data.augment.cutmix": Range(0, None, "CutMix Beta(alpha, alpha); 0 = off"),
    "data.augment.label_smoothing": Range(0, 1, "label-smoothing mass", high_open=True),
    "train.epochs": Range(0, None, "epochs of training", low_open=True),
    "train.batch_size": Range(0, None, "global training batch", low_open=True),
    "train.eval_batch_size": Range(0, None, "evaluation batch", low_open=True),
    "train.lr": Range(0, None, "peak learning rate", low_open=True),
    "train.weight_decay": Range(0, None, "decoupled (AdamW) or L2 (SGD) weight decay"),
    "train.momentum": Range(0, 1, "SGD momentum", high_open=True),
    "train.warmup_epochs": Range(0, "train.epochs", "linear warm-up, epochs", high_open=True),
    "train.milestones": Range(0, None, "step-schedule epochs, each", low_open=True),
    "train.gamma": Range(0, 1, "step-schedule LR factor", low_open=True),
    "train.grad_clip": Range(0, None, "gradient-norm clip; null = off", low_open=True),
    "train.seed": Range(0, MAX_SEED, "training seed"),
    "train.restart_warmup_epochs": Range(0, None, "warm-up at each switch when lr_restart_at_switch, epochs"),
    "switch.gate_logit": Range(None, None, "sigmoid form: gate logit at the switch"),
    "switch.locality": Range(0, None, "sigmoid form: locality strength at the switch", low_open=True),
    "switch.content_locality": Range(0, None, "relative-position bump in the content logits at the switch; "
                                              "null = no bias"),
    "switch.gate_lr_scale": Range(0, None, "LR multiplier of gates and positional weights", low_open=True),
    "switch.qk_lr_scale": Range(0, None, "LR multiplier of the switchable layers' q/k", low_open=True),
}
# Numeric fields checked elsewhere, with where.
RANGES_ELSEWHERE = {"model.switchable_stages": "the model registry: each in 1, 2, 3, 4",
                    "schedule": "ScheduleSpec.within: every switch epoch in 0 .. train.epochs - 1"}


def ranges_markdown() -> str:
    """The RANGES table as Markdown (book/decisions.md holds a copy; a test keeps them equal)."""
    rows = ["| field | meaningful values | what it is |", "|---|---|---|"]
    rows += [f"| `{key}` | `{r.text()}` | {r.why} |" for key, r in RANGES.items()]
    return "\n".join(rows) + "\n"
