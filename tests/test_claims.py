"""The pre-registered claims: the rules file (pinned), its statistics, the three-valued verdicts on
constructed results with known answers (a clear effect, a null from identical configs that differ
only in their seeds, a reversed effect), the negative control and the labels decided from values."""

import hashlib
import re
import zlib
from pathlib import Path

import numpy as np
import pytest

from prs import experiments as ex
from prs.errors import UserError
from prs.experiments import claims, stats

ROOT = Path(__file__).resolve().parents[1]


def stable(*parts) -> int:
    """A seed from labels that does not change between processes (unlike hash())."""
    return zlib.crc32(repr(parts).encode()) % 1000
# Changing a rule changes this hash: update it together with a dated line in the changelog of rules
# (book/decisions.md) and the generated book/claims_rules.md.
REGENERATE = ("regenerate it: python -c 'from prs.experiments import rules_markdown; print(rules_markdown())' "
              "> book/claims_rules.md")
CLAIMS_SHA256 = "eb9d8197d61c6a665bdba674c71d4faea731438ee689f8c77584853cc985ab64"


# ----------------------------------------------------------------------------- statistics


@pytest.mark.parametrize("df, expected", [(1, 12.706204736), (2, 4.302652730), (3, 3.182446305), (4, 2.776445105),
                                          (5, 2.570581836), (10, 2.228138852), (30, 2.042272456), (120, 1.979930405)])
def test_t_quantile_matches_tables(df, expected):
    assert stats.t_quantile(0.975, df) == pytest.approx(expected, abs=1e-7)
    assert stats.t_quantile(0.025, df) == pytest.approx(-expected, abs=1e-7)


def test_t_cdf_known_values_and_symmetry():
    assert stats.t_cdf(2.0, 5) == pytest.approx(0.9490302605850709, abs=1e-10)
    assert stats.t_cdf(0.0, 3) == 0.5
    assert stats.t_cdf(-1.3, 7.5) == pytest.approx(1 - stats.t_cdf(1.3, 7.5), abs=1e-12)
    # one degree of freedom is the Cauchy distribution
    assert stats.t_cdf(1.0, 1) == pytest.approx(0.75, abs=1e-12)


def test_welch_interval_matches_a_reference_computation():
    # R: t.test(c(1,2,3), c(2,4,6,8)): df 4.0755, 95 % CI -6.897975 .. 0.897975
    d = stats.welch_interval([1, 2, 3], [2, 4, 6, 8])
    assert d.difference == -3.0 and d.df == pytest.approx(4.075471698, abs=1e-8)
    assert d.interval == pytest.approx((-6.897975451, 0.897975451), abs=1e-8)
    assert stats.welch_interval([1.0], [2.0, 3.0]).interval == (None, None)
    assert stats.welch_interval([2.0, 2.0], [1.0, 1.0]).interval == (1.0, 1.0)


def test_spearman_and_ranks():
    assert stats.ranks([3, 1, 2, 2]) == [4.0, 1.0, 2.5, 2.5]
    assert stats.spearman([0, 1, 2, 3], [0.9, 0.5, 0.2, 0.1]) == pytest.approx(-1.0)
    assert stats.spearman([0, 1, 2], [1, 1, 1]) != stats.spearman([0, 1, 2], [1, 1, 1])  # nan: constant side


def test_bootstrap_is_seeded_and_brackets_the_point():
    groups = {"a": [1.0, 2.0, 3.0, 4.0], "b": [0.0, 0.5, 1.0]}
    def diff(m):
        return m["a"] - m["b"]
    first = stats.bootstrap_over_seeds(groups, diff, replicates=500)
    assert first == stats.bootstrap_over_seeds(groups, diff, replicates=500)
    point, low, high = first
    assert point == pytest.approx(2.0) and low < point < high


# ----------------------------------------------------------------------------- the rules file


def test_claims_file_is_pinned():
    assert claims.claims_sha256() == CLAIMS_SHA256, (
        "prs/experiments/claims.yaml changed: update CLAIMS_SHA256, add a dated line naming the new hash to the "
        "changelog of rules in book/decisions.md, and regenerate book/claims_rules.md")
    assert hashlib.sha256((ROOT / "prs/experiments/claims.yaml").read_bytes()).hexdigest() == CLAIMS_SHA256


