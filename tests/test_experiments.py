"""prs.experiments: profiles, grids, tables and verdicts, on fake results with known answers."""

import math

import pytest

from prs import experiments as ex
from prs import models
from prs.errors import UserError


def fake_result(model="resnet_tiny", ratio=1.0, seed=0, top1=50.0, schedule=None, key=None, family="resnet"):
    schedule = schedule or {"name": "never"}
    return {
        "config": {"model": {"name": model}, "data": {"ratio": ratio}, "train": {"seed": seed, "epochs": 3}},
        "model": {"family": family}, "schedule": schedule, "final": {"test_top1": top1, "test_top5": top1 + 10},
        "data": {"train_size": int(5000 * ratio)}, "wall_time_s": 1.0, "throughput_img_s": 100.0,
        "run_dir": f"runs/{model}-x", "commit": "abc123", **({"key": key} if key else {}),
    }


def rows(spec):
    """spec: {label: {ratio: [top1 per seed]}} -> table rows."""
    out = []
    for label, by_ratio in spec.items():
        for ratio, values in by_ratio.items():
            for seed, v in enumerate(values):
                out.append({"label": label, "ratio": ratio, "seed": seed, "top1": v})
    return out


# ----------------------------------------------------------------------------- profiles and grids


def test_every_profile_defines_the_same_parameters_per_notebook():
    assert ex.profile_names() == ["colab", "full", "smoke"]
    for notebook in ex.NOTEBOOKS:
        smoke = set(ex.notebook_parameters("smoke", notebook))
        for profile in ("colab", "full"):
            assert set(ex.notebook_parameters(profile, notebook)) == smoke, (profile, notebook)


def test_profile_grids_validate_and_full_uses_real_models_and_three_seeds():
    for profile in ex.profile_names():
        for notebook in ex.NOTEBOOKS:
            trials = ex.notebook_trials(notebook, ex.notebook_parameters(profile, notebook))
            assert trials, (profile, notebook)
    full = ex.notebook_parameters("full", "01_data_scale")
    assert len(full["seeds"]) >= 3 and full["dataset"] == "cifar100"
    assert set(full["models"]) == {"resnet18", "deit_tiny", "convit_tiny", "hybrid_resnet18"}
    smoke = ex.notebook_parameters("smoke", "01_data_scale")
    assert smoke["dataset"] == "synthetic" and smoke["download"] is False
    assert set(smoke["models"]) == {"resnet_tiny", "vit_smoke", "convit_smoke", "hybrid_tiny"}


def test_unknown_profile_and_notebook_are_user_errors_listing_choices():
    with pytest.raises(UserError, match="colab, full, smoke"):
        ex.notebook_parameters("huge", "01_data_scale")
    with pytest.raises(UserError, match="01_data_scale"):
        ex.notebook_parameters("smoke", "05_nothing")


def test_notebooks_share_runs_through_identical_configs():
    """02 reuses 01's runs; 03's ViT and 04's baselines/PRS are 01's runs at ratio 1."""
    def dirs(notebook):
        return {ex.run_dir(t) for t in ex.notebook_trials(notebook, ex.notebook_parameters("smoke", notebook))}

    d1, d2, d3, d4 = (dirs(n) for n in ex.NOTEBOOKS)
    assert d2 == d1
    assert len(d3 & d1) == 1  # the ViT reference
    assert len(d4 - d1 - d3) == 7  # 'reverse' and the 6 runs of the negative control are new in 04
    assert len(d1 | d3 | d4) == 23


def test_data_scale_trials_cover_the_grid_and_only_hybrids_switch():
    params = ex.notebook_parameters("smoke", "01_data_scale")
    trials = ex.data_scale_trials(params)
    assert len(trials) == len(params["models"]) * len(params["ratios"]) * len(params["seeds"])
    for t in trials:
        assert t.config.data.ratio == t.key["ratio"] and t.config.model.name == t.key["model"]
        if models.family(t.key["model"]) == "hybrid":
            assert t.config.schedule.to_dict() == params["hybrid_schedule"]
            assert t.config.model.switchable_stages == params["switchable_stages"]
        else:
            assert t.config.schedule.to_dict() == {"name": "never"} and t.config.model.switchable_stages is None
    bad = {**params, "reference": "deit_small"}
    with pytest.raises(UserError, match="reference"):
        ex.data_scale_trials(bad)


