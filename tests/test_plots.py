"""prs.plots: every figure draws under Agg on small fake data, with the expected artists."""

import io
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402
from timm.models.vision_transformer import VisionTransformer  # noqa: E402

from prs import plots  # noqa: E402
from prs.errors import UserError  # noqa: E402
from prs.fourier import fourier_curves  # noqa: E402


@pytest.fixture(autouse=True)
def no_show_and_close(monkeypatch):
    def refuse_show(*args, **kwargs):
        raise AssertionError("plot functions must not call plt.show()")

    monkeypatch.setattr(plt, "show", refuse_show)
    yield
    plt.close("all")


def render(fig):
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    assert buffer.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"


def fake_curves(kinds, downsample=None):
    n = len(kinds)
    freqs = [list(np.linspace(0, 0.875, 8)) for _ in kinds]
    delta_f = [list(-0.5 * (i + 1) * np.asarray(f)) for i, f in enumerate(freqs)]
    return {
        "names": [f"block{i}" for i in range(n)],
        "kinds": list(kinds),
        "downsample": downsample if downsample is not None else [k in ("downsample", "embed") for k in kinds],
        "depth": [i / (n - 1) for i in range(n)],
        "freqs": freqs,
        "delta_f": delta_f,
        "high_freq": [d[-1] for d in delta_f],
        "sizes": [[16, 16]] * n,
    }


