"""Grids of runs: a notebook's parameters -> `Trial`s (a key saying what varies, and a validated
`Config`) -> results, through `prs.train.train` (finished runs are reused, unfinished ones resume)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from prs import config as config_mod
from prs import models, runs, train
from prs.config import Config
from prs.errors import UserError


@dataclass(frozen=True)
class Trial:
    """One run of a grid: `key` says what varies (label, model, ratio, seed, ...); `config` is validated."""

    key: dict
    config: Config


def is_hybrid(model: str) -> bool:
    """Models of the registry's "hybrid" family: the ones with switchable layers."""
    return models.family(model) == "hybrid"


def make_config(params: Mapping, model: str, *, ratio: float, seed: int, schedule: dict | None = None) -> Config:
    """The config of one run: the profile's preset, then its `overrides`, then this run's fields."""
    run = {
        "model": {"name": model, "switchable_stages": params["switchable_stages"] if is_hybrid(model) else None},
        "data": {"dataset": params["dataset"], "root": params["data_root"], "download": params["download"],
                 "ratio": ratio, "subset_seed": params["subset_seed"]},
        "train": {"epochs": params["epochs"], "seed": seed},
        "schedule": schedule if schedule is not None else {"name": "never"},
        "run": {"root": params["run_root"]},
    }
    return config_mod.load(params["preset"], config_mod.merge(params["overrides"] or {}, run))


def _seeds(params: Mapping) -> list[int]:
    seeds = params["seeds"]
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                           for s in seeds):
        raise UserError(f"seeds: expected a non-empty list of integers, got {seeds!r}")
    return seeds


def data_scale_trials(params: Mapping) -> list[Trial]:
    """Every model at every data ratio and seed; hybrids use `hybrid_schedule`, the rest never switch."""
    if params["reference"] not in params["models"]:
        raise UserError(f"reference: '{params['reference']}' must be one of models {params['models']}")
    trials = []
    for model in params["models"]:
        schedule = params["hybrid_schedule"] if is_hybrid(model) else None
        for ratio in params["ratios"]:
            for seed in _seeds(params):
                trials.append(Trial({"label": model, "model": model, "ratio": ratio, "seed": seed},
                                    make_config(params, model, ratio=ratio, seed=seed, schedule=schedule)))
    return trials


def switch_schedule(epoch: int | None) -> dict:
    """Uniform switch at `epoch`: None = never (the CNN), 0 = from the start, else uniform(epoch)."""
    if epoch is None:
        return {"name": "never"}
    if epoch == 0:
        return {"name": "from_start"}
    return {"name": "uniform", "epoch": epoch}


def switch_label(epoch: int | None) -> str:
    return "never (CNN)" if epoch is None else f"E={epoch}"


def interpolation_trials(params: Mapping) -> list[Trial]:
    """The hybrid switched uniformly at each E of `switch_epochs` (None = never), and the ViT reference."""
    epochs_list = params["switch_epochs"]
    if None not in epochs_list:
        raise UserError("switch_epochs: must include null (never switch): the CNN end of the interpolation")
    trials = []
    for seed in _seeds(params):
        for e in epochs_list:
            key = {"label": switch_label(e), "model": params["hybrid_model"], "switch_epoch": e,
                   "ratio": params["ratio"], "seed": seed}
            trials.append(Trial(key, make_config(params, params["hybrid_model"], ratio=params["ratio"], seed=seed,
                                                 schedule=switch_schedule(e))))
        vit = params["vit_model"]
        trials.append(Trial({"label": vit, "model": vit, "switch_epoch": None, "ratio": params["ratio"], "seed": seed},
                            make_config(params, vit, ratio=params["ratio"], seed=seed)))
    return trials


ENTRY_FIELDS = ("schedule", "overrides", "epochs", "init_from")
BASELINE_FIELDS = ("label", "model", "preset", "epochs", "overrides")


def _hybrid_entry(label: str, entry) -> dict:
    """A `schedules` entry: a schedule spec ({name: ...}), or {schedule, overrides?, epochs?, init_from?}
    for entries that differ from the others in more than their schedule (an LR restart, T-CNN)."""
    if isinstance(entry, Mapping) and "schedule" in entry:
        unknown = [k for k in entry if k not in ENTRY_FIELDS]
        if unknown:
            raise UserError(f"schedules.{label}: unknown key '{unknown[0]}'; allowed: {', '.join(ENTRY_FIELDS)}")
        return {"overrides": {}, "epochs": None, "init_from": None, **entry}
    return {"schedule": entry, "overrides": {}, "epochs": None, "init_from": None}


def _baseline_entry(entry) -> dict:
    """A `baselines` entry: a model name, or {label, model, preset?, epochs?, overrides?} for a model
    trained with its own recipe (e.g. ResNet-18 with its SGD preset)."""
    if isinstance(entry, str):
        return {"label": entry, "model": entry, "preset": None, "epochs": None, "overrides": {}}
    if not isinstance(entry, Mapping) or "label" not in entry or "model" not in entry:
        raise UserError(f"baselines: each entry is a model name or a mapping with label and model, got {entry!r}")
    unknown = [k for k in entry if k not in BASELINE_FIELDS]
    if unknown:
        raise UserError(f"baselines.{entry['label']}: unknown key '{unknown[0]}'; allowed: {', '.join(BASELINE_FIELDS)}")
    return {"preset": None, "epochs": None, "overrides": {}, **entry}


