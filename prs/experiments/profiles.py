"""Profiles: the notebooks' parameters (`prs/profiles/{smoke,colab,full}.yaml`), one mapping per
notebook; the smoke profile's values are the defaults of the notebooks' parameters cells."""

from __future__ import annotations

import copy
import os
from importlib import resources
from pathlib import Path
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
    if not isinstance(data.get("gpu"), bool):
        raise UserError(f"profile '{name}': needs 'gpu: true' or 'gpu: false' (whether it is sized for a GPU)")
    return data


def needs_gpu(profile: str) -> bool:
    """Whether the profile is sized for a GPU (colab, full) rather than a CPU (smoke)."""
    return read_profile(profile)["gpu"]


def notebook_parameters(profile: str, notebook: str) -> dict:
    """The papermill parameters of one notebook under a profile, `profile` included."""
    params = copy.deepcopy(read_profile(profile)["notebooks"][check_notebook(notebook)])
    return {"profile": profile, **params}


def parameter_names(notebook: str) -> list[str]:
    """The names a notebook's `parameters` cell defines: those of the smoke profile (its defaults)."""
    return list(notebook_parameters("smoke", notebook))


def _container_kinds(notebook: str, name: str) -> set[type]:
    """list and/or dict where the profiles give parameter `name` such a value (None also allowed if one does)."""
    values = [read_profile(p)["notebooks"][notebook][name] for p in profile_names()]
    kinds = {type(v) for v in values} & {list, dict}
    return kinds | ({type(None)} if kinds and None in values else set())


def check_parameters(notebook: str, params: Mapping) -> dict:
    """The parameters with list and dict values given as text read as YAML, e.g. `papermill -p ratios
    "0.1,0.5,1.0"` (brackets optional); any other value where the profiles have a list or a dict is an error."""
    checked = dict(params)
    for name, value in params.items():
        kinds = _container_kinds(notebook, name) if name != "profile" else set()
        if not kinds or isinstance(value, tuple(kinds)):
            continue
        kind = list if list in kinds else dict
        example = _flow(_first_entry(read_profile("smoke")["notebooks"][notebook][name]))
        if isinstance(value, str):
            opening, closing = ("[", "]") if kind is list else ("{", "}")
            text = value.strip() if value.strip().startswith(opening) else f"{opening}{value}{closing}"
            try:
                value = yaml.safe_load(text)
            except yaml.YAMLError:
                value = None
        if not isinstance(value, kind):
            raise UserError(f"parameter {name}: expected a {kind.__name__}, got {params[name]!r}; "
                            f"give a YAML {kind.__name__}, e.g. papermill -p {name} '{example}' "
                            f"or -y '{name}: {example}'")
        checked[name] = value
    return checked


def _first_entry(value):
    return dict(list(value.items())[:1]) if isinstance(value, dict) else value


def _flow(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10**6).strip()


# ----------------------------------------------------------------------------- where runs and data live

ROOT_VARIABLE = "PRS_ROOT"


def project_root() -> Path:
    """The folder a notebook's relative `run_root` and `data_root` start at, whatever the kernel's
    working directory (papermill's, nbval's, Jupyter's): $PRS_ROOT if set, else the repository
    checkout this package is imported from (an editable install or PYTHONPATH)."""
    if os.environ.get(ROOT_VARIABLE):
        root = Path(os.environ[ROOT_VARIABLE]).expanduser()
        if not root.is_absolute():
            raise UserError(f"${ROOT_VARIABLE}: '{root}' must be an absolute path")
        return root
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file() and (checkout / "notebooks").is_dir():
        return checkout
    raise UserError(f"relative run_root or data_root, and prs is not imported from a repository checkout "
                    f"({checkout}): set ${ROOT_VARIABLE} to the folder they start at (e.g. export "
                    f"{ROOT_VARIABLE}=$PWD) or give absolute paths")


def resolve_roots(params: Mapping, base: Path | None = None) -> dict:
    """The parameters with `run_root` and `data_root` absolute: relative ones start at `base` (default
    `project_root()`); a `data_root` of None becomes <base>/data unless $PRS_DATA names the data root."""
    resolved = dict(params)
    for name in ("run_root", "data_root"):
        value = params.get(name)
        if value is None and (name == "run_root" or os.environ.get("PRS_DATA")):
            continue
        path = Path(value if value is not None else "data").expanduser()
        if not path.is_absolute():
            path = (base if base is not None else project_root()) / path
        resolved[name] = str(path)
    return resolved


def notebook_params(notebook: str, namespace: Mapping, profile: str | None = None) -> dict:
    """Collect the notebook's parameters from `namespace` (its globals()), or from a named profile.

    `profile` is how a reader switches profile by hand (e.g. on Colab): the values then come from
    `prs/profiles/<profile>.yaml` and the parameters cell is ignored. Relative `run_root` and
    `data_root` are made absolute (`resolve_roots`), so that a notebook executed anywhere (papermill
    output, nbval, a copied notebook) finds the same runs and data. A GPU profile on a machine
    without a CUDA GPU is warned about, loudly.
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
    from prs.experiments.runtime import cuda_device, warn_if_gpu_profile_on_cpu

    warn_if_gpu_profile_on_cpu(params["profile"], cuda_device()[0])
    return resolve_roots(check_parameters(notebook, params))


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