def legend_labels(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


# ---------------------------------------------------------------- Fourier figures


def test_relative_log_amplitude_one_curve_per_block_coloured_by_depth():
    curves = fake_curves(["conv", "conv", "downsample", "conv", "downsample"])
    ax = plots.plot_relative_log_amplitude(curves, title="tiny")
    lines = ax.get_lines()
    assert len(lines) == 5
    cmap = plt.get_cmap(plots.DEPTH_CMAP)
    assert to_rgba(lines[0].get_color()) == pytest.approx(cmap(0.0))
    assert to_rgba(lines[-1].get_color()) == pytest.approx(cmap(1.0))
    np.testing.assert_allclose(lines[2].get_ydata(), curves["delta_f"][2])
    assert ax.get_title() == "tiny" and "π" in ax.get_xlabel()
    assert len(ax.figure.axes) == 2  # the plot and its colorbar
    render(ax.figure)


def test_relative_log_amplitude_draws_into_given_axes():
    fig, axes = plt.subplots(1, 2)
    ax = plots.plot_relative_log_amplitude(fake_curves(["embed", "attention", "attention"]), ax=axes[1])
    assert ax is axes[1] and len(axes[1].get_lines()) == 3 and not axes[0].get_lines()


def test_high_freq_vs_depth_lines_shading_and_markers():
    resnet = fake_curves(["conv", "conv", "downsample", "downsample", "downsample"])
    vit = fake_curves(["embed", "attention", "attention", "mixed"])
    ax = plots.plot_high_freq_vs_depth({"ResNet": resnet, "ViT": vit})
    lines = ax.get_lines()
    assert len(lines) == 2
    np.testing.assert_allclose(lines[1].get_ydata(), vit["high_freq"])
    np.testing.assert_allclose(lines[0].get_xdata(), resnet["depth"])
    shaded = [p for p in ax.patches]
    assert len(shaded) == 3  # two attention blocks and one mixed block
    markers = np.concatenate([c.get_offsets() for c in ax.collections])
    assert len(markers) == 3 + 1  # ResNet's three downsampling blocks, ViT's patch embedding
    assert legend_labels(ax) == ["ResNet", "ViT", "attention block", "downsampling"]
    render(ax.figure)


def test_high_freq_vs_depth_without_attention_or_downsampling_has_no_extra_legend():
    ax = plots.plot_high_freq_vs_depth({"cnn": fake_curves(["conv", "conv", "conv"])})
    assert legend_labels(ax) == ["cnn"] and not ax.patches


def test_fourier_plots_accept_real_curves():
    model = VisionTransformer(img_size=32, patch_size=4, embed_dim=32, depth=2, num_heads=2, num_classes=10)
    curves = fourier_curves(model, torch.randn(2, 3, 32, 32))
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    plots.plot_relative_log_amplitude(curves, ax=axes[0])
    plots.plot_high_freq_vs_depth({"ViT": curves}, ax=axes[1])
    # One curve per read-out: after the position embedding, then after attention and after the MLP of each block.
    assert len(axes[0].get_lines()) == 1 + 2 * 2 and len(axes[1].get_lines()) == 1
    render(fig)


def test_fourier_plots_reject_incomplete_curves():
    with pytest.raises(UserError, match="delta_f"):
        plots.plot_relative_log_amplitude({"freqs": [], "depth": []})
    with pytest.raises(UserError, match="empty"):
        plots.plot_high_freq_vs_depth({})


# ---------------------------------------------------------------- training figures


def test_accuracy_vs_ratio_mean_and_sample_std_over_seeds():
    table = [
        {"model": "resnet", "ratio": r, "seed": s, "top1": top1}
        for r, tops in [(0.1, [40.0, 42.0, 44.0]), (1.0, [70.0, 71.0, 72.0])]
        for s, top1 in enumerate(tops)
    ]
    table += [{"model": "vit", "ratio": r, "seed": 0, "top1": top1} for r, top1 in [(0.1, 30.0), (1.0, 65.0)]]
    ax = plots.plot_accuracy_vs_ratio(table)
    assert legend_labels(ax) == ["resnet", "vit"]
    assert ax.get_xscale() == "log"
    resnet, vit = ax.containers
    data_line, _, (bars,) = resnet.lines
    np.testing.assert_allclose(np.asarray(data_line.get_ydata(), dtype=float), [42.0, 71.0])
    bottom_top = [(seg[0][1], seg[1][1]) for seg in bars.get_segments()]
    np.testing.assert_allclose(bottom_top, [(40.0, 44.0), (70.0, 72.0)])  # sample std: 2 and 1
    vit_bars = vit.lines[2][0].get_segments()
    assert all(seg[0][1] == seg[1][1] for seg in vit_bars)  # one seed: no error bar
    render(ax.figure)


def test_accuracy_vs_ratio_rejects_rows_without_keys():
    with pytest.raises(UserError, match="top1"):
        plots.plot_accuracy_vs_ratio([{"model": "resnet", "ratio": 0.1}])


def test_percent_ticks_label_the_ratios_as_percentages():
    ratios = [0.1, 0.5, 1.0]
    table = [{"model": "resnet", "ratio": r, "top1": 50.0} for r in ratios]
    ax = plots.plot_accuracy_vs_ratio(table)
    plots.percent_ticks(ax, ratios)
    np.testing.assert_allclose(ax.get_xticks(), ratios)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["10%", "50%", "100%"]
    assert not ax.get_xticks(minor=True).size  # no unlabelled log minor ticks between them
    render(ax.figure)


def test_accuracy_vs_switch_epoch_from_interpolation_summary_rows():
    from prs import experiments as ex

    params = {"switch_epochs": [0, 2, None], "epochs": 4, "hybrid_model": "hybrid_tiny", "vit_model": "vit_smoke"}
    top1 = {"E=0": [50.0, 52.0], "E=2": [60.0, 60.0], "never (CNN)": [70.0, 74.0], "vit_smoke": [40.0, 42.0]}
    table = [{"label": label, "top1": t} for label, tops in top1.items() for t in tops]
    curves = {(label,): {"high_freq": [-float(i)]} for i, label in enumerate(top1)}
    rows = ex.interpolation_summary(params, table, curves)["rows"]
    ax = plots.plot_accuracy_vs_switch_epoch(params, rows[::-1])  # rows are found by epoch, not by position
    (hybrid,) = ax.containers
    data_line, _, (bars,) = hybrid.lines
    xs, ys = (np.asarray(values, dtype=float) for values in data_line.get_data())
    np.testing.assert_allclose(xs, [0, 2, 4])  # never: drawn at the end of training
    np.testing.assert_allclose(ys, [51.0, 60.0, 72.0])
    np.testing.assert_allclose([seg[1][1] - seg[0][1] for seg in bars.get_segments()],
                               [2 * 2 ** 0.5, 0.0, 4 * 2 ** 0.5])  # ± sample std
    vit = [line for line in ax.get_lines() if line.get_label() == "vit_smoke"]
    assert len(vit) == 1 and vit[0].get_linestyle() == "--" and set(vit[0].get_ydata()) == {41.0}
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "2", "never"]
    assert sorted(legend_labels(ax)) == ["hybrid_tiny", "vit_smoke"]
    render(ax.figure)


def test_panel_grid_hides_unused_panels_and_sizes_by_panel():
    fig, axes = plots.panel_grid(5, ncols=2, panel=(4.0, 3.0))
    assert len(axes) == 5 and all(ax.get_visible() for ax in axes)
    assert len(fig.axes) == 6 and not fig.axes[5].get_visible()  # 3 rows of 2, the last one unused
    assert tuple(fig.get_size_inches()) == (8.0, 9.0)
    fig, axes = plots.panel_grid(1, ncols=3)
    assert len(fig.axes) == 1 and tuple(fig.get_size_inches()) == (5.0, 3.5)
    plt.close("all")


