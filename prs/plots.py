"""Every figure of the book, in plain matplotlib.

Each function draws into `ax` (a new figure when None) and returns the Axes (or the Figure for
figure-level helpers); none calls plt.show(), so they work under the Agg backend and in notebooks.
Inputs are plain data (lists/dicts), as written by `prs.fourier.fourier_curves` and the trainer.

Importing this module applies the book's style (`use_book_style`): figures at 150 dpi, fonts sized for
the width at which the book shows them, and a property cycle in which every line differs from the
others in colour, line style and (hollow) marker, so that curves that coincide stay visible.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Iterable, Mapping, Sequence

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
from cycler import cycler
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import offset_copy

from prs.errors import UserError

DEPTH_CMAP = "viridis"
ATTENTION_SHADE = "0.6"  # grey, as Park & Kim shade self-attention blocks
DOWNSAMPLE_COLOR = "tab:blue"  # Park & Kim mark subsampling layers in blue
SMOKE_NOTE = "pipeline check — not evidence about the paper"
ACCURACY_LABEL = "top-1 accuracy (%)"

# ---------------------------------------------------------------- the book's style
#
# The book shows a figure's PNG at its natural size, or shrunk to the article column when wider: at
# most PAGE_WIDTH_PX CSS pixels (measured: sphinx-book-theme in a 1280-pixel window; 96 CSS pixels to
# the inch).
# A figure w inches wide saved at DPI therefore shows at min(w * DPI, PAGE_WIDTH_PX) pixels, and text
# of s points in it reads as s * shown / (96 * w) points (`rendered_points`). With these sizes a figure
# up to MAX_FIGURE_WIDTH_IN wide keeps tick labels >= 9 pt and the provenance caption >= 8 pt on the
# page; narrower figures show them larger. `panel_grid` keeps figures within that width.
#
# Lines differ in colour, dash pattern and marker shape, and get thinner with smaller markers along the
# cycle, so that a curve drawn over an identical one leaves it visible around its own.

DPI = 150
PAGE_WIDTH_PX = 688
MAX_FIGURE_WIDTH_IN = 8.0
CAPTION_SIZE = 9.5
LINE_STYLES = cycler(color=["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown",
                            "tab:pink", "tab:olive"]) \
    + cycler(linestyle=["-", "--", "-.", ":", (0, (6, 2)), (0, (4, 1, 1, 1, 1, 1)), (0, (1, 1)), (0, (8, 2, 2, 2))]) \
    + cycler(marker=["o", "s", "^", "D", "P", "X", "h", "*"]) \
    + cycler(markersize=[9.0, 7.5, 6.0, 4.5] * 2) \
    + cycler(linewidth=[2.4, 1.9, 1.5, 1.2] * 2)
BOOK_STYLE = {
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
    "font.size": 11.5,
    "axes.titlesize": 13.0,
    "axes.labelsize": 12.0,
    "xtick.labelsize": 11.0,
    "ytick.labelsize": 11.0,
    "legend.fontsize": 10.5,
    "figure.titlesize": 13.0,
    "axes.prop_cycle": LINE_STYLES,
    "lines.markeredgewidth": 1.4,
    "lines.markerfacecolor": "none",  # hollow: a marker under another of a different shape shows
    "legend.framealpha": 0.9,
    "axes.grid": True,
    "grid.color": "0.88",
    "grid.linewidth": 0.6,
}


def use_book_style() -> None:
    """Apply BOOK_STYLE to matplotlib's rcParams (done when this module is imported)."""
    mpl.rcParams.update(BOOK_STYLE)


def rendered_points(size_pt: float, figure_width_in: float, dpi: float = DPI,
                    page_width_px: float = PAGE_WIDTH_PX) -> float:
    """The size, in points on the book's page, of text set at `size_pt` in a figure this wide."""
    shown_px = min(figure_width_in * dpi, page_width_px)
    return size_pt * shown_px / (96.0 * figure_width_in)