def test_rules_state_every_claim_with_a_minimum_effect_and_three_outcomes():
    r = ex.rules()
    assert list(r.claims) == list(ex.NOTEBOOKS) and r.min_seeds >= 2 and r.confidence == 0.95
    for c in r.claims.values():
        assert c.minimum_effect > 0 and c.seeds_assumed >= 2 and c.unit
        assert set(c.outcomes) == {"held", "did_not_hold", "inconclusive"}
        assert c.question and c.metric and c.comparison and c.rule["test"]
    assert "held" not in r.negative_control["expected"]


@pytest.mark.parametrize("edit, match", [
    (lambda t: t.replace("value: 0.5, unit", "value: 0, unit"), "minimum_effect"),
    (lambda t: t.replace("expected: [did_not_hold, inconclusive]", "expected: [held]"), "never 'held'"),
    (lambda t: t.replace("notebook: 04_prs_cifar100\n    question", "notebook: 05_x\n    question"), "05_x"),
    (lambda t: t.replace("      seeds_assumed: 3\n      held: for every", "      held: for every"), "rule needs"),
    (lambda t: t.replace("min_seeds: 2", "min_seeds: 1"), "min_seeds"),
])
def test_a_broken_rules_file_is_one_clear_error(edit, match):
    text = claims.claims_text()
    broken = edit(text)
    assert broken != text
    with pytest.raises(UserError, match=match):
        claims.parse_rules(broken)


def test_decisions_page_shows_the_current_rules():
    generated = (ROOT / "book/claims_rules.md").read_text()
    assert generated == ex.rules_markdown() + "\n", REGENERATE
    decisions = (ROOT / "book/decisions.md").read_text()
    assert "```{include} claims_rules.md\n```" in decisions


def test_changelog_of_rules_names_the_current_hash_on_its_newest_line():
    decisions = (ROOT / "book/decisions.md").read_text()
    section = decisions.split("## Changelog of rules", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if re.match(r"\| \d{4}-\d{2}-\d{2} \|", line)]
    assert lines, "the changelog of rules has no dated lines"
    dates = [line.split("|")[1].strip() for line in lines]
    assert dates == sorted(dates), "changelog lines must be in date order, newest last"
    assert claims.claims_sha256() in lines[-1]


# ----------------------------------------------------------------------------- constructed results


def rows(spec, distance=None):
    """spec: {label: {ratio: [top1 per seed]}} -> table rows (with a measured attention distance)."""
    return [{"label": label, "ratio": ratio, "seed": seed, "top1": v,
             "attention_distance_px": (distance or {}).get(label)}
            for label, by_ratio in spec.items() for ratio, values in by_ratio.items() for seed, v in enumerate(values)]


def seeds_of(mean, n=3, spread=0.25, seed=0):
    """n seeds' top-1 around `mean`, with a seed-to-seed spread like CIFAR-100's (~0.25 points)."""
    rng = np.random.default_rng(seed)
    return [float(mean + spread * z) for z in rng.standard_normal(n)]


def outcome_of_prs(prs, never):
    return ex.prs_verdict(ex.summarize(rows({"prs": {1.0: prs}, "never": {1.0: never}}))).outcome


def test_prs_verdict_returns_each_outcome():
    assert outcome_of_prs(seeds_of(62.0, seed=1), seeds_of(60.0, seed=2)) == "held"  # clear effect
    assert outcome_of_prs(seeds_of(60.0, seed=3), seeds_of(62.0, seed=4)) == "did_not_hold"  # reversed
    # null: identical configurations, different seeds
    assert outcome_of_prs(seeds_of(60.0, seed=5), seeds_of(60.0, seed=6)) in ("did_not_hold", "inconclusive")
    assert outcome_of_prs([62.0], [58.0]) == "inconclusive"  # one seed: no interval, however large the gap
    assert outcome_of_prs([61.0, 62.0, 60.5], [60.0, 60.8, 59.9]) == "inconclusive"  # straddles 0.5


def test_prs_verdict_needs_every_comparator_and_prints_its_numbers():
    table = rows({"prs": {1.0: [62.0, 62.2, 61.9]}, "never": {1.0: [58.0, 58.1, 57.9]},
                  "uniform": {1.0: [61.9, 62.3, 62.0]}})
    v = ex.prs_verdict(ex.summarize(table))
    assert v.outcome == "did_not_hold" and "uniform" in v.reason
    assert v.numbers["n"] == (3, 3) and len(v.numbers["interval"]) == 2 and "uniform" in v.numbers["what"]
    text = v.markdown(ex.run_label(ex.notebook_parameters("full", "04_prs_cifar100")))
    assert "did not hold" in text and "95% interval [" in text and "n = 3 vs 3" in text and "full profile" in text
    assert ex.prs_verdict(ex.summarize(table), comparators=["never"]).outcome == "held"
    with pytest.raises(UserError, match="convit"):
        ex.prs_verdict(ex.summarize(table), comparators=["convit"])


