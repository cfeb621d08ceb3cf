"""The book's experiments as data: profile parameters -> grids of configs -> runs -> tables -> verdicts.

Every notebook is a thin narrative over these functions:

1. `notebook_params(notebook, globals())` collects the notebook's papermill parameters (their
   names and smoke defaults live in `prs/profiles/smoke.yaml`);
2. `notebook_trials(notebook, params)` turns them into `Trial`s (a key saying what varies, and a
   validated `Config`); `prs reproduce --force` uses the same function to know which runs to redo;
3. `run_grid(trials)` trains each config with `prs.train.train` (finished runs are reused,
   unfinished ones resume from their checkpoint), so a notebook that shares configs with an
   earlier one (e.g. the Fourier notebook and the data-scale notebook) trains nothing new;
4. `results_table`, `summarize`, `markdown_table` make the tables (mean ± sample std over seeds);
5. one `*_verdict` function per paper claim computes the notebook's closing sentence.

Nothing here knows numbers from the paper: only its abstract is available (see `PAPER_CLAIMS`).
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import yaml

from prs import config as config_mod
from prs.config import Config
from prs.errors import UserError
from prs.schedule import ScheduleSpec

# timm imports huggingface_hub, which imports tqdm.auto; in a kernel without ipywidgets that warns
# "IProgress not found" into every notebook. The notebooks show no progress bars under papermill.
warnings.filterwarnings("ignore", message="IProgress not found")

NOTEBOOKS = ("01_data_scale", "02_fourier", "03_interpolation", "04_prs_cifar100")

# The paper's claims, one per notebook, in the words of its abstract (Lee et al. 2022, CC BY 4.0).
# The abstract gives no numbers, so every number attributed to the paper in the book is "unknown".
PAPER_CLAIMS = {
    "01_data_scale": "The more convolution-like inductive bias is included in the model, the smaller the data "
                     "scale is required where the ViT-like model outperforms the ResNet performance.",
    "02_fourier": "Through Fourier analysis of feature maps ... we observe which inductive bias is advantageous "
                  "for each data scale.",
    "03_interpolation": "By adjusting the number of epochs the model stays in the convolution, we show that "
                        "reparameterization from convolution to self-attention interpolates the Fourier analysis "
                        "pattern between CNNs and ViTs.",
    "04_prs_cifar100": "PRS outperformed previous studies on the small-scale dataset, e.g., CIFAR-100.",
}


# ----------------------------------------------------------------------------- profiles


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


def check_notebook(notebook: str) -> str:
    if notebook not in NOTEBOOKS:
        raise UserError(f"notebook '{notebook}' does not exist; choose one of {', '.join(NOTEBOOKS)}")
    return notebook


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
    return params.get("profile") == "smoke"


# ----------------------------------------------------------------------------- grids


@dataclass(frozen=True)
class Trial:
    """One run of a grid: `key` says what varies (label, model, ratio, seed, ...); `config` is validated."""

    key: dict
    config: Config


def is_hybrid(model: str) -> bool:
    """Models of the registry's "hybrid" family: the ones with switchable layers."""
    from prs import models

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


def prs_trials(params: Mapping) -> list[Trial]:
    """The hybrid under every schedule of `schedules` ({label: spec}), and the baseline models."""
    if "prs" not in params["schedules"]:
        raise UserError(f"schedules: needs an entry 'prs' (the method under test); got {list(params['schedules'])}")
    trials = []
    hybrid = params["hybrid_model"]
    for seed in _seeds(params):
        for label, spec in params["schedules"].items():
            trials.append(Trial({"label": label, "model": hybrid, "ratio": params["ratio"], "seed": seed},
                                make_config(params, hybrid, ratio=params["ratio"], seed=seed, schedule=spec)))
        for model in params["baselines"]:
            trials.append(Trial({"label": model, "model": model, "ratio": params["ratio"], "seed": seed},
                                make_config(params, model, ratio=params["ratio"], seed=seed)))
    return trials