def test_switch_schedule_never_drawn_at_end_of_training():
    schedule = {"layer3.0.conv1": 40, "layer3.0.conv2": 30, "layer4.0.conv1": None}
    ax = plots.plot_switch_schedule(schedule, epochs=100, label="PRS")
    plots.plot_switch_schedule({k: 50 for k in schedule}, epochs=100, ax=ax, label="single switch")
    lines = ax.get_lines()
    assert len(lines) == 3  # two schedules and one end-of-training line
    np.testing.assert_allclose(lines[0].get_ydata(), [40, 30, 100])
    assert [t.get_text() for t in ax.get_xticklabels()] == list(schedule)
    never = ax.collections[0].get_offsets()
    np.testing.assert_allclose(never, [[2, 100]])
    assert legend_labels(ax)[:2] == ["PRS", "end of training (× = never switches)"]
    assert "single switch" in legend_labels(ax)
    render(ax.figure)


def test_accuracy_vs_epoch_with_switch_events():
    histories = {
        "conv 10 ep": [{"epoch": e, "test_top1": 10.0 + e} for e in range(5)],
        "conv 2 ep": [{"epoch": 0, "test_top1": None}] + [{"epoch": e, "test_top1": 5.0 + e} for e in range(1, 5)],
    }
    ax = plots.plot_accuracy_vs_epoch(histories, switch_events={"conv 2 ep": [2, 3]})
    lines = ax.get_lines()
    assert len(lines) == 2 + 2  # two runs, two switch markers
    np.testing.assert_allclose(lines[1].get_xdata(), [1, 2, 3, 4])  # the unevaluated epoch is skipped
    assert lines[2].get_color() == lines[1].get_color()
    assert legend_labels(ax) == list(histories)
    ax2 = plots.plot_accuracy_vs_epoch(histories, switch_events=[1])
    assert len(ax2.get_lines()) == 3
    with pytest.raises(UserError, match="switch_events"):
        plots.plot_accuracy_vs_epoch(histories, switch_events={"other": [1]})


def _mechanism_history():
    """History rows of a run whose two layers switch after epoch 1 (no mechanism in row 1)."""
    def layer(gate, distance, moved):
        return {"gate": gate, "content_distance": distance, "qk_moved": moved}
    return [{"epoch": 1},
            {"epoch": 2, "collapse": {"top1_gap": 4.0, "logit_change": 0.1},
             "mechanism": [layer(0.8, 2.0, 0.5), layer(0.6, 4.0, None)]},
            {"epoch": 3, "collapse": {"top1_gap": 9.0, "logit_change": 0.3},
             "mechanism": [layer(0.4, 3.0, 1.0), layer(0.2, 5.0, 2.0)]}]


def test_mechanism_series_averages_the_switched_layers_from_the_switch_on():
    from prs.diagnostics import mechanism_series

    series = mechanism_series(_mechanism_history())
    assert series["epoch"] == [2, 3] and series["top1_gap"] == [4.0, 9.0]
    assert series["gate"] == pytest.approx([0.7, 0.3]) and series["content_distance"] == [3.0, 4.0]
    assert series["qk_moved"] == [0.5, 1.5]  # a layer without a snapshot is left out of the mean
    assert mechanism_series([{"epoch": 1}, {"epoch": 2}])["epoch"] == []  # a CNN: nothing to plot


def test_mechanism_figure_has_a_panel_per_measure_and_a_line_per_run():
    from prs.diagnostics import mechanism_series

    series = {"prs": mechanism_series(_mechanism_history()), "never": mechanism_series([{"epoch": 1}])}
    fig, axes = plots.panel_grid(4, ncols=2, panel=(4.2, 3.0))
    plots.plot_mechanism_over_epochs(series, axes)
    assert [ax.get_title() for ax in axes] == list(plots.MECHANISM_PANELS.values())
    gap = [line for line in axes[0].get_lines() if line.get_label() == "prs"][0]
    np.testing.assert_allclose(gap.get_xydata(), [[2, 4.0], [3, 9.0]])
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["prs", "never"]
    plots.add_provenance(fig, "caption")
    render(fig)
    legend, caption = fig.legends[0].get_window_extent(), fig.texts[0].get_window_extent()
    assert legend.y0 > caption.y1, "the legend must not cover the provenance caption"
    with pytest.raises(UserError, match="empty"):
        plots.plot_mechanism_over_epochs({})


# ---------------------------------------------------------------- provenance