def test_negative_control_rule_rarely_calls_noise_a_result():
    """Identical configurations, different seeds: the claim-4 rule must (almost) never say held."""
    held = 0
    for i in range(400):
        v = ex.negative_control_verdict(seeds_of(60.0, seed=2 * i), seeds_of(60.0, seed=2 * i + 1))
        assert v.outcome in ex.rules().negative_control["expected"] or v.outcome == "held"
        held += v.outcome == "held"
    assert held <= 0.05 * 400
    clear = ex.negative_control_verdict(seeds_of(60.0, seed=1), seeds_of(62.0, seed=2))
    assert clear.outcome == "held" and "FAILED" in clear.sentence  # a real difference would fail the control
    assert "passed" in ex.negative_control_verdict([1.0, 1.1], [1.05, 1.0]).sentence


def scale_table(vit_at_full, convit_at_full, spread=0.25):
    """cnn 50/60/70 at 10/50/100 %; vit and convit with the given top-1s (at 10, 50, 100 %), 3 seeds each."""
    spec = {"cnn": {0.1: 50, 0.5: 60, 1.0: 70}, "vit": dict(zip((0.1, 0.5, 1.0), vit_at_full)),
            "convit": dict(zip((0.1, 0.5, 1.0), convit_at_full))}
    return rows({m: {r: seeds_of(v, spread=spread, seed=stable(m, r)) for r, v in by.items()}
                 for m, by in spec.items()}, {"vit": 6.0, "convit": 2.0})


def test_data_scale_verdict_returns_each_outcome_and_orders_by_measured_distance():
    clear = scale_table((30, 55, 75), (45, 65, 76))  # convit crosses near 22 %, vit near 71 %
    v = ex.data_scale_verdict(clear, ["convit", "vit"], "cnn")  # list order does not matter
    assert v.outcome == "held" and "vit (6.00 px) → convit (2.00 px)" in v.sentence
    reversed_ = scale_table((45, 65, 76), (30, 55, 75))
    assert ex.data_scale_verdict(reversed_, ["vit", "convit"], "cnn").outcome == "did_not_hold"
    null = scale_table((40, 62, 73), (40, 62, 73))  # the same curve, different seeds
    assert ex.data_scale_verdict(null, ["vit", "convit"], "cnn").outcome in ("did_not_hold", "inconclusive")
    never = scale_table((30, 50, 65), (40, 55, 68))
    v = ex.data_scale_verdict(never, ["vit", "convit"], "cnn")
    assert v.outcome == "inconclusive" and v.reason == "not testable on this data range"
    one_seed = [row for row in clear if row["seed"] == 0]
    v = ex.data_scale_verdict(one_seed, ["vit", "convit"], "cnn")
    assert v.outcome == "inconclusive" and "too few seeds" in v.reason
    with pytest.raises(UserError, match="two ViT-like models"):
        ex.data_scale_verdict(clear, ["vit"], "cnn")
    unmeasured = [{**row, "attention_distance_px": None} for row in clear]
    v = ex.data_scale_verdict(unmeasured, ["vit", "convit"], "cnn")
    assert v.outcome == "inconclusive" and "mean_attention_distance_px" in v.reason


def test_data_scale_verdict_with_one_model_never_crossing():
    # the less conv-like model never crosses, the more conv-like one does clearly: consistent with the claim
    table = scale_table((30, 50, 65), (45, 65, 76))
    assert ex.data_scale_verdict(table, ["vit", "convit"], "cnn").outcome == "held"
    # measured distances say vit is the more conv-like one: then the same numbers contradict the claim
    swapped = [{**row, "attention_distance_px": {"vit": 1.0, "convit": 6.0}.get(row["label"])} for row in table]
    assert ex.data_scale_verdict(swapped, ["vit", "convit"], "cnn").outcome == "did_not_hold"