TRIALS: dict[str, Callable[[Mapping], list[Trial]]] = {
    "01_data_scale": data_scale_trials,
    "02_fourier": data_scale_trials,  # the Fourier notebook analyses the data-scale runs
    "03_interpolation": interpolation_trials,
    "04_prs_cifar100": prs_trials,
}


def notebook_trials(notebook: str, params: Mapping) -> list[Trial]:
    return TRIALS[check_notebook(notebook)](params)


def run_dir(trial: Trial) -> Path:
    from prs.runs import run_dir_for

    return run_dir_for(trial.config)


def unique_trials(trials: Iterable[Trial]) -> list[Trial]:
    """Trials with distinct run directories (the first of each), in order."""
    seen, out = set(), []
    for trial in trials:
        d = run_dir(trial)
        if d not in seen:
            seen.add(d)
            out.append(trial)
    return out


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


# ----------------------------------------------------------------------------- running


def describe(key: Mapping) -> str:
    """'ratio=0.5 seed=0': the key's fields, without the label and what merely repeats it."""
    label = key.get("label")
    return " ".join(f"{k}={v}" for k, v in key.items() if k != "label" and v != label)


def is_finished(trial: Trial) -> bool:
    import json

    path = run_dir(trial) / "results.json"
    try:
        return bool(json.loads(path.read_text()).get("finished"))
    except (OSError, ValueError):
        return False


def run_grid(trials: Sequence[Trial], *, force: bool = False, progress: bool | None = None,
             log: Callable[[str], None] = print) -> list[dict]:
    """Train (or reuse, or resume) every trial; one line per run. Returns results dicts plus their "key"."""
    from prs import train

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


# ----------------------------------------------------------------------------- tables


def results_table(results: Iterable[Mapping]) -> list[dict]:
    """One flat row per run: label, model, family, ratio, seed, schedule, top1, top5, sizes, timings.

    Fields of the run's grid key (e.g. switch_epoch) are added; the label defaults to the model name.
    """
    rows = []
    for r in results:
        cfg = r["config"]
        row = {
            "label": cfg["model"]["name"],
            "model": cfg["model"]["name"],
            "family": r["model"]["family"],
            "ratio": cfg["data"]["ratio"],
            "seed": cfg["train"]["seed"],
            "schedule": ScheduleSpec.from_dict(r["schedule"]).label,
            "top1": r["final"]["test_top1"],
            "top5": r["final"]["test_top5"],
            "train_size": r["data"]["train_size"],
            "epochs": cfg["train"]["epochs"],
            "wall_time_s": r["wall_time_s"],
            "img_per_s": r["throughput_img_s"],
            "run_dir": r["run_dir"],
            "commit": r["commit"],
        }
        row.update(r.get("key", {}))
        rows.append(row)
    return rows


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n - 1); the std is None for a single value."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("mean_std: no values")
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def summarize(rows: Iterable[Mapping], by: Sequence[str] = ("label",), value: str = "top1") -> list[dict]:
    """Group rows by the `by` fields (first-seen order): {by..., mean, std, n, values} per group."""
    groups: dict[tuple, list[float]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in by), []).append(float(row[value]))
    out = []
    for key, values in groups.items():
        mean, std = mean_std(values)
        out.append({**dict(zip(by, key)), "mean": mean, "std": std, "n": len(values), "values": values})
    return out


def format_mean_std(mean: float | None, std: float | None, digits: int = 1) -> str:
    if mean is None:
        return "unknown"
    if std is None:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def markdown_table(rows: Sequence[Mapping], columns: Mapping[str, str] | Sequence[str]) -> str:
    """A Markdown table; `columns` maps row keys to headers. Floats are shown with 2 decimals."""
    columns = dict(columns) if isinstance(columns, Mapping) else {c: c for c in columns}

    def cell(v) -> str:
        if v is None:
            return "—"
        if isinstance(v, float):
            return f"{v:.2f}"
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(columns.values()) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(k)) for k in columns) + " |" for row in rows]
    return "\n".join(lines)