use_book_style()


def _new_axes(ax, figsize=(5.0, 3.5)):
    if ax is None:
        _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def _legend(ax, handles=None):
    """A legend below the axes, under the tick labels and the x label, in as many columns as fit the
    axes' width, so that it hides no data. Call it after the x labels are set."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    box = ax.get_window_extent(renderer)
    decorations = [bbox for bbox in (ax.xaxis.get_tightbbox(renderer),) if bbox is not None]
    below = max([box.y0 - bbox.y0 for bbox in decorations] + [0.0])
    anchor = offset_copy(ax.transAxes, fig=fig, x=0.0, y=-(below * 72.0 / fig.dpi + 2.0), units="points")
    handles = ax.get_legend_handles_labels()[0] if handles is None else handles
    for ncols in range(len(handles), 0, -1):
        legend = ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), bbox_transform=anchor,
                           borderaxespad=0.0, ncols=ncols, frameon=False, columnspacing=1.2, handlelength=2.8)
        if ncols == 1 or legend.get_window_extent(renderer).width <= 1.1 * box.width:
            break
    return legend


def panel_grid(n: int, ncols: int = 2, panel: tuple[float, float] = (5.0, 3.5)):
    """A figure of n panels, `ncols` per row; unused panels are hidden. Returns (figure, list of n axes).

    Panels are `panel` inches (width, height), narrowed when a row would be wider than the page
    (MAX_FIGURE_WIDTH_IN): the book would shrink the whole figure, text included.
    """
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    width = min(panel[0] * ncols, MAX_FIGURE_WIDTH_IN)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, panel[1] * nrows), layout="constrained",
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
        ax.plot(freqs, delta_f, color=cmap(norm(depth)), linestyle="-", marker=".", markersize=3, linewidth=1.2)
    ax.figure.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="normalised depth")
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("frequency (× π)")
    ax.set_ylabel("Δ log amplitude")
    if title:
        ax.set_title(title)
    return ax


def _attention_spans(depth: Sequence[float], kinds: Sequence[str]) -> list[tuple[float, float, str]]:
    """(start, end, kind) in normalised depth for each attention or mixed block."""
    half = 0.5 / max(len(depth) - 1, 1)
    return [(d - half, d + half, kind) for d, kind in zip(depth, kinds) if kind in ("attention", "mixed")]


def _span_style(kind: str, alpha: float) -> dict:
    return {"alpha": alpha if kind == "attention" else alpha * 0.4, "hatch": None if kind == "attention" else "//",
            "linewidth": 0, "zorder": 0}


def plot_high_freq_vs_depth(curves_by_label: Mapping[str, dict], ax=None):
    """dF at the highest frequency against normalised depth, one line per model.

    Attention blocks are shaded grey (mixed blocks lighter and hatched) when every line has them at
    the same depths (the same model at several data ratios); otherwise a strip under the curves, one
    row per model that has any, in that model's colour, marks them, so that shading never suggests
    attention in a model without it. Blocks that reduce resolution (strided blocks, patch embeddings)
    are marked with blue triangles. The legend sits to the right of the axes.
    """
    if not curves_by_label:
        raise UserError("curves_by_label is empty: pass {label: fourier_curves(...)} for at least one model")
    ax = _new_axes(ax)
    any_downsample = False
    spans, colors = {}, {}
    for label, curves in curves_by_label.items():
        _require(curves, ("depth", "high_freq", "kinds"), f"curves of {label!r}")
        depth, high, kinds = curves["depth"], curves["high_freq"], curves["kinds"]
        downsample = curves.get("downsample", [k in ("downsample", "embed") for k in kinds])
        (line,) = ax.plot(depth, high, label=label)
        colors[label], spans[label] = line.get_color(), _attention_spans(depth, kinds)
        marked = [(d, h) for d, h, s in zip(depth, high, downsample) if s]
        if marked:
            xs, ys = zip(*marked)
            ax.scatter(xs, ys, marker="v", s=60, facecolors="none", edgecolors=DOWNSAMPLE_COLOR, linewidths=1.4,
                       zorder=3)
        any_downsample |= bool(marked)
    handles, _ = ax.get_legend_handles_labels()
    layouts = {tuple(v) for v in spans.values()}
    if len(layouts) == 1 and spans[label]:  # every line has the same attention blocks: shade them
        for start, end, kind in spans[label]:
            ax.axvspan(start, end, color=ATTENTION_SHADE, **_span_style(kind, 0.3))
        handles.append(Patch(color=ATTENTION_SHADE, alpha=0.3, label="attention block"))
    elif any(spans.values()):  # lines differ: a strip per model with attention, below the curves
        rows = [label for label in spans if spans[label]]
        height, gap = 0.03, 0.012
        for i, label in enumerate(rows):
            bottom = gap + i * (height + gap)
            for start, end, kind in spans[label]:
                ax.axvspan(start, end, ymin=bottom, ymax=bottom + height, color=colors[label],
                           **_span_style(kind, 0.8))
        strip = gap + len(rows) * (height + gap)  # axes fraction the strips take; keep the data above it
        low, high = ax.get_ylim()
        ax.set_ylim(low - (high - low) * (strip + gap) / (1 - strip - gap), high)
        handles.append(Patch(facecolor="0.4", alpha=0.8, label="attention block"))
    if any_downsample:
        handles.append(Line2D([], [], linestyle="none", marker="v", markersize=8, markerfacecolor="none",
                              markeredgecolor=DOWNSAMPLE_COLOR, markeredgewidth=1.4, label="downsampling"))
    ax.set_xlim(-0.05, 1.05)
    ax.set_xlabel("normalised depth")
    ax.set_ylabel("Δ log amplitude at highest frequency")
    _legend(ax, handles)
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
        ax.errorbar(ratios, means, yerr=stds, capsize=3, label=model)
    ax.set_xscale("log")
    ax.set_xlabel("fraction of training data")
    ax.set_ylabel(ACCURACY_LABEL)
    _legend(ax)
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
    ax.errorbar(xs, [r["top1_mean"] for r in hybrid], yerr=[r["top1_std"] or 0.0 for r in hybrid], capsize=3,
                label=params["hybrid_model"])
    ax.axhline(vit["top1_mean"], color="0.4", linestyle="--", label=params["vit_model"])
    ax.set_xticks(xs, ["never" if e is None else str(e) for e in epochs])
    ax.set_xlabel("switch epoch E")
    ax.set_ylabel(f"test {ACCURACY_LABEL}")
    _legend(ax)
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
    (line,) = ax.plot(range(len(names)), values, label=label)
    never = [i for i, e in enumerate(switch_epochs.values()) if e is None]
    if never:
        ax.scatter(never, [epochs] * len(never), marker="x", s=60, color=line.get_color(), zorder=3)
    if not any(existing.get_gid() == "end-of-training" for existing in ax.get_lines()):
        ax.axhline(epochs, color="0.4", linestyle="--", linewidth=1.0, marker="", gid="end-of-training",
                   label="end of training (× = never switches)")
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right")
    ax.set_ylim(-0.06 * epochs, 1.06 * epochs)  # room for the markers at 0 and at the end
    ax.set_xlabel("layer (input → output)")
    ax.set_ylabel("switch epoch")
    _legend(ax)
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
    for i, (label, history) in enumerate(histories.items()):
        points = []
        for entry in history:
            _require(entry, ("epoch",), f"history of {label!r}")
            if entry.get("test_top1") is not None:
                points.append((entry["epoch"], entry["test_top1"]))
        xs, ys = zip(*points) if points else ((), ())
        # about a dozen markers per line, staggered between lines so that coinciding runs show both
        step = max(1, len(xs) // 12)
        (line,) = ax.plot(xs, ys, label=label, markevery=(i % step, step))
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
            ax.axvline(epoch, color=color, linestyle=":", linewidth=1, marker="")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"test {ACCURACY_LABEL}")
    _legend(ax)
    return ax


MECHANISM_PANELS = {
    "top1_gap": "collapse gap (top-1 points)",
    "gate": "mean gate g (1 = the convolution)",
    "content_distance": "content attention distance (px)",
    "qk_moved": "q/k change since the switch (relative)",
}


def plot_mechanism_over_epochs(series_by_label: Mapping[str, Mapping[str, Sequence]], axes=None):
    """Four panels over epochs, one line per run: the collapse gap (what the model loses when its
    switched layers are put back to their convolutions), the mean gate, how far content attention
    looks, and how far q/k moved since the switch. `series_by_label`: {label: mechanism_series}.
    Runs that never switched (no epochs) are left out. Returns the axes."""
    if not series_by_label:
        raise UserError("series_by_label is empty: pass {label: prs.diagnostics.mechanism_series(history)}")
    if axes is None:
        _, axes = panel_grid(len(MECHANISM_PANELS), ncols=2, panel=(4.2, 3.0))
    for (key, title), ax in zip(MECHANISM_PANELS.items(), axes):
        for i, (label, series) in enumerate(series_by_label.items()):
            _require(series, ("epoch", key), f"series of {label!r}")
            points = [(e, v) for e, v in zip(series["epoch"], series[key]) if v is not None]
            xs, ys = zip(*points) if points else ((), ())
            ax.plot(xs, ys, label=label, markevery=(i % 3, 3) if len(xs) > 12 else None)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if key == "top1_gap":
            ax.axhline(0.0, color="0.4", linewidth=0.8, marker="")
    handles = axes[0].get_legend_handles_labels()[0]
    # Above the panels: the provenance caption (add_provenance) takes the strip below them.
    axes[0].figure.legend(handles=handles, loc="outside upper center", ncols=min(len(handles), 4), frameon=False)
    return axes


# ---------------------------------------------------------------- provenance


def provenance_caption(profile: str, dataset: str, seeds, commit: str, smoke: bool) -> str:
    """One line saying where a figure's numbers came from."""
    seed_list = [seeds] if isinstance(seeds, int) else list(seeds)
    text = f"profile: {profile} · dataset: {dataset} · seeds: {', '.join(map(str, seed_list))} · commit: {commit}"
    return f"{text} · {SMOKE_NOTE}" if smoke else text


