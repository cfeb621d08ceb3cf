"""Profiles: the notebooks' parameters (`prs/profiles/{smoke,colab,full}.yaml`), one mapping per
notebook; the smoke profile's values are the defaults of the notebooks' parameters cells."""

from __future__ import annotations

import copy
from importlib import resources
from typing import Mapping, Sequence

import yaml

from prs.errors import UserError
from prs.experiments.grids import unique_trials
from prs.experiments.specs import NOTEBOOKS, check_notebook, notebook_trials


def profile_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("prs.profiles").iterdir() if p.name.endswith(".yaml"))


def read_profile(name: str) -> dict:
    """The parsed profile: {"notebooks": {notebook: {parameter: value}}, ...} (YAML anchors resolved)."""
    if name not in profile_names():
        raise UserError(f"profile '{name}' does not exist; choose one of {', '.join(profile_names())}")
    data = yaml.safe_load(resources.files("prs.profiles").joinpath(f"{name}.yaml").read_text())
    notebooks = data.get("notebooks") if isinstance(data, dict) else None
    if not isinstance(notebooks, dict) or sorted(notebooks) != sorted(NOTEBOOKS):
        raise UserError(f"profile '{name}': needs a 'notebooks' mapping with exactly {', '.join(NOTEBOOKS)}")
    return data


def notebook_parameters(profile: str, notebook: str) -> dict:
    """The papermill parameters of one notebook under a profile, `profile` included."""
    params = copy.deepcopy(read_profile(profile)["notebooks"][check_notebook(notebook)])
    return {"profile": profile, **params}


def parameter_names(notebook: str) -> list[str]:
    """The names a notebook's `parameters` cell defines: those of the smoke profile (its defaults)."""
    return list(notebook_parameters("smoke", notebook))


def notebook_params(notebook: str, namespace: Mapping, profile: str | None = None) -> dict:
    """Collect the notebook's parameters from `namespace` (its globals()), or from a named profile.

    `profile` is how a reader switches profile by hand (e.g. on Colab): the values then come from
    `prs/profiles/<profile>.yaml` and the parameters cell is ignored.
    """
    if profile is not None:
        params = notebook_parameters(profile, notebook)
    else:
        missing = [n for n in parameter_names(notebook) if n not in namespace]
        if missing:
            raise UserError(f"notebook {notebook}: parameters {', '.join(missing)} are not defined; "
                            "run the parameters cell first")
        params = {n: copy.deepcopy(namespace[n]) for n in parameter_names(notebook)}
    if params["profile"] not in profile_names():
        raise UserError(f"profile '{params['profile']}' does not exist; choose one of {', '.join(profile_names())}")
    return params


def is_smoke(params: Mapping) -> bool:
    """Whether these values make a pipeline check (decided from what runs, not from the profile name)."""
    from prs.experiments.labels import run_label

    return run_label(params).is_pipeline_check


def training_plan(profile: str, notebooks: Sequence[str] = NOTEBOOKS) -> list[dict]:
    """Per model, the distinct runs a profile trains and their cost in passes over the full training
    set (sum of epochs x ratio): the compute floor is passes x training-set size / throughput."""
    trials = [t for nb in notebooks for t in notebook_trials(nb, notebook_parameters(profile, nb))]
    rows: dict[str, dict] = {}
    for t in unique_trials(trials):
        row = rows.setdefault(t.config.model.name, {"model": t.config.model.name, "runs": 0, "dataset_passes": 0.0})
        row["runs"] += 1
        row["dataset_passes"] += t.config.train.epochs * t.config.data.ratio
    return list(rows.values())