def pivot_markdown(summary: Sequence[Mapping], row: str = "label", column: str = "ratio", corner: str = "model",
                   column_header: Callable[[object], str] = str, digits: int = 1) -> str:
    """A Markdown table of `summarize` output: one line per `row` value, one column per `column`
    value, cells mean ± std (missing cells "—")."""
    rows_, cols = [], []
    cells = {}
    for s in summary:
        rows_ += [s[row]] if s[row] not in rows_ else []
        cols += [s[column]] if s[column] not in cols else []
        cells[(s[row], s[column])] = format_mean_std(s["mean"], s["std"], digits)
    header = {"_row": corner, **{f"c{i}": column_header(c) for i, c in enumerate(cols)}}
    lines = [{"_row": r, **{f"c{i}": cells.get((r, c)) for i, c in enumerate(cols)}} for r in rows_]
    return markdown_table(lines, header)


# ----------------------------------------------------------------------------- Fourier helpers


def average_curves(curves_list: Sequence[Mapping]) -> dict:
    """Element-wise mean of `prs.fourier.fourier_curves` outputs of the same architecture (e.g. over seeds)."""
    if not curves_list:
        raise ValueError("average_curves: no curves")
    first = curves_list[0]
    if any(c["names"] != first["names"] or c["sizes"] != first["sizes"] for c in curves_list):
        raise ValueError("average_curves: curves come from different architectures")
    n = len(curves_list)
    out = copy.deepcopy(dict(first))
    out["delta_f"] = [[sum(c["delta_f"][b][i] for c in curves_list) / n for i in range(len(first["delta_f"][b]))]
                      for b in range(len(first["delta_f"]))]
    out["high_freq"] = [sum(c["high_freq"][b] for c in curves_list) / n for b in range(len(first["high_freq"]))]
    return out


def high_freq_summary(curves: Mapping) -> float:
    """One number per model: ΔF at the highest frequency, averaged over all analysed blocks.

    Higher (less negative) = the feature maps keep more high-frequency amplitude (high-pass);
    self-attention, a low-pass filter in Park & Kim's reading, pulls it down.
    """
    return sum(curves["high_freq"]) / len(curves["high_freq"])


def fourier_by_group(results: Sequence[Mapping], images, by: Sequence[str] = ("label",)) -> dict[tuple, dict]:
    """Fourier curves of each run's trained model on `images`, averaged over the runs of a group."""
    import torch

    from prs.fourier import fourier_curves
    from prs.train import load_trained

    device = "cuda" if torch.cuda.is_available() else "cpu"
    grouped: dict[tuple, list[dict]] = {}
    for r in results:
        row = results_table([r])[0]
        model, _ = load_trained(r["run_dir"], device=device)
        grouped.setdefault(tuple(row[k] for k in by), []).append(fourier_curves(model, images))
    return {key: average_curves(curves) for key, curves in grouped.items()}


# ----------------------------------------------------------------------------- claims


@dataclass(frozen=True)
class Verdict:
    """Whether a claim of the paper held in this run: held is True, False, or None (not testable)."""

    claim: str
    held: bool | None
    sentence: str

    def markdown(self, profile: str) -> str:
        from prs.plots import SMOKE_NOTE

        word = {True: "held", False: "did not hold", None: "could not be tested"}[self.held]
        note = f" *(profile `{profile}`: {SMOKE_NOTE}.)*" if profile == "smoke" else f" *(profile `{profile}`.)*"
        return f"**In this run the paper's claim {word}.** {self.sentence}{note}"


def _advantage(table: Iterable[Mapping], model: str, reference: str, value: str) -> tuple[list, list]:
    """Ratios where both ran, and model mean - reference mean at each (rows matched on "label")."""
    means = {(s["label"], s["ratio"]): s["mean"] for s in summarize(table, by=("label", "ratio"), value=value)}
    ratios = sorted({r for (lbl, r) in means if lbl == model} & {r for (lbl, r) in means if lbl == reference})
    if not ratios:
        raise UserError(f"crossover_ratio: no data ratio has results for both '{model}' and '{reference}'")
    return ratios, [means[(model, r)] - means[(reference, r)] for r in ratios]


