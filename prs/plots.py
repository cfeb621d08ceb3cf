"""Every figure of the book, in plain matplotlib.

Each function draws into `ax` (a new figure when None) and returns the Axes (or the Figure for
figure-level helpers); none calls plt.show(), so they work under the Agg backend and in notebooks.
Inputs are plain data (lists/dicts), as written by `prs.fourier.fourier_curves` and the trainer.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Iterable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from prs.errors import UserError

DEPTH_CMAP = "viridis"
ATTENTION_SHADE = "0.6"  # grey, as Park & Kim shade self-attention blocks
DOWNSAMPLE_COLOR = "tab:blue"  # Park & Kim mark subsampling layers in blue
SMOKE_NOTE = "pipeline check — not evidence about the paper"


def _new_axes(ax, figsize=(5.0, 3.5)):
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def panel_grid(n: int, ncols: int = 2, panel: tuple[float, float] = (5.0, 3.5)):
    """A figure of n panels, `ncols` per row (a book page is about 10 inches wide); unused panels
    are hidden. Returns (figure, list of n axes)."""
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel[0] * ncols, panel[1] * nrows), layout="constrained",
                             squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _require(row: Mapping, keys: Sequence[str], what: str) -> None:
    missing = [k for k in keys if k not in row]
    if missing:
        raise UserError(f"{what} entry {dict(row)!r} lacks {missing}: every entry needs keys {list(keys)}")


# ---------------------------------------------------------------- Fourier analysis


def plot_relative_log_amplitude(curves: dict, ax=None, title: str | None = None):
    """dF against normalised frequency, one curve per block, coloured by normalised depth."""
    _require(curves, ("freqs", "delta_f", "depth"), "curves")
    ax = _new_axes(ax)
    cmap = plt.get_cmap(DEPTH_CMAP)
    norm = Normalize(0.0, 1.0)
    for freqs, delta_f, depth in zip(curves["freqs"], curves["delta_f"], curves["depth"]):
        ax.plot(freqs, delta_f, color=cmap(norm(depth)), marker=".", markersize=3, linewidth=1.2)
    ax.figure.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="normalised depth")
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("frequency (× π)")
    ax.set_ylabel("Δ log amplitude")
    if title:
        ax.set_title(title)
    return ax


def _shade_blocks(ax, depth: Sequence[float], kinds: Sequence[str]) -> None:
    half = 0.5 / max(len(depth) - 1, 1)
    for d, kind in zip(depth, kinds):
        if kind in ("attention", "mixed"):
            ax.axvspan(d - half, d + half, color=ATTENTION_SHADE, alpha=0.3 if kind == "attention" else 0.12,
                       hatch=None if kind == "attention" else "//", linewidth=0)


def plot_high_freq_vs_depth(curves_by_label: Mapping[str, dict], ax=None):
    """dF at the highest frequency against normalised depth, one line per model.

    Attention blocks are shaded grey (mixed blocks lighter and hatched); blocks that reduce
    resolution (strided blocks, patch embeddings) are marked with blue triangles.
    """
    if not curves_by_label:
        raise UserError("curves_by_label is empty: pass {label: fourier_curves(...)} for at least one model")
    ax = _new_axes(ax)
    any_attention = any_downsample = False
    for label, curves in curves_by_label.items():
        _require(curves, ("depth", "high_freq", "kinds"), f"curves of {label!r}")
        depth, high, kinds = curves["depth"], curves["high_freq"], curves["kinds"]
        downsample = curves.get("downsample", [k in ("downsample", "embed") for k in kinds])
        _shade_blocks(ax, depth, kinds)
        ax.plot(depth, high, marker="o", markersize=3, label=label)
        marked = [(d, h) for d, h, s in zip(depth, high, downsample) if s]
        if marked:
            xs, ys = zip(*marked)
            ax.scatter(xs, ys, marker="v", s=45, facecolors="none", edgecolors=DOWNSAMPLE_COLOR, zorder=3)
        any_attention |= any(k in ("attention", "mixed") for k in kinds)
        any_downsample |= bool(marked)
    handles, _ = ax.get_legend_handles_labels()
    if any_attention:
        handles.append(Patch(color=ATTENTION_SHADE, alpha=0.3, label="attention block"))
    if any_downsample:
        handles.append(Line2D([], [], linestyle="none", marker="v", markerfacecolor="none",
                              markeredgecolor=DOWNSAMPLE_COLOR, label="downsampling"))
    ax.legend(handles=handles, fontsize="small")
    ax.set_xlim(-0.05, 1.05)
    ax.set_xlabel("normalised depth")
    ax.set_ylabel("Δ log amplitude at highest frequency")
    return ax


# ---------------------------------------------------------------- training results


def _rows(table) -> list[Mapping]:
    return list(table.to_dict("records")) if hasattr(table, "to_dict") else list(table)


def plot_accuracy_vs_ratio(table: Iterable[Mapping], ax=None):
    """Top-1 against data ratio (log x), one line per model: mean over seeds ± sample std (n - 1).

    Rows: {"model", "ratio", "top1", ...}. A point with a single seed has no error bar.
    """
    rows = _rows(table)
    if not rows:
        raise UserError("table is empty: pass rows {'model', 'ratio', 'top1'}")
    grouped: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        _require(row, ("model", "ratio", "top1"), "table")
        grouped[row["model"]][float(row["ratio"])].append(float(row["top1"]))
    ax = _new_axes(ax)
    for model, by_ratio in grouped.items():
        ratios = sorted(by_ratio)
        means = [float(np.mean(by_ratio[r])) for r in ratios]
        stds = [float(np.std(by_ratio[r], ddof=1)) if len(by_ratio[r]) > 1 else 0.0 for r in ratios]
        ax.errorbar(ratios, means, yerr=stds, marker="o", markersize=4, capsize=3, label=model)
    ax.set_xscale("log")
    ax.set_xlabel("fraction of training data")
    ax.set_ylabel("top-1 accuracy")
    ax.legend(fontsize="small")
    return ax


def percent_ticks(ax, ratios: Sequence[float]) -> None:
    """Label a log-scaled ratio axis with the grid's ratios as percentages."""
    ax.set_xticks(list(ratios), [f"{r:.0%}" for r in ratios])
    ax.minorticks_off()


