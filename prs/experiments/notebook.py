"""What the notebooks call besides grids and verdicts: Colab set-up, display, captions, and their tables."""

from __future__ import annotations

from typing import Mapping, Sequence

from prs import diagnostics
from prs.experiments.grids import switch_label
from prs.experiments.spectra import fourier_summary_rows, high_freq_summary
from prs.experiments.tables import format_mean_std, results_table, summarize
from prs.experiments.verdicts import Verdict, crossover_text, interpolation_positions, negative_control_verdict


def keep_runs_on_drive(params: dict, folder: str = "/content/drive/MyDrive/prs-runs") -> dict:
    """On Colab: mount Google Drive and keep the profile's runs there, where a new session resumes them."""
    from google.colab import drive

    drive.mount("/content/drive")
    params["run_root"] = f"{folder}/{params['profile']}"
    return params


def show(markdown: str, caption: str | None = None) -> None:
    """Display Markdown in a notebook, with the provenance caption in italics below it."""
    from IPython.display import Markdown, display

    display(Markdown(markdown + (f"\n\n*{caption}*" if caption else "")))


def provenance(params: Mapping, results: Sequence[Mapping] = ()) -> str:
    """The caption line every figure and table carries: profile, dataset, seeds, commit(s)."""
    from prs.plots import provenance_caption

    from prs.experiments.labels import run_label

    commits = sorted({r["commit"] for r in results}) or ["not run"]
    label = run_label(params)
    profile = f"{params['profile']} (relabelled by what ran: {label.name})" if label.disagrees else params["profile"]
    return provenance_caption(profile, params["dataset"], params["seeds"], "+".join(commits),
                              smoke=label.is_pipeline_check)


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
    """The PRS notebook's table: per entry top-1 and top-5 (mean ± std), seeds, what it costs
    (parameters, training GFLOP per image at the end of the run, measured images/s, training hours
    over all seeds: `costs.cost_columns`), a published from-scratch top-1 of the same model where one is
    on record (`expected.yaml`; other recipes), and the paper's column.

    The abstract claims PRS is best on CIFAR-100 and gives no number, so every paper value is unknown.
    """
    from prs.experiments.costs import cost_columns
    from prs.experiments.expected import published_top1

    top1 = summarize(table, by=("label",))
    top5 = {s["label"]: s for s in summarize(table, by=("label",), value="top5")}
    what = {row["label"]: (row["model"], row["schedule"]) for row in table}
    return [{"entry": s["label"], "model": what[s["label"]][0], "schedule": what[s["label"]][1],
             "top1": format_mean_std(s["mean"], s["std"], 2),
             "top5": format_mean_std(top5[s["label"]]["mean"], top5[s["label"]]["std"], 2), "n": s["n"],
             **cost_columns([row for row in table if row["label"] == s["label"]]),
             "published": published_top1(what[s["label"]][0]),
             "paper": "best of all (no number given)" if s["label"] == prs_label else "unknown"} for s in top1]


PRS_COLUMNS = {"entry": "entry", "model": "model", "schedule": "schedule", "top1": "top-1 (%)",
               "top5": "top-5 (%)", "n": "seeds", "params_m": "parameters (M)", "gflops": "training GFLOP/image",
               "img_per_s": "images/s", "train_hours": "training hours (all seeds)",
               "published": "published from scratch (%, other recipes)", "paper": "paper (abstract)"}


def interpolation_seed_values(params: Mapping, curves_by_label_seed: Mapping[tuple, dict]) -> tuple[dict, list]:
    """For the interpolation verdict: {switch epoch: per-seed Fourier summaries at the common
    frequency} and the ViT's, from `fourier_by_group(results, images, by=("label", "seed"))`."""
    rows = fourier_summary_rows(curves_by_label_seed, fields=("label", "seed"))
    values = {s["label"]: s["values"] for s in summarize(rows, by=("label",), value="summary")}
    return {e: values[switch_label(e)] for e in params["switch_epochs"]}, values[params["vit_model"]]


def control_verdict(control_results: Sequence[Mapping]) -> Verdict | None:
    """The negative control's verdict from its runs (`split_control`), or None where the profile has none."""
    if not control_results:
        return None
    values = {s["label"]: s["values"] for s in summarize(results_table(control_results), by=("label",))}
    return negative_control_verdict(values["control A"], values["control B"], names=("control B", "control A"))


MECHANISM_COLUMNS = {"label": "run", "epoch": "epoch", "top1_gap": "collapse gap (top-1 points)",
                     "logit_change": "logit change", "gate": "mean gate", "content_distance": "content distance (px)",
                     "qk_moved": "q/k moved"}


def mechanism_by_label(results: Sequence[Mapping], seed: int) -> dict[str, dict]:
    """{label: diagnostics.mechanism_series(history)} for the runs of `seed` that switched layers."""
    return {r["key"]["label"]: diagnostics.mechanism_series(r["history"]) for r in results
            if r["key"]["seed"] == seed and any("mechanism" in row for row in r["history"])}


def mechanism_rows(series_by_label: Mapping[str, Mapping]) -> list[dict]:
    """A table row per run: its mechanism diagnostics after the last epoch."""
    return [{"label": label, **{key: series[key][-1] for key in ("epoch", *diagnostics.MECHANISM_SERIES)}}
            for label, series in series_by_label.items()]