def test_provenance_caption():
    text = plots.provenance_caption("smoke", "synthetic", [0, 1], "abc1234", smoke=True)
    for part in ("smoke", "synthetic", "0, 1", "abc1234", "pipeline check — not evidence about the paper"):
        assert part in text
    real = plots.provenance_caption("full", "cifar100", 3, "abc1234", smoke=False)
    assert "seeds: 3" in real and "not evidence" not in real


@pytest.mark.parametrize("layout", [None, "constrained", "tight"])
def test_add_provenance_writes_text_below_the_axes(layout):
    fig, ax = plt.subplots(figsize=(5, 3.5), layout=layout)
    ax.plot([0, 1], [0, 1])
    ax.set_xlabel("x label")
    text = plots.provenance_caption("smoke", "synthetic", [0], "abc1234", smoke=True)
    assert plots.add_provenance(fig, text) is fig
    assert [t.get_text() for t in fig.texts] == [text]
    assert fig.texts[0].get_fontsize() < 10
    render(fig)  # draws, so layout engines have run
    renderer = fig.canvas.get_renderer()
    caption_top = fig.texts[0].get_window_extent(renderer).y1
    axes_bottom = ax.get_tightbbox(renderer).y0  # includes tick labels and the x label
    assert caption_top <= axes_bottom + 1


def test_plots_does_not_import_experiments():
    # prs.experiments imports prs.plots lazily; the other way round would make an import cycle
    code = "import sys, prs.plots; assert 'prs.experiments' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# ---------------------------------------------------------------- legible at page width


def test_importing_plots_applies_the_book_style():
    import matplotlib as mpl

    assert mpl.rcParams["figure.dpi"] >= 150 and mpl.rcParams["savefig.dpi"] >= 150
    fig, ax = plt.subplots()
    assert fig.dpi >= 150, "the inline backend saves a figure at its own dpi"
    assert len({(s["linestyle"], s["marker"]) for s in mpl.rcParams["axes.prop_cycle"]}) == 8


@pytest.mark.parametrize("width", [4.0, 5.5, 6.5, 7.0, plots.MAX_FIGURE_WIDTH_IN])
def test_text_is_legible_at_the_size_the_book_shows_it(width):
    import matplotlib as mpl

    tick = min(mpl.rcParams["xtick.labelsize"], mpl.rcParams["ytick.labelsize"])
    assert plots.rendered_points(tick, width) >= 9.0
    assert plots.rendered_points(plots.CAPTION_SIZE, width) >= 8.0
    assert plots.rendered_points(mpl.rcParams["legend.fontsize"], width) >= 9.0
    # the sums behind it: a 10-inch figure at 150 dpi is 1500 px, shown at PAGE_WIDTH_PX
    assert plots.rendered_points(10.0, 10.0) == pytest.approx(10.0 * plots.PAGE_WIDTH_PX / 960.0)


def test_panel_grid_keeps_figures_within_the_page_width():
    fig, axes = plots.panel_grid(5, ncols=3, panel=(3.6, 3.0))
    assert fig.get_size_inches()[0] == plots.MAX_FIGURE_WIDTH_IN and len(axes) == 5
    fig, _ = plots.panel_grid(4, ncols=2, panel=(3.0, 3.0))
    assert tuple(fig.get_size_inches()) == (6.0, 6.0)


def test_accuracy_axes_say_percent():
    table = [{"model": "resnet", "ratio": r, "top1": 50.0} for r in (0.5, 1.0)]
    assert "%" in plots.plot_accuracy_vs_ratio(table).get_ylabel()
    histories = {"a": [{"epoch": 0, "test_top1": 1.0}]}
    assert "%" in plots.plot_accuracy_vs_epoch(histories).get_ylabel()
    params = {"switch_epochs": [0, None], "epochs": 2, "hybrid_model": "h", "vit_model": "v"}
    rows = [{"switch_epoch": 0, "switch": "E=0", "top1_mean": 1.0, "top1_std": None},
            {"switch_epoch": None, "switch": "never", "top1_mean": 2.0, "top1_std": None},
            {"switch": "v", "top1_mean": 0.5, "top1_std": None}]
    assert "%" in plots.plot_accuracy_vs_switch_epoch(params, rows).get_ylabel()


def test_identical_curves_stay_distinguishable():
    history = [{"epoch": e, "test_top1": 10.0 + e} for e in range(30)]
    ax = plots.plot_accuracy_vs_epoch({"resnet_tiny": history, "never": list(history)})
    first, second = ax.get_lines()
    np.testing.assert_allclose(first.get_ydata(), second.get_ydata())
    assert first.get_linestyle() != second.get_linestyle() and first.get_marker() != second.get_marker()
    assert first.get_color() != second.get_color()
    # the line drawn on top is thinner with smaller markers, and its markers fall on other epochs
    assert second.get_linewidth() < first.get_linewidth() and second.get_markersize() < first.get_markersize()
    assert first.get_markevery() != second.get_markevery()


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