def crossover_ratio(table: Iterable[Mapping], model: str, reference: str, value: str = "top1") -> float | None:
    """The data ratio at which `model` overtakes `reference` (mean over seeds of `value`), or None.

    Uses the ratios where both were run. The crossover is where `model` gets strictly ahead and
    stays ahead at every larger ratio; between the last ratio where it was not ahead and the first
    where it is, it is interpolated linearly in log(ratio). A model ahead at every ratio returns the
    smallest ratio (the crossover lies at or below it); one not ahead at the largest ratio, None.
    Rows are matched on their "label".
    """
    ratios, diff = _advantage(table, model, reference, value)
    if diff[-1] <= 0:
        return None
    i = len(diff) - 1
    while i > 0 and diff[i - 1] > 0:
        i -= 1
    if i == 0:
        return ratios[0]
    lo, hi = math.log(ratios[i - 1]), math.log(ratios[i])
    frac = (0.0 - diff[i - 1]) / (diff[i] - diff[i - 1])
    return math.exp(lo + frac * (hi - lo))


def crossover_text(table: Iterable[Mapping], model: str, reference: str, value: str = "top1") -> str:
    """"≈ 32%", "≤ 5%" (ahead at every ratio) or "never (up to 100%)"."""
    ratios, diff = _advantage(table, model, reference, value)
    if diff[-1] <= 0:
        return f"never (up to {ratios[-1]:.0%})"
    if all(d > 0 for d in diff):
        return f"≤ {ratios[0]:.0%}"
    return f"≈ {crossover_ratio(table, model, reference, value):.0%}"


def data_scale_verdict(table: Sequence[Mapping], models_by_bias: Sequence[str], reference: str) -> Verdict:
    """Claim 1: ordered from least to most convolution-like, the crossover ratios do not increase.

    A model that never overtakes the reference counts as crossing at infinity. With no crossover
    at all the claim cannot be tested.
    """
    crossings = {m: crossover_ratio(table, m, reference) for m in models_by_bias}
    ratios = sorted({row["ratio"] for row in table})
    shown = ", ".join(f"{m}: {crossover_text(table, m, reference)}" for m in models_by_bias)
    if all(c is None for c in crossings.values()):
        return Verdict(PAPER_CLAIMS["01_data_scale"], None,
                       f"No ViT-like model overtook {reference} at any data ratio up to {ratios[-1]:.0%}, so there "
                       f"is no crossover to compare ({shown}).")
    inf = float("inf")
    as_number = [inf if crossings[m] is None else crossings[m] for m in models_by_bias]
    held = all(b <= a for a, b in zip(as_number, as_number[1:]))
    order = " → ".join(models_by_bias)
    trend = "never increased" if held else "did not always decrease"
    return Verdict(PAPER_CLAIMS["01_data_scale"], held,
                   f"The data ratio at which each model overtook {reference} ({shown}) {trend} from the least to the "
                   f"most convolution-like model ({order}).")


def fourier_verdict(summary_by_ratio: Mapping[float, Mapping[str, float]], cnn: str, vit: str) -> Verdict:
    """Claim 2 as Park & Kim state it: the CNN keeps more high-frequency amplitude than the ViT.

    summary_by_ratio: {ratio: {label: high_freq_summary}}. Held when true at every ratio.
    """
    ratios = sorted(summary_by_ratio)
    wins = [r for r in ratios if summary_by_ratio[r][cnn] > summary_by_ratio[r][vit]]
    largest = ratios[-1]
    values = (f"mean ΔF at the highest frequency at {largest:.0%} of the data: {cnn} "
              f"{summary_by_ratio[largest][cnn]:.2f}, {vit} {summary_by_ratio[largest][vit]:.2f}")
    held = len(wins) == len(ratios)
    return Verdict(PAPER_CLAIMS["02_fourier"], held,
                   f"{cnn}'s feature maps kept more high-frequency amplitude than {vit}'s at {len(wins)} of "
                   f"{len(ratios)} data ratios ({values}); the convolution-vs-self-attention contrast the paper "
                   f"builds on {'was' if held else 'was not'} seen at every data scale.")


