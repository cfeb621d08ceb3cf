"""What a run may be called, decided from what ran, never from the `profile` string.

A notebook's parameters carry a `profile` name, but papermill (`-p profile full`) or a hand edit
can set it to anything while the other values stay those of another profile. `run_label(params)`
therefore looks at the values: synthetic data, models under a million parameters or fewer than
`MIN_EPOCHS` epochs make a *pipeline check*; otherwise one seed makes the run *indicative (one
seed)*; values equal to the `full` profile's (where runs are kept aside) make it *full*; anything
else is a *custom* run, named by the settings that differ. A profile name that disagrees with the
values is reported next to the label, which always follows the values.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Mapping

from prs import models

MIN_PARAMETERS = 1_000_000  # smaller models are the CPU smoke models (resnet_tiny ... convit_smoke)
MIN_EPOCHS = 10  # fewer epochs cannot train a CIFAR-100 model to a meaningful accuracy
KINDS = ("pipeline_check", "indicative", "full", "custom")
# where runs and data live, and what the profile is called: not what a run computes
NOT_COMPARED = ("profile", "run_root", "data_root", "download")
MODEL_KEYS = ("models", "reference", "hybrid_model", "vit_model", "baselines")


@lru_cache(maxsize=None)
def parameter_count(model: str) -> int:
    """Parameters of a registered model built for 100 classes (the data sets here have 100)."""
    return sum(p.numel() for p in models.create(model, num_classes=100).parameters())


def models_in(params: Mapping) -> list[str]:
    """Every model a notebook's parameters train, in the order they name them."""
    names: list[str] = []
    for key in MODEL_KEYS:
        value = params.get(key)
        for entry in value if isinstance(value, list) else [value] if value else []:
            name = entry["model"] if isinstance(entry, Mapping) else entry  # a baseline with its own recipe
            if name not in names:
                names.append(name)
    control = params.get("negative_control")
    if isinstance(control, Mapping) and control.get("model") not in names:
        names.append(control["model"])
    return names


@dataclass(frozen=True)
class RunLabel:
    kind: str  # one of KINDS
    profile: str  # the profile name the parameters gave
    reasons: tuple[str, ...]  # why this kind: what ran

    @property
    def is_pipeline_check(self) -> bool:
        return self.kind == "pipeline_check"

    @property
    def name(self) -> str:
        return {"pipeline_check": "pipeline check", "indicative": "indicative (one seed)", "full": "full",
                "custom": "custom run"}[self.kind]

    @property
    def disagrees(self) -> bool:
        """The profile name says something the values do not."""
        expected = {"smoke": "pipeline_check", "colab": "indicative", "full": "full"}.get(self.profile)
        return expected is not None and expected != self.kind

    def note(self) -> str:
        """The sentence every verdict ends with: what this run is, and why."""
        from prs.plots import SMOKE_NOTE

        what = {"pipeline_check": SMOKE_NOTE, "indicative": "indicative (one seed): no interval can be computed",
                "full": "full profile", "custom": "custom run"}[self.kind]
        why = f" ({'; '.join(self.reasons)})" if self.reasons else ""
        asked = (f"; the parameters say profile `{self.profile}`, but the label follows what ran"
                 if self.disagrees else "")
        return f"{what}{why}{asked}"


def notebook_of(params: Mapping) -> str | None:
    """The notebook whose parameters these are (each notebook has its own set of names), or None."""
    from prs.experiments.profiles import parameter_names
    from prs.experiments.specs import NOTEBOOKS

    return next((nb for nb in NOTEBOOKS if set(parameter_names(nb)) == set(params)), None)


def _differences_from_full(params: Mapping, notebook: str | None) -> list[str] | None:
    notebook = notebook or notebook_of(params)
    if notebook is None:
        return None
    from prs.experiments.profiles import notebook_parameters

    full = notebook_parameters("full", notebook)
    return [k for k in full if k not in NOT_COMPARED and params.get(k) != full[k]]


def run_label(params: Mapping, notebook: str | None = None) -> RunLabel:
    """The label of a run with these parameters. A run is `full` only when its values are the full
    profile's for its notebook (`notebook`, else recognised from the parameter names)."""
    profile = str(params.get("profile"))
    reasons = []
    if str(params.get("dataset")) == "synthetic":
        reasons.append("synthetic data")
    tiny = [m for m in models_in(params) if parameter_count(m) < MIN_PARAMETERS]
    if tiny:
        reasons.append(f"models under {MIN_PARAMETERS:,} parameters: {', '.join(tiny)}")
    if params.get("epochs", 0) < MIN_EPOCHS:
        reasons.append(f"{params.get('epochs')} epochs (fewer than {MIN_EPOCHS})")
    if reasons:
        return RunLabel("pipeline_check", profile, tuple(reasons))
    seeds = params.get("seeds") or []
    if len(seeds) < 2:
        return RunLabel("indicative", profile, (f"{len(seeds)} seed",))
    differ = _differences_from_full(params, notebook)
    if differ == []:
        return RunLabel("full", profile, ())
    why = (f"differs from the full profile in {', '.join(differ)}",) if differ else ("not a notebook's parameters",)
    return RunLabel("custom", profile, why)