def _variant(params: Mapping, preset=None, epochs=None, overrides=None) -> dict:
    """The profile's parameters with one entry's own preset, epochs and overrides."""
    out = dict(params)
    out["preset"] = preset or params["preset"]
    out["epochs"] = epochs or params["epochs"]
    out["overrides"] = config_mod.merge(params["overrides"] or {}, overrides or {})
    return out


def prs_trials(params: Mapping) -> list[Trial]:
    """The hybrid under every entry of `schedules` ({label: schedule spec or entry}), the baselines
    (model names, or entries with their own recipe), and the negative control. An entry with
    `init_from: <label>` starts from the final weights of that earlier entry's run (same seed)."""
    if "prs" not in params["schedules"]:
        raise UserError(f"schedules: needs an entry 'prs' (the method under test); got {list(params['schedules'])}")
    entries = {label: _hybrid_entry(label, e) for label, e in params["schedules"].items()}
    labels = list(entries)
    for label, e in entries.items():
        source = e["init_from"]
        if source is not None and (source not in entries or labels.index(source) >= labels.index(label)
                                   or entries[source]["init_from"] is not None):
            raise UserError(f"schedules.{label}.init_from: '{source}' must be an earlier entry of schedules that "
                            f"starts from scratch; entries: {', '.join(labels)}")
    baselines = [_baseline_entry(b) for b in params["baselines"]]
    trials = []
    hybrid = params["hybrid_model"]
    for seed in _seeds(params):
        configs = {}
        for label, e in entries.items():
            variant = _variant(params, epochs=e["epochs"], overrides=e["overrides"])
            if e["init_from"] is not None:
                variant["overrides"] = config_mod.merge(
                    variant["overrides"], {"model": {"init_from": runs.run_dir_for(configs[e["init_from"]]).name}})
            configs[label] = make_config(variant, hybrid, ratio=params["ratio"], seed=seed, schedule=e["schedule"])
            trials.append(Trial({"label": label, "model": hybrid, "ratio": params["ratio"], "seed": seed},
                                configs[label]))
        for b in baselines:
            variant = _variant(params, b["preset"], b["epochs"], b["overrides"])
            trials.append(Trial({"label": b["label"], "model": b["model"], "ratio": params["ratio"], "seed": seed},
                                make_config(variant, b["model"], ratio=params["ratio"], seed=seed)))
    return trials + negative_control_trials(params)


def negative_control_trials(params: Mapping) -> list[Trial]:
    """Two arms of one configuration that differ only in their seeds (`negative_control`: {model,
    ratio, seeds_a, seeds_b}, or null for none); their keys carry `control_arm` ("A" or "B")."""
    control = params["negative_control"]
    if control is None:
        return []
    fields = ("model", "ratio", "seeds_a", "seeds_b")
    if not isinstance(control, Mapping) or sorted(control) != sorted(fields):
        raise UserError(f"negative_control: expected null or a mapping with {', '.join(fields)}, got {control!r}")
    a, b = _seeds({"seeds": control["seeds_a"]}), _seeds({"seeds": control["seeds_b"]})
    if set(a) & set(b):
        raise UserError(f"negative_control: seeds_a {a} and seeds_b {b} share seeds; the arms must differ in every seed")
    model = control["model"]
    return [Trial({"label": f"control {arm}", "model": model, "ratio": control["ratio"], "seed": seed,
                   "control_arm": arm},
                  make_config(params, model, ratio=control["ratio"], seed=seed))
            for arm, seeds in (("A", a), ("B", b)) for seed in seeds]


def split_control(results: Sequence[Mapping]) -> tuple[list, list]:
    """(results of the experiment, results of the negative control), by the key's `control_arm`."""
    control = [r for r in results if "control_arm" in r.get("key", {})]
    return [r for r in results if "control_arm" not in r.get("key", {})], control


def run_dir(trial: Trial) -> Path:
    return runs.run_dir_for(trial.config)


def unique_trials(trials: Iterable[Trial]) -> list[Trial]:
    """Trials with distinct run directories (the first of each), in order."""
    seen, out = set(), []
    for trial in trials:
        d = run_dir(trial)
        if d not in seen:
            seen.add(d)
            out.append(trial)
    return out


def describe(key: Mapping) -> str:
    """'ratio=0.5 seed=0': the key's fields, without the label and what merely repeats it."""
    label = key.get("label")
    return " ".join(f"{k}={v}" for k, v in key.items() if k != "label" and v != label)


def is_finished(trial: Trial) -> bool:
    path = run_dir(trial) / runs.RESULTS
    try:
        return bool(json.loads(path.read_text()).get("finished"))
    except (OSError, ValueError):
        return False


def run_grid(trials: Sequence[Trial], *, force: bool = False, progress: bool | None = None,
             log: Callable[[str], None] = print) -> list[dict]:
    """Train (or reuse, or resume) every trial; one line per run. Returns results dicts plus their "key"."""
    out = []
    for i, trial in enumerate(trials, 1):
        reused = is_finished(trial) and not force
        tick = time.perf_counter()
        results = train.train(trial.config, force=force, progress=progress, verbose=False)
        how = "reused" if reused else f"trained in {time.perf_counter() - tick:.0f} s"
        log(f"[{i}/{len(trials)}] {trial.key.get('label', '')} {describe(trial.key)}: "
            f"top-1 {results['final']['test_top1']:.2f}% ({how}) {results['run_dir']}")
        out.append({**results, "key": dict(trial.key)})
    return out