def interpolation_positions(summary_by_epoch: Mapping[int | None, float], vit_summary: float) -> dict:
    """Where each switch epoch E puts the hybrid between its CNN end (never) and the ViT: 0 = CNN, 1 = ViT."""
    cnn = summary_by_epoch[None]
    span = vit_summary - cnn
    if span == 0:
        return {e: math.nan for e in summary_by_epoch}
    return {e: (s - cnn) / span for e, s in summary_by_epoch.items()}


def interpolation_verdict(summary_by_epoch: Mapping[int | None, float], vit_summary: float) -> Verdict:
    """Claim 3: the earlier the switch, the closer the hybrid's Fourier summary to the ViT's.

    Held when the ViT sits on the low-pass side of the CNN, the positions (see
    `interpolation_positions`) do not increase with E, and the earliest switch moved towards the ViT.
    """
    claim = PAPER_CLAIMS["03_interpolation"]
    pos = interpolation_positions(summary_by_epoch, vit_summary)
    order = sorted((e for e in pos if e is not None))
    shown = ", ".join(f"E={e}: {pos[e]:.0%}" for e in order)
    if not vit_summary < summary_by_epoch[None]:
        return Verdict(claim, None,
                       f"The ViT kept at least as much high-frequency amplitude as the CNN "
                       f"({vit_summary:.2f} vs {summary_by_epoch[None]:.2f}), so there is no CNN-to-ViT direction "
                       f"to interpolate along.")
    seq = [pos[e] for e in order] + [0.0]
    held = all(b <= a for a, b in zip(seq, seq[1:])) and bool(order) and pos[order[0]] > 0
    return Verdict(claim, held,
                   f"Measured as the fraction of the way from the CNN's to the ViT's mean high-frequency ΔF, the "
                   f"hybrid sat at {shown} (never: 0%); this {'decreases' if held else 'does not decrease'} "
                   f"steadily as the switch comes later.")


def prs_verdict(summary: Sequence[Mapping], prs_label: str = "prs") -> Verdict:
    """Claim 4: PRS's mean top-1 is above every other entry's.

    summary: rows of `summarize(rows, by=("label",))`. The gap to the best other entry is compared
    with its standard error when both have at least two seeds.
    """
    by_label = {s["label"]: s for s in summary}
    if prs_label not in by_label:
        raise UserError(f"prs_verdict: no entry '{prs_label}' in the summary; labels: {', '.join(by_label)}")
    prs = by_label[prs_label]
    others = [s for s in summary if s["label"] != prs_label]
    if not others:
        raise UserError("prs_verdict: nothing to compare PRS with")
    best = max(others, key=lambda s: s["mean"])
    gap = prs["mean"] - best["mean"]
    held = gap > 0
    if prs["std"] is not None and best["std"] is not None:
        se = math.sqrt(prs["std"] ** 2 / prs["n"] + best["std"] ** 2 / best["n"])
        noise = (f"the gap is {abs(gap) / se:.1f} standard errors" if se > 0 else "the seeds agree exactly")
    else:
        noise = "with a single seed the gap cannot be told apart from seed-to-seed noise"
    side = "above" if held else "not above"
    return Verdict(PAPER_CLAIMS["04_prs_cifar100"], held,
                   f"PRS reached {format_mean_std(prs['mean'], prs['std'], 2)} % top-1 over {prs['n']} seed(s), "
                   f"{side} the best other entry, {best['label']} ({format_mean_std(best['mean'], best['std'], 2)} %), "
                   f"by {gap:+.2f} points; {noise}.")