def test_interpolation_trials_map_switch_epochs_to_schedules():
    params = ex.notebook_parameters("smoke", "03_interpolation")
    schedules = {t.key["label"]: t.config.schedule.to_dict() for t in ex.interpolation_trials(params)}
    assert schedules["E=0"] == {"name": "from_start"}
    assert schedules["E=1"] == {"name": "uniform", "epoch": 1}
    assert schedules["never (CNN)"] == {"name": "never"}
    assert schedules[params["vit_model"]] == {"name": "never"}
    with pytest.raises(UserError, match="null"):
        ex.interpolation_trials({**params, "switch_epochs": [0, 1]})


def test_profile_overrides_are_merged_under_the_run_fields():
    params = {**ex.notebook_parameters("smoke", "04_prs_cifar100"),
              "overrides": {"train": {"lr": 0.01, "epochs": 99}}}
    cfg = ex.prs_trials(params)[0].config
    assert cfg.train.lr == 0.01  # from overrides
    assert cfg.train.epochs == params["epochs"]  # the grid's own field wins


def test_notebook_params_from_namespace_and_named_profile(monkeypatch):
    from prs.experiments import runtime

    monkeypatch.setattr(runtime, "cuda_device", lambda: (None, False))  # as on a CPU-only machine
    defaults = ex.notebook_parameters("smoke", "02_fourier")
    assert ex.notebook_params("02_fourier", dict(defaults, other=1)) == ex.resolve_roots(defaults)  # roots absolute
    with pytest.raises(UserError, match="fourier_images"):
        ex.notebook_params("02_fourier", {k: v for k, v in defaults.items() if k != "fourier_images"})
    with pytest.warns(RuntimeWarning, match="sized for a GPU"):
        assert ex.notebook_params("02_fourier", {}, profile="full")["profile"] == "full"


def test_training_plan_counts_distinct_runs_and_dataset_passes():
    plan = {r["model"]: r for r in ex.training_plan("smoke")}
    assert sum(r["runs"] for r in plan.values()) == 23
    # resnet_tiny: 3 epochs at ratios 0.25, 0.5, 1.0 -> 5.25 passes, and 6 control runs of 3 epochs at 0.1
    assert plan["resnet_tiny"]["runs"] == 9 and plan["resnet_tiny"]["dataset_passes"] == pytest.approx(7.05)


# ----------------------------------------------------------------------------- tables


