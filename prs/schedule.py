"""Per-layer switch schedules: at which epoch each switchable layer becomes attention.

A schedule is plain data. `create({"name": "prs", "first": 8, "last": 2}, epochs=10)`
validates the spec against the run's length; `.switch_epochs(layer_names)` maps each layer
(in depth order) to the epoch *before which* it is switched, or None for never. Epoch 0
means attention from the start; a layer switched at epoch E trained E epochs as a conv.

- never              pure CNN
- uniform(epoch)     every layer at the same epoch (T-CNN-style single switch; the
                     interpolation experiment varies it)
- prs(first, last)   linear in depth: the shallowest layer at `first`, the deepest at
                     `last` <= first, so later layers switch earlier ("linearly faster
                     at the late stage layer")
- reverse(first, last)  the ablation: shallowest at `first`, deepest at `last` >= first
- from_start         every layer at epoch 0

Epochs are rounded to the nearest integer; the paper's exact formula is unknown.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

from prs.errors import UserError


@dataclass(frozen=True)
class Schedule:
    name: str
    epochs: int
    epoch_of_depth: Callable[[float], int | None]  # normalised depth in [0, 1] -> epoch
    params: dict

    def switch_epochs(self, layer_names: list[str]) -> dict[str, int | None]:
        n = len(layer_names)
        return {name: self.epoch_of_depth(i / (n - 1) if n > 1 else 1.0) for i, name in enumerate(layer_names)}

    def to_dict(self) -> dict:
        return {"name": self.name, **self.params}


_REGISTRY: dict[str, Callable] = {}


def register(fn):
    _REGISTRY[fn.__name__] = fn
    return fn


def names() -> list[str]:
    return sorted(_REGISTRY)


def _epoch(key: str, value, epochs: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise UserError(f"schedule.{key}: expected an integer epoch, got {value!r}")
    if not 0 <= value < epochs:
        raise UserError(f"schedule.{key}: switch epoch {value} is outside the run; allowed 0..{epochs - 1} "
                        f"(train.epochs={epochs}); use schedule 'never' for no switch")
    return value


def _linear(first: int, last: int) -> Callable[[float], int]:
    return lambda depth: int(round(first + (last - first) * depth))


@register
def never(epochs: int):
    return lambda depth: None


@register
def from_start(epochs: int):
    return lambda depth: 0


@register
def uniform(epochs: int, epoch: int):
    e = _epoch("epoch", epoch, epochs)
    return lambda depth: e


@register
def prs(epochs: int, first: int, last: int):
    first, last = _epoch("first", first, epochs), _epoch("last", last, epochs)
    if last > first:
        raise UserError(f"schedule: prs switches later layers earlier, so last ({last}) must be <= first ({first}); "
                        "use schedule 'reverse' for the opposite order")
    return _linear(first, last)


@register
def reverse(epochs: int, first: int, last: int):
    first, last = _epoch("first", first, epochs), _epoch("last", last, epochs)
    if last < first:
        raise UserError(f"schedule: reverse switches earlier layers first, so last ({last}) must be >= first ({first})")
    return _linear(first, last)


def create(spec: dict, epochs: int) -> Schedule:
    """Build a schedule from its spec, e.g. {"name": "uniform", "epoch": 5}."""
    if not isinstance(spec, dict) or "name" not in spec:
        raise UserError(f"schedule: expected a mapping with a 'name', e.g. {{name: never}}, got {spec!r}")
    params = {k: v for k, v in spec.items() if k != "name"}
    name = spec["name"]
    if name not in _REGISTRY:
        raise UserError(f"schedule.name: unknown schedule '{name}'; choose one of {', '.join(names())}")
    fn = _REGISTRY[name]
    allowed = [p for p in inspect.signature(fn).parameters if p != "epochs"]
    unknown = sorted(set(params) - set(allowed))
    missing = sorted(set(allowed) - set(params))
    if unknown or missing:
        needs = ", ".join(allowed) if allowed else "no parameters"
        raise UserError(f"schedule '{name}' takes {needs}; "
                        + (f"unknown: {', '.join(unknown)}" if unknown else f"missing: {', '.join(missing)}"))
    return Schedule(name, epochs, fn(epochs, **params), params)