# ----------------------------------------------------------------------------- notebook tables


def show(markdown: str, caption: str | None = None) -> None:
    """Display Markdown in a notebook, with the provenance caption in italics below it."""
    from IPython.display import Markdown, display

    display(Markdown(markdown + (f"\n\n*{caption}*" if caption else "")))


def data_percent(ratio: float) -> str:
    return f"{ratio:.0%} of the data"


def vit_like(params: Mapping) -> list[str]:
    """The data-scale models other than the reference, least to most convolution-like (profile order)."""
    return [m for m in params["models"] if m != params["reference"]]


def crossover_rows(table: Sequence[Mapping], params: Mapping) -> list[dict]:
    return [{"model": m, "crossover": crossover_text(table, m, params["reference"])} for m in vit_like(params)]


def interpolation_summary(params: Mapping, table: Sequence[Mapping], curves: Mapping[tuple, dict]) -> dict:
    """For the interpolation notebook: high-frequency summaries by switch epoch and of the ViT, and
    table rows (switch, top-1, s, t; the hybrid's rows also carry their switch_epoch)."""
    by_epoch = {e: high_freq_summary(curves[(switch_label(e),)]) for e in params["switch_epochs"]}
    vit = high_freq_summary(curves[(params["vit_model"],)])
    position = interpolation_positions(by_epoch, vit)
    accuracy = {s["label"]: s for s in summarize(table, by=("label",))}
    entries = [(switch_label(e), by_epoch[e], position[e]) for e in params["switch_epochs"]]
    entries.append((params["vit_model"], vit, 1.0))
    # round(t, 2) + 0.0 turns -0.0 into 0.0, so the table never shows "-0%"
    rows = [{"switch": label, "top1": format_mean_std(accuracy[label]["mean"], accuracy[label]["std"]),
             "s": s, "t": f"{round(t, 2) + 0.0:.0%}",
             "top1_mean": accuracy[label]["mean"], "top1_std": accuracy[label]["std"]} for label, s, t in entries]
    # the hybrid rows say their epoch, so prs.plots can place them without knowing switch_label's wording
    for row, epoch in zip(rows, params["switch_epochs"]):
        row["switch_epoch"] = epoch
    return {"by_epoch": by_epoch, "vit": vit, "rows": rows}


def prs_rows(table: Sequence[Mapping], prs_label: str = "prs") -> list[dict]:
    """The PRS notebook's table: per entry top-1 and top-5 (mean ± std), seeds, and the paper's column.

    The abstract claims PRS is best on CIFAR-100 and gives no number, so every paper value is unknown.
    """
    top1 = summarize(table, by=("label",))
    top5 = {s["label"]: s for s in summarize(table, by=("label",), value="top5")}
    what = {row["label"]: (row["model"], row["schedule"]) for row in table}
    return [{"entry": s["label"], "model": what[s["label"]][0], "schedule": what[s["label"]][1],
             "top1": format_mean_std(s["mean"], s["std"], 2),
             "top5": format_mean_std(top5[s["label"]]["mean"], top5[s["label"]]["std"], 2), "n": s["n"],
             "paper": "best of all (no number given)" if s["label"] == prs_label else "unknown"} for s in top1]


PRS_COLUMNS = {"entry": "entry", "model": "model", "schedule": "schedule", "top1": "top-1 (%)",
               "top5": "top-5 (%)", "n": "seeds", "paper": "paper (abstract)"}


# ----------------------------------------------------------------------------- provenance


def provenance(params: Mapping, results: Sequence[Mapping] = ()) -> str:
    """The caption line every figure and table carries: profile, dataset, seeds, commit(s)."""
    from prs.plots import provenance_caption

    commits = sorted({r["commit"] for r in results}) or ["not run"]
    return provenance_caption(params["profile"], params["dataset"], params["seeds"], "+".join(commits),
                              smoke=is_smoke(params))