def fourier_rows(cnn, vit, ratios=(0.25, 1.0), n=3, spread=0.03):
    out = []
    for i, r in enumerate(ratios):
        for label, mean in (("cnn", cnn[i]), ("vit", vit[i])):
            out += [{"label": label, "ratio": r, "seed": s, "summary": v}
                    for s, v in enumerate(seeds_of(mean, n, spread, seed=stable(label, r)))]
    return out


def test_fourier_verdict_returns_each_outcome():
    v = ex.fourier_verdict(fourier_rows((-1.0, -0.8), (-2.0, -2.5)), "cnn", "vit")
    assert v.outcome == "held" and "grows" in v.sentence
    assert ex.fourier_verdict(fourier_rows((-2.0, -2.5), (-1.0, -0.8)), "cnn", "vit").outcome == "did_not_hold"
    null = ex.fourier_verdict(fourier_rows((-1.5, -1.5), (-1.5, -1.5)), "cnn", "vit")
    assert null.outcome in ("did_not_hold", "inconclusive")
    one = ex.fourier_verdict(fourier_rows((-1.0, -0.8), (-2.0, -2.5), n=1), "cnn", "vit")
    assert one.outcome == "inconclusive" and "too few seeds" in one.reason


def interpolation_inputs(t_by_epoch, n=3, spread=0.02, cnn=-1.0, vit=-3.0):
    """Per-seed summaries placing the hybrid at t(E) between the CNN (t=0) and the ViT (t=1)."""
    by_epoch = {e: seeds_of(cnn + t * (vit - cnn), n, spread, seed=i) for i, (e, t) in enumerate(t_by_epoch.items())}
    by_epoch[None] = seeds_of(cnn, n, spread, seed=99)
    return by_epoch, seeds_of(vit, n, spread, seed=98)


def test_interpolation_verdict_returns_each_outcome():
    v = ex.interpolation_verdict(*interpolation_inputs({0: 0.9, 25: 0.6, 50: 0.3, 75: 0.1}))
    assert v.outcome == "held" and "ρ(E, t)" in v.sentence and v.numbers["rho"] == pytest.approx(-1.0)
    reversed_ = ex.interpolation_verdict(*interpolation_inputs({0: 0.1, 25: 0.3, 50: 0.6, 75: 0.9}))
    assert reversed_.outcome == "did_not_hold"
    flat = ex.interpolation_verdict(*interpolation_inputs({0: 0.05, 25: 0.05, 50: 0.05, 75: 0.05}))
    assert flat.outcome == "did_not_hold" and "spread" in flat.reason  # null: the switch epoch changes nothing
    one = ex.interpolation_verdict(*interpolation_inputs({0: 0.9, 50: 0.3}, n=1))
    assert one.outcome == "inconclusive" and "too few seeds" in one.reason
    no_direction = ex.interpolation_verdict(*interpolation_inputs({0: 0.9, 50: 0.3}, vit=-0.5))
    assert no_direction.outcome == "inconclusive" and "direction" in no_direction.reason
    with pytest.raises(UserError, match="never-switched"):
        ex.interpolation_verdict({0: [1.0]}, [0.0])


def test_verdict_checks_its_outcome_and_numbers():
    with pytest.raises(ValueError, match="outcome"):
        ex.Verdict("c", "maybe", "r", {"difference": 0, "interval": (0, 0), "n": 1})
    with pytest.raises(ValueError, match="interval"):
        ex.Verdict("c", "held", "r", {"difference": 0, "n": 1})


# ----------------------------------------------------------------------------- spectra at a common frequency


def test_summary_at_reads_every_block_at_the_same_frequency():
    curves = {"freqs": [[0.0, 0.25, 0.5, 0.75], [0.0, 0.5], [0.0]], "delta_f": [[0, -1, -2, -3], [0, -4], [0]],
              "high_freq": [-3, -4, 0]}
    assert ex.delta_f_at(curves, 0.5) == [-2.0, -4.0, None]  # the 2x2 map cannot resolve 0.5 pi
    assert ex.delta_f_at(curves, 0.6) == [pytest.approx(-2.4), None, None]
    assert ex.summary_at(curves) == -3.0
    assert ex.high_freq_summary(curves) != ex.summary_at(curves)  # different frequencies per block
    rows_ = ex.fourier_summary_rows({("cnn", 1.0, 0): curves})
    assert rows_ == [{"label": "cnn", "ratio": 1.0, "seed": 0, "summary": -3.0}]


# ----------------------------------------------------------------------------- labels from values