def test_mean_std_is_the_sample_std():
    mean, std = ex.mean_std([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5 and std == pytest.approx(math.sqrt(5 / 3))
    assert ex.mean_std([7.0]) == (7.0, None)


def test_results_table_and_summary():
    results = [fake_result("vit_smoke", 0.5, s, top1=v, family="vit") for s, v in enumerate([10.0, 14.0])]
    results.append(fake_result("hybrid_tiny", 1.0, 0, 20.0, {"name": "prs", "first": 2, "last": 1},
                               key={"label": "prs", "switch_epoch": None}, family="hybrid"))
    table = ex.results_table(results)
    assert table[0]["label"] == "vit_smoke" and table[0]["ratio"] == 0.5 and table[0]["top5"] == 20.0
    assert table[2]["label"] == "prs" and table[2]["schedule"] == "prs(2→1)" and "switch_epoch" in table[2]
    summary = ex.summarize(table, by=("label",))
    assert summary[0]["mean"] == 12.0 and summary[0]["std"] == pytest.approx(math.sqrt(8)) and summary[0]["n"] == 2
    assert summary[1]["std"] is None
    assert ex.format_mean_std(12.0, 2.8284) == "12.0 ± 2.8"
    assert ex.format_mean_std(12.0, None) == "12.0"
    assert ex.format_mean_std(None, None) == "unknown"


def test_markdown_table():
    text = ex.markdown_table([{"a": 1.234, "b": None, "c": "x|y"}], {"a": "A", "b": "B", "c": "C"})
    assert text.splitlines() == ["| A | B | C |", "|---|---|---|", "| 1.23 | — | x\\|y |"]


def test_average_curves():
    a = {"names": ["s", "b"], "sizes": [[8, 8], [4, 4]], "delta_f": [[0.0, -1.0], [0.0, -3.0]], "high_freq": [-1.0, -3.0]}
    b = {"names": ["s", "b"], "sizes": [[8, 8], [4, 4]], "delta_f": [[0.0, -2.0], [0.0, -1.0]], "high_freq": [-2.0, -1.0]}
    avg = ex.average_curves([a, b])
    assert avg["delta_f"] == [[0.0, -1.5], [0.0, -2.0]] and avg["high_freq"] == [-1.5, -2.0]
    assert ex.high_freq_summary(avg) == -1.75
    with pytest.raises(ValueError):
        ex.average_curves([a, {**b, "names": ["x", "y"]}])


# ----------------------------------------------------------------------------- crossover and verdicts


def test_crossover_interpolates_in_log_ratio():
    table = rows({"cnn": {0.1: [50], 0.4: [60], 1.0: [70]}, "vit": {0.1: [40], 0.4: [70], 1.0: [80]}})
    # diff: -10 at 0.1, +10 at 0.4 -> halfway in log space: sqrt(0.1 * 0.4) = 0.2
    assert ex.crossover_ratio(table, "vit", "cnn") == pytest.approx(0.2)


def test_crossover_edge_cases():
    ahead = rows({"cnn": {0.1: [50], 1.0: [60]}, "vit": {0.1: [51], 1.0: [61]}})
    assert ex.crossover_ratio(ahead, "vit", "cnn") == 0.1
    behind = rows({"cnn": {0.1: [50], 1.0: [60]}, "vit": {0.1: [55], 1.0: [60]}})
    assert ex.crossover_ratio(behind, "vit", "cnn") is None  # a tie at the largest ratio is not overtaking
    # ahead, then behind, then ahead again: the crossover is the last one
    zigzag = rows({"cnn": {0.1: [50], 0.2: [50], 0.4: [50]}, "vit": {0.1: [51], 0.2: [49], 0.4: [51]}})
    assert ex.crossover_ratio(zigzag, "vit", "cnn") == pytest.approx(math.sqrt(0.2 * 0.4))
    # means over seeds decide: 45 and 57 average to 51 > 50
    seeds = rows({"cnn": {1.0: [50, 50]}, "vit": {1.0: [45, 57]}})
    assert ex.crossover_ratio(seeds, "vit", "cnn") == 1.0
    with pytest.raises(UserError):
        ex.crossover_ratio(seeds, "convit", "cnn")


# The verdicts themselves (three outcomes each, on constructed results) are tested in tests/test_claims.py.


def test_interpolation_positions():
    summary = {0: -2.5, 2: -1.5, None: -1.0}  # the CNN at -1, the ViT at -3
    pos = ex.interpolation_positions(summary, -3.0)
    assert pos == {0: pytest.approx(0.75), 2: pytest.approx(0.25), None: 0.0}
    assert all(math.isnan(v) for v in ex.interpolation_positions(summary, -1.0).values())


def test_provenance_labels_smoke_runs():
    params = ex.notebook_parameters("smoke", "01_data_scale")
    text = ex.provenance(params, [fake_result()])
    assert "smoke" in text and "synthetic" in text and "abc123" in text and "not evidence" in text
    full = ex.provenance(ex.notebook_parameters("full", "01_data_scale"), [fake_result()])
    assert "not evidence" not in full and "0, 1, 2" in full


def test_pivot_markdown():
    summary = ex.summarize(rows({"cnn": {0.5: [1.0, 3.0], 1.0: [4.0]}, "vit": {1.0: [5.0]}}), by=("label", "ratio"))
    text = ex.pivot_markdown(summary, column_header=lambda r: f"{r:.0%}")
    assert text.splitlines() == ["| model | 50% | 100% |", "|---|---|---|", "| cnn | 2.0 ± 1.4 | 4.0 |",
                                 "| vit | — | 5.0 |"]


def test_crossover_text():
    table = rows({"cnn": {0.1: [50], 0.4: [60], 1.0: [70]}, "vit": {0.1: [40], 0.4: [70], 1.0: [80]},
                  "tie": {0.1: [50], 0.4: [61], 1.0: [71]}, "ahead": {0.1: [51], 0.4: [61], 1.0: [71]},
                  "behind": {0.1: [40], 0.4: [50], 1.0: [70]}})
    assert ex.crossover_text(table, "vit", "cnn") == "≈ 20%"
    assert ex.crossover_text(table, "tie", "cnn") == "≈ 10%"  # equal at 10 % is not ahead there
    assert ex.crossover_text(table, "ahead", "cnn") == "≤ 10%"
    assert ex.crossover_text(table, "behind", "cnn") == "never (up to 100%)"


# ----------------------------------------------------------------------------- notebook helpers


def test_keep_runs_on_drive_mounts_drive_and_moves_the_run_root(monkeypatch):
    import sys
    import types

    mounted = []
    colab = types.ModuleType("google.colab")
    colab.drive = types.SimpleNamespace(mount=mounted.append)
    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    params = ex.notebook_parameters("colab", "01_data_scale")
    assert ex.keep_runs_on_drive(params) is params
    assert mounted == ["/content/drive"] and params["run_root"] == "/content/drive/MyDrive/prs-runs/colab"


def test_importing_experiments_leaves_the_warning_filters_alone():
    """The "IProgress not found" warning is silenced only around timm's import, not for the process."""
    import subprocess
    import sys

    code = ("import warnings; import prs.experiments; "
            "assert not [f for f in warnings.filters if f[1] is not None and 'IProgress' in f[1].pattern], "
            "warnings.filters")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def test_prs_entries_with_their_own_recipe_tcnn_and_lr_restart():
    """full's notebook 04: T-CNN fine-tuned from the finished CNN, PRS with LR restarts, ResNet-18 with SGD."""
    params = ex.notebook_parameters("full", "04_prs_cifar100")
    trials = {(t.key["label"], t.key["seed"]): t.config for t in ex.prs_trials(params)}
    never, tcnn = trials[("never", 0)], trials[("tcnn", 0)]
    assert tcnn.model.init_from == ex.run_dir(ex.Trial({}, never)).name and tcnn.train.epochs == 20
    assert tcnn.schedule.to_dict() == {"name": "from_start"} and never.model.init_from is None
    assert trials[("tcnn", 1)].model.init_from == ex.run_dir(ex.Trial({}, trials[("never", 1)])).name
    restart = trials[("prs_lr_restart", 0)]
    assert restart.train.lr_restart_at_switch and restart.schedule == trials[("prs", 0)].schedule
    assert not trials[("prs", 0)].train.lr_restart_at_switch
    sgd = trials[("resnet18_sgd", 0)]
    assert (sgd.train.optimizer, sgd.train.epochs, sgd.model.name) == ("sgd", 200, "resnet18")
    assert trials[("resnet18", 0)].train.optimizer == "adamw"
    bad = {**params, "schedules": {**params["schedules"], "tcnn": {"schedule": {"name": "from_start"},
                                                                   "init_from": "later"}}}
    with pytest.raises(UserError, match="init_from"):
        ex.prs_trials(bad)
    with pytest.raises(UserError, match="unknown key 'lr'"):
        ex.prs_trials({**params, "schedules": {"prs": {"schedule": {"name": "never"}, "lr": 1}}})
    with pytest.raises(UserError, match="baselines"):
        ex.prs_trials({**params, "baselines": [{"model": "resnet18"}]})


def test_prs_rows_carry_size_and_compute():
    results = [fake_result("resnet_tiny", 1.0, s, top1=50.0 + s, key={"label": "resnet_tiny"}) for s in (0, 1)]
    for r in results:
        r["model"]["parameters"] = 2_000_000
    switched = fake_result("hybrid_tiny", 1.0, 0, 55.0, {"name": "from_start"}, key={"label": "prs"},
                           family="hybrid")
    switched["config"]["model"]["switchable_stages"] = [4]
    switched["model"]["parameters"] = 2_100_000
    switched["switch_events"] = [{"epoch": 0, "layers": ["layer4.0.conv2"]}]
    table = ex.results_table(results + [switched])
    assert table[2]["attention_layers"] == ["layer4.0.conv2"] and table[2]["switchable_stages"] == [4]
    rows = {r["entry"]: r for r in ex.prs_rows(table)}
    assert rows["resnet_tiny"]["params_m"] == 2.0 and rows["resnet_tiny"]["train_hours"] == pytest.approx(2 / 3600)
    assert rows["resnet_tiny"]["gflops"] > 0 and rows["prs"]["gflops"] > rows["resnet_tiny"]["gflops"]
    assert set(ex.PRS_COLUMNS) <= set(rows["prs"]) and rows["prs"]["published"] == "—"


def test_expected_ranges_are_data_with_sources_and_the_book_shows_them():
    from pathlib import Path

    from prs.experiments import expected

    entries = expected.expected_entries()
    assert {e["model"] for e in entries} >= {"resnet18", "deit_tiny", "convit_tiny"}
    assert all(e["source"] and e["recipe"] and e["verified"] for e in entries)
    assert expected.published_top1("resnet18") == "75.61 (verified)"
    assert expected.published_top1("hybrid_resnet18") == "—"
    root = Path(__file__).resolve().parents[1]
    assert (root / "book/expected_ranges.md").read_text() == expected.expected_markdown(), \
        "regenerate book/expected_ranges.md from prs.experiments.expected.expected_markdown()"
    assert "```{include} expected_ranges.md\n```" in (root / "book/decisions.md").read_text()