def plot_accuracy_vs_switch_epoch(params: Mapping, rows: Sequence[Mapping], ax=None):
    """Top-1 of the hybrid against its switch epoch E ("never" drawn at the end of training), with
    the ViT as a dashed line. rows: prs.experiments.interpolation_summary(...)["rows"]: one per
    switch epoch (with "switch_epoch") and the ViT's (its "switch" is params["vit_model"])."""
    by_epoch = {r["switch_epoch"]: r for r in rows if "switch_epoch" in r}
    vit = next(r for r in rows if r["switch"] == params["vit_model"])
    ax = _new_axes(ax, figsize=(5.5, 3.6))
    epochs = params["switch_epochs"]
    xs = [params["epochs"] if e is None else e for e in epochs]
    hybrid = [by_epoch[e] for e in epochs]
    ax.errorbar(xs, [r["top1_mean"] for r in hybrid], yerr=[r["top1_std"] or 0.0 for r in hybrid], marker="o",
                capsize=3, label=params["hybrid_model"])
    ax.axhline(vit["top1_mean"], color="0.5", linestyle="--", label=params["vit_model"])
    ax.set_xticks(xs, ["never" if e is None else str(e) for e in epochs])
    ax.set_xlabel("switch epoch E")
    ax.set_ylabel("test top-1 accuracy")
    ax.legend(fontsize="small")
    return ax


def plot_switch_schedule(switch_epochs: Mapping[str, int | None], epochs: int, ax=None, label: str | None = None):
    """Switch epoch of each layer, in depth order (the dict's order); None = never switches.

    Layers that never switch are drawn at `epochs` (the end of training) with an × marker.
    Call repeatedly on one Axes to compare schedules.
    """
    if not switch_epochs:
        raise UserError("switch_epochs is empty: pass {layer name: epoch or None} for at least one layer")
    ax = _new_axes(ax)
    names = list(switch_epochs)
    values = [epochs if e is None else e for e in switch_epochs.values()]
    (line,) = ax.plot(range(len(names)), values, marker="o", markersize=4, label=label)
    never = [i for i, e in enumerate(switch_epochs.values()) if e is None]
    if never:
        ax.scatter(never, [epochs] * len(never), marker="x", s=50, color=line.get_color(), zorder=3)
    if not any(existing.get_gid() == "end-of-training" for existing in ax.get_lines()):
        ax.axhline(epochs, color="0.5", linestyle="--", linewidth=0.8, gid="end-of-training",
                   label="end of training (× = never switches)")
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize="x-small")
    ax.set_ylim(bottom=0)
    ax.set_xlabel("layer (input → output)")
    ax.set_ylabel("switch epoch")
    ax.legend(fontsize="small")
    return ax