def test_profile_full_with_smoke_values_cannot_be_labelled_full():
    """papermill -p profile full with the smoke values (synthetic data, tiny models) is a pipeline check."""
    for notebook in ex.NOTEBOOKS:
        params = {**ex.notebook_parameters("smoke", notebook), "profile": "full"}
        label = ex.run_label(params)
        assert label.kind == "pipeline_check" and label.disagrees, notebook
        assert "full profile" not in label.note() and "not evidence" in label.note()
        assert "label follows what ran" in label.note()
        caption = ex.provenance(params, [])
        assert "not evidence" in caption and "relabelled by what ran: pipeline check" in caption


def test_labels_follow_the_values():
    full = ex.notebook_parameters("full", "04_prs_cifar100")
    assert ex.run_label(full).kind == "full" and not ex.run_label(full).disagrees
    colab = ex.run_label(ex.notebook_parameters("colab", "04_prs_cifar100"))
    assert colab.kind == "indicative" and "indicative (one seed)" in colab.note()
    custom = ex.run_label({**full, "epochs": 50})
    assert custom.kind == "custom" and "epochs" in custom.note() and custom.disagrees
    tiny_model = ex.run_label({**full, "baselines": ["resnet_tiny", "deit_tiny"]})
    assert tiny_model.kind == "pipeline_check" and "resnet_tiny" in tiny_model.note()
    assert ex.run_label({**full, "epochs": 3}).kind == "pipeline_check"
    assert ex.is_smoke({**full, "dataset": "synthetic"}) and not ex.is_smoke(full)
    # the same values under another run root are still full
    assert ex.run_label({**full, "run_root": "/elsewhere", "data_root": "/data"}).kind == "full"


# ----------------------------------------------------------------------------- the negative control's runs


def test_negative_control_trials_differ_only_in_their_seeds():
    params = ex.notebook_parameters("smoke", "04_prs_cifar100")
    control = ex.negative_control_trials(params)
    assert [t.key["control_arm"] for t in control] == ["A"] * 3 + ["B"] * 3
    configs = [t.config for t in control]
    from prs import config as config_mod

    def without_seed(cfg):
        d = config_mod.to_dict(cfg)
        d["train"].pop("seed")
        return d

    assert all(without_seed(c) == without_seed(configs[0]) for c in configs)
    assert len({t.config.train.seed for t in control}) == 6
    assert ex.negative_control_trials({**params, "negative_control": None}) == []
    with pytest.raises(UserError, match="share seeds"):
        ex.negative_control_trials({**params, "negative_control": {**params["negative_control"], "seeds_b": [2, 3]}})
    with pytest.raises(UserError, match="negative_control"):
        ex.negative_control_trials({**params, "negative_control": {"model": "resnet_tiny"}})
    results = [{"key": t.key} for t in ex.prs_trials(params)]
    experiment, control_results = ex.split_control(results)
    assert len(control_results) == 6 and not any("control_arm" in r["key"] for r in experiment)


def test_control_verdict_from_runs():
    def run(arm, seed, top1):
        return {"config": {"model": {"name": "resnet_tiny"}, "data": {"ratio": 0.25},
                           "train": {"seed": seed, "epochs": 3}},
                "model": {"family": "resnet", "parameters": 1000}, "schedule": {"name": "never"},
                "final": {"test_top1": top1, "test_top5": top1}, "data": {"train_size": 1250}, "wall_time_s": 1.0,
                "throughput_img_s": 1.0, "run_dir": f"r{seed}", "commit": "c", "history": [{}],
                "key": {"label": f"control {arm}", "control_arm": arm}}
    results = [run("A", s, v) for s, v in enumerate([10.0, 11.0, 10.5])]
    results += [run("B", s + 3, v) for s, v in enumerate([10.8, 10.2, 10.4])]
    v = ex.control_verdict(results)
    assert v.outcome != "held" and "control B − control A" in v.sentence
    assert ex.control_verdict([]) is None


def test_prs_ablations_are_not_comparators():
    table = rows({"prs": {1.0: [62.0, 62.2, 61.9]}, "never": {1.0: [58.0, 58.1, 57.9]},
                  "prs_lr_restart": {1.0: [63.0, 63.1, 62.9]}})
    v = ex.prs_verdict(ex.summarize(table))
    assert v.outcome == "held" and "prs_lr_restart" not in v.sentence
    assert ex.prs_verdict(ex.summarize(table), comparators=["prs_lr_restart"]).outcome == "did_not_hold"
