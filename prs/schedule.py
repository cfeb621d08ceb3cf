"""Per-layer switch schedules: at which epoch each switchable layer becomes attention.

A schedule is a `ScheduleSpec`, the typed form of a config's `schedule: {name: prs, first: 8,
last: 2}`. It checks itself when it is made (a registered name, the parameters that schedule
takes, integer epochs in the schedule's order); `within(epochs)` checks its epochs against the
run's length; `switch_epochs(layer_names)` maps each layer (in depth order) to the epoch
*before which* it is switched, or None for never; `label` is its short name in tables. Epoch 0
means attention from the start; a layer switched at epoch E trained E epochs as a conv.

- never              pure CNN
- uniform(epoch)     every layer at the same epoch (T-CNN-style single switch; the
                     interpolation experiment varies it)
- prs(first, last)   linear in depth: the shallowest layer at `first`, the deepest at
                     `last` <= first, so later layers switch earlier ("linearly faster
                     at the late stage layer")
- reverse(first, last)  the ablation: shallowest at `first`, deepest at `last` >= first
- from_start         every layer at epoch 0

Every parameter of a schedule is a switch epoch. Epochs are rounded to the nearest integer;
the paper's exact formula is unknown.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable, Mapping

from prs.errors import UserError

EpochOfDepth = Callable[[float], "int | None"]  # normalised depth in [0, 1] (shallowest 0) -> epoch


@dataclass(frozen=True)
class _Entry:
    fn: Callable[..., EpochOfDepth]
    label: str


_REGISTRY: dict[str, _Entry] = {}


def register(label: str | None = None) -> Callable:
    """Decorator: register a schedule under its function name.

    The function's keyword parameters are the spec's keys, each a switch epoch (an integer,
    checked against the run by `ScheduleSpec.within`); it checks how they must be ordered and
    returns depth -> epoch. `label` is how tables name the spec, formatted with its parameters
    (default: the name).
    """
    def decorate(fn: Callable[..., EpochOfDepth]) -> Callable[..., EpochOfDepth]:
        _REGISTRY[fn.__name__] = _Entry(fn, label or fn.__name__)
        return fn

    return decorate


def names() -> list[str]:
    return sorted(_REGISTRY)


def _linear(first: int, last: int) -> EpochOfDepth:
    return lambda depth: int(round(first + (last - first) * depth))


@register()
def never():
    return lambda depth: None


@register()
def from_start():
    return lambda depth: 0


@register(label="uniform(E={epoch})")
def uniform(epoch: int):
    return lambda depth: epoch


@register(label="prs({first}→{last})")
def prs(first: int, last: int):
    if last > first:
        raise UserError(f"schedule: prs switches later layers earlier, so last ({last}) must be <= first ({first}); "
                        "use schedule 'reverse' for the opposite order")
    return _linear(first, last)


@register(label="reverse({first}→{last})")
def reverse(first: int, last: int):
    if last < first:
        raise UserError(f"schedule: reverse switches earlier layers first, so last ({last}) must be >= first ({first})")
    return _linear(first, last)


@dataclass(frozen=True)
class ScheduleSpec:
    """A registered schedule and its parameters, e.g. ScheduleSpec("prs", {"first": 2, "last": 1})."""

    name: str = "never"
    params: dict = field(default_factory=dict)
    epoch_of_depth: EpochOfDepth = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.name not in _REGISTRY:
            raise UserError(f"schedule.name: unknown schedule '{self.name}'; choose one of {', '.join(names())}")
        fn = _REGISTRY[self.name].fn
        allowed = list(inspect.signature(fn).parameters)
        unknown = sorted(set(self.params) - set(allowed))
        missing = sorted(set(allowed) - set(self.params))
        if unknown or missing:
            needs = ", ".join(allowed) if allowed else "no parameters"
            raise UserError(f"schedule '{self.name}' takes {needs}; "
                            + (f"unknown: {', '.join(unknown)}" if unknown else f"missing: {', '.join(missing)}"))
        for key, value in self.params.items():
            if not isinstance(value, int) or isinstance(value, bool):
                raise UserError(f"schedule.{key}: expected an integer epoch, got {value!r}")
        object.__setattr__(self, "epoch_of_depth", fn(**self.params))

    @classmethod
    def from_dict(cls, spec: Mapping) -> ScheduleSpec:
        """The spec of a mapping such as {"name": "uniform", "epoch": 5}."""
        if not isinstance(spec, Mapping):
            raise UserError(f"schedule: expected a mapping with a 'name', e.g. {{name: never}}, got {spec!r}")
        if "name" not in spec:
            raise UserError(f"schedule.name: missing; expected a mapping with a 'name', e.g. {{name: never}}, "
                            f"got {dict(spec)!r}")
        return cls(spec["name"], {k: v for k, v in spec.items() if k != "name"})

    def to_dict(self) -> dict:
        return {"name": self.name, **self.params}

    @property
    def label(self) -> str:
        """Its name in tables: never, from_start, uniform(E=3), prs(2→1), reverse(1→2)."""
        return _REGISTRY[self.name].label.format(**self.params)

    def within(self, epochs: int) -> ScheduleSpec:
        """Self, once every switch epoch lies inside a run of `epochs` epochs."""
        for key, value in self.params.items():
            if not 0 <= value < epochs:
                raise UserError(f"schedule.{key}: switch epoch {value} is outside the run; allowed 0..{epochs - 1} "
                                f"(train.epochs={epochs}); use schedule 'never' for no switch")
        return self

    def switch_epochs(self, layer_names: list[str]) -> dict[str, int | None]:
        n = len(layer_names)
        return {name: self.epoch_of_depth(i / (n - 1) if n > 1 else 1.0) for i, name in enumerate(layer_names)}


def create(spec: Mapping, epochs: int) -> ScheduleSpec:
    """The checked schedule of a mapping, for a run of `epochs` epochs."""
    return ScheduleSpec.from_dict(spec).within(epochs)