def plot_accuracy_vs_epoch(histories: Mapping[str, Sequence[Mapping]], switch_events=None, ax=None):
    """Test top-1 per epoch, one line per run; entries without "test_top1" (not evaluated) are skipped.

    switch_events: {label: [epochs]} drawn as dotted vertical lines in the run's colour, or a
    list of epochs drawn in grey for all runs.
    """
    if not histories:
        raise UserError("histories is empty: pass {label: [{'epoch', 'test_top1'}, ...]}")
    ax = _new_axes(ax)
    colors = {}
    for label, history in histories.items():
        points = []
        for entry in history:
            _require(entry, ("epoch",), f"history of {label!r}")
            if entry.get("test_top1") is not None:
                points.append((entry["epoch"], entry["test_top1"]))
        xs, ys = zip(*points) if points else ((), ())
        (line,) = ax.plot(xs, ys, label=label)
        colors[label] = line.get_color()
    if switch_events is not None:
        if isinstance(switch_events, Mapping):
            unknown = set(switch_events) - set(histories)
            if unknown:
                raise UserError(f"switch_events has labels {sorted(unknown)} not in histories: use the same labels")
            events = [(e, colors[label]) for label, epochs in switch_events.items() for e in epochs]
        else:
            events = [(e, "0.5") for e in switch_events]
        for epoch, color in events:
            ax.axvline(epoch, color=color, linestyle=":", linewidth=1)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test top-1 accuracy")
    ax.legend(fontsize="small")
    return ax


def plot_gate_diagnostics(diags: Sequence[Mapping], ax=None):
    """Per switched layer: gate σ(λ) and positional fraction (left axis, 0..1) and mean attention
    distance in pixels (right axis). None values leave a gap. Returns the left Axes."""
    if not diags:
        raise UserError("diags is empty: pass prs.reparam.layer_diagnostics(model) rows "
                        "{name, gate, attention_distance, positional_fraction}")
    for row in diags:
        _require(row, ("name", "gate", "attention_distance", "positional_fraction"), "diags")
    ax = _new_axes(ax, figsize=(6.0, 3.5))
    x = np.arange(len(diags))

    def column(key):
        return [math.nan if row[key] is None else float(row[key]) for row in diags]

    ax.plot(x, column("gate"), marker="o", label="gate σ(λ)")
    ax.plot(x, column("positional_fraction"), marker="s", label="positional fraction")
    ax.set_ylim(0.0, 1.05)
    ax.set_ylabel("fraction")
    ax.set_xticks(x, [row["name"] for row in diags], rotation=60, ha="right", fontsize="x-small")
    distance_ax = ax.twinx()
    distance_ax.plot(x, column("attention_distance"), marker="^", color="tab:red", label="attention distance")
    distance_ax.set_ylabel("mean attention distance (px)")
    distance_ax.set_ylim(bottom=0)
    handles = ax.get_legend_handles_labels()[0] + distance_ax.get_legend_handles_labels()[0]
    ax.legend(handles=handles, fontsize="small")
    return ax


# ---------------------------------------------------------------- provenance


def provenance_caption(profile: str, dataset: str, seeds, commit: str, smoke: bool) -> str:
    """One line saying where a figure's numbers came from."""
    seed_list = [seeds] if isinstance(seeds, int) else list(seeds)
    text = f"profile: {profile} · dataset: {dataset} · seeds: {', '.join(map(str, seed_list))} · commit: {commit}"
    return f"{text} · {SMOKE_NOTE}" if smoke else text


def add_provenance(fig, text: str):
    """Write `text` small at the bottom of `fig` and make room for it below the axes.

    Call once per figure, when it is otherwise finished (a later fig.tight_layout() would undo the room).
    """
    caption = fig.text(0.5, 0.005, text, ha="center", va="bottom", fontsize=7, color="0.35", gid="provenance")
    engine = fig.get_layout_engine()
    if engine is not None and "rect" in engine.get():
        # constrained/tight layout: keep the axes out of a strip one caption high (plus a margin)
        height = 0.14 / fig.get_figheight()
        engine.set(rect=(0.0, height, 1.0, 1.0 - height))
        return fig
    # no layout engine: measure how far the lowest axes decoration reaches into the caption, lift the axes
    renderer = fig.canvas.get_renderer()
    caption_top = caption.get_window_extent(renderer).y1 / fig.bbox.height
    lowest = min((ax.get_tightbbox(renderer).y0 / fig.bbox.height for ax in fig.axes), default=1.0)
    overlap = caption_top + 0.01 - lowest
    if overlap > 0:
        fig.subplots_adjust(bottom=min(fig.subplotpars.bottom + overlap, 0.5))
    return fig