def add_provenance(fig, text: str):
    """Write `text` below the axes of `fig` (CAPTION_SIZE, dark grey, wrapped to the figure's width)
    and make room for it.

    Call once per figure, when it is otherwise finished (a later fig.tight_layout() would undo the room).
    """
    caption = fig.text(0.5, 0.005, text, ha="center", va="bottom", fontsize=CAPTION_SIZE, color="0.2",
                       wrap=True, gid="provenance")
    renderer = fig.canvas.get_renderer()
    caption_top = caption.get_window_extent(renderer).y1 / fig.bbox.height
    engine = fig.get_layout_engine()
    if engine is not None and "rect" in engine.get():
        # constrained/tight layout: keep the axes out of a strip as high as the caption (plus a margin)
        height = caption_top + 0.04 / fig.get_figheight()
        engine.set(rect=(0.0, height, 1.0, 1.0 - height))
        return fig
    # no layout engine: measure how far the lowest axes decoration reaches into the caption, lift the axes
    lowest = min((ax.get_tightbbox(renderer).y0 / fig.bbox.height for ax in fig.axes), default=1.0)
    overlap = caption_top + 0.01 - lowest
    if overlap > 0:
        fig.subplots_adjust(bottom=min(fig.subplotpars.bottom + overlap, 0.5))
    return fig