@pytest.mark.parametrize("draw", ["ratio", "switch_epoch", "schedule", "epochs", "high_freq"])
def test_legends_sit_outside_the_data_and_clear_of_the_axis_labels(draw):
    fig, ax = plt.subplots(figsize=(6.5, 4.2), layout="constrained")
    if draw == "ratio":
        plots.plot_accuracy_vs_ratio([{"model": m, "ratio": r, "top1": 1.0} for m in "abc" for r in (0.5, 1.0)], ax=ax)
    elif draw == "switch_epoch":
        params = {"switch_epochs": [0, None], "epochs": 2, "hybrid_model": "h", "vit_model": "v"}
        plots.plot_accuracy_vs_switch_epoch(params, [
            {"switch_epoch": 0, "switch": "E=0", "top1_mean": 1.0, "top1_std": None},
            {"switch_epoch": None, "switch": "never", "top1_mean": 2.0, "top1_std": None},
            {"switch": "v", "top1_mean": 0.5, "top1_std": None}], ax=ax)
    elif draw == "schedule":
        plots.plot_switch_schedule({"layer3.0.conv1": 1, "layer4.0.conv2": None}, 3, ax=ax, label="prs")
    elif draw == "epochs":
        plots.plot_accuracy_vs_epoch({k: [{"epoch": 0, "test_top1": 1.0}] for k in "abcdef"}, ax=ax)
    else:
        plots.plot_high_freq_vs_depth({"a": fake_curves(["embed", "attention", "mixed"]),
                                       "b": fake_curves(["conv", "downsample", "conv"])}, ax=ax)
    plots.add_provenance(fig, "caption " * 12)
    render(fig)
    renderer = fig.canvas.get_renderer()
    legend = ax.get_legend().get_window_extent(renderer)
    assert not _overlaps(legend, ax.get_window_extent(renderer)), "the legend covers the plotting area"
    assert not _overlaps(legend, ax.xaxis.get_tightbbox(renderer)), "the legend covers tick labels or the x label"
    assert not _overlaps(legend, fig.texts[0].get_window_extent(renderer)), "the legend covers the caption"
    assert fig.bbox.contains(legend.x0, legend.y0) and fig.bbox.contains(legend.x1, legend.y1)


def test_attention_is_shaded_full_height_only_when_every_line_has_the_same_blocks():
    vit = fake_curves(["embed", "attention", "attention", "mixed"])
    same = plots.plot_high_freq_vs_depth({"25%": vit, "100%": vit})
    assert len(same.patches) == 3
    assert all(p.get_bbox().height >= 0.99 for p in same.patches)  # axes fraction: full height
    cnn = fake_curves(["conv", "downsample", "conv", "conv"])
    mixed = plots.plot_high_freq_vs_depth({"ViT": vit, "CNN": cnn, "ViT again": vit})
    assert len(mixed.patches) == 6  # a strip per model with attention; none for the CNN
    assert all(p.get_bbox().height <= 0.05 for p in mixed.patches)
    cnn_line = mixed.get_lines()[1]
    bottom = mixed.transLimits.transform((0.0, min(cnn_line.get_ydata())))[1]
    top_of_strips = max(p.get_bbox().y1 for p in mixed.patches)
    assert bottom > top_of_strips, "the strips sit below every curve"
    ours = {to_rgba(p.get_facecolor())[:3] for p in mixed.patches}
    assert ours == {to_rgba(mixed.get_lines()[i].get_color())[:3] for i in (0, 2)}


def test_provenance_caption_is_dark_and_wraps_within_the_figure():
    fig, ax = plt.subplots(figsize=(5.5, 3.6), layout="constrained")
    ax.plot([0, 1], [0, 1])
    text = plots.provenance_caption("smoke", "synthetic", [0, 1, 2], "abc1234", smoke=True)
    plots.add_provenance(fig, text)
    render(fig)
    caption = fig.texts[0]
    assert caption.get_fontsize() >= plots.CAPTION_SIZE
    assert max(to_rgba(caption.get_color())[:3]) <= 0.3
    box = caption.get_window_extent(fig.canvas.get_renderer())
    assert box.x0 >= 0 and box.x1 <= fig.bbox.x1, "the caption fits the figure's width"
    assert ax.get_tightbbox(fig.canvas.get_renderer()).y0 >= box.y1 - 1
