"""Whether each claim of the paper held in this run, by the pre-registered rules of `claims.yaml`.

Every verdict is three-valued (held, did not hold, inconclusive), says why, and carries its numbers
(the difference, its interval and the seed counts behind it), which it prints. One `*_verdict`
function per notebook, the negative control (two arms that differ only in their seeds), and the
crossover arithmetic of the data-scale claim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from prs.errors import UserError
from prs.experiments import stats
from prs.experiments.claims import OUTCOMES, PAPER_CLAIMS, rules
from prs.experiments.tables import summarize

TOO_FEW_SEEDS = "too few seeds"
ABLATION_PREFIX = "prs_"  # notebook 04 entries that vary PRS itself: not comparators of claim 4
NOT_TESTABLE = "not testable on this data range"
DISTANCE_FIELD = "attention_distance_px"  # results_table's column, from the history's mean_attention_distance_px


def _fmt(x: float | None, digits: int = 2, sign: bool = True) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if math.isinf(x):
        return "+∞" if x > 0 else "−∞"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def _interval(low, high, digits: int = 2) -> str:
    return "no interval" if low is None else f"[{_fmt(low, digits)}, {_fmt(high, digits)}]"


@dataclass(frozen=True)
class Verdict:
    """A claim's outcome in this run: `outcome` is held, did_not_hold or inconclusive; `reason` says
    why; `numbers` holds at least difference, interval (low, high) and n (seeds per side)."""

    claim: str
    outcome: str
    reason: str
    numbers: dict = field(default_factory=dict)
    sentence: str = ""
    subject: str = "the paper's claim"

    def __post_init__(self):
        if self.outcome not in OUTCOMES:
            raise ValueError(f"Verdict: outcome '{self.outcome}' is not one of {', '.join(OUTCOMES)}")
        missing = [k for k in ("difference", "interval", "n") if k not in self.numbers]
        if missing:
            raise ValueError(f"Verdict: numbers lack {', '.join(missing)}")

    @property
    def held(self) -> bool | None:
        return {"held": True, "did_not_hold": False, "inconclusive": None}[self.outcome]

    def numbers_text(self) -> str:
        n = self.numbers
        digits = n.get("digits", 2)
        sides = n["n"] if isinstance(n["n"], (tuple, list)) else (n["n"],)
        return (f"{n.get('what', 'difference')} {_fmt(n['difference'], digits)}, "
                f"{rules().confidence:.0%} interval {_interval(*n['interval'], digits)}, "
                f"minimum effect {_fmt(n.get('min_effect'), digits, sign=False)}, "
                f"n = {' vs '.join(str(s) for s in sides)} seed(s)")

    def markdown(self, label) -> str:
        """The notebook's closing lines. `label`: the run's `RunLabel` (`prs.experiments.run_label`)."""
        word = {"held": "held", "did_not_hold": "did not hold", "inconclusive": "was inconclusive"}[self.outcome]
        return (f"**In this run {self.subject} {word}** ({self.reason}). {self.sentence}\n\n"
                f"Numbers: {self.numbers_text()}. *({label.note()}.)*")


@dataclass(frozen=True)
class Comparison:
    """mean(a) - mean(b) against a minimum effect: ahead, excluded, straddles or too few seeds."""

    name: str
    diff: stats.Difference
    min_effect: float

    @property
    def status(self) -> str:
        d = self.diff
        if min(d.n_a, d.n_b) < rules().min_seeds or d.low is None:
            return TOO_FEW_SEEDS
        if d.low > 0 and d.difference >= self.min_effect:
            return "ahead"
        if d.high < self.min_effect:
            return "excluded"
        return "straddles"

    def text(self, digits: int = 2) -> str:
        d = self.diff
        return (f"{self.name}: {_fmt(d.difference, digits)} {_interval(d.low, d.high, digits)}, "
                f"n {d.n_a}/{d.n_b} ({self.status})")


def _decide(comparisons: Sequence[Comparison], what_excluded: str) -> tuple[str, str]:
    """held when every comparison is ahead, did_not_hold when one excludes the minimum effect."""
    statuses = [c.status for c in comparisons]
    if "excluded" in statuses:
        names = ", ".join(c.name for c in comparisons if c.status == "excluded")
        return "did_not_hold", f"{what_excluded} is excluded for {names}"
    if all(s == "ahead" for s in statuses):
        return "held", "every interval clears the minimum effect"
    if TOO_FEW_SEEDS in statuses:
        return "inconclusive", f"{TOO_FEW_SEEDS}: at least {rules().min_seeds} per side are needed for an interval"
    names = ", ".join(c.name for c in comparisons if c.status == "straddles")
    return "inconclusive", f"the interval straddles the minimum effect for {names}"


def _numbers(c: Comparison, what: str, comparisons: Sequence[Comparison], digits: int = 2, **extra) -> dict:
    d = c.diff
    return {"what": what, "difference": d.difference, "interval": d.interval, "n": (d.n_a, d.n_b),
            "min_effect": c.min_effect, "digits": digits,
            "comparisons": [{"name": x.name, "difference": x.diff.difference, "interval": x.diff.interval,
                             "n": (x.diff.n_a, x.diff.n_b), "status": x.status} for x in comparisons], **extra}


# ----------------------------------------------------------------------------- claim 4 and the negative control


def _values(summary: Sequence[Mapping]) -> dict[str, list[float]]:
    return {s["label"]: list(s["values"]) for s in summary}


def prs_verdict(summary: Sequence[Mapping], prs_label: str = "prs", comparators: Sequence[str] | None = None) -> Verdict:
    """Claim 4: PRS's top-1 above every comparator's by the minimum effect, by Welch's interval.

    summary: rows of `summarize(rows, by=("label",))` (their "values" are the per-seed top-1s);
    comparators: the entries PRS must beat (default: every other entry but the `prs_*` ablations of
    PRS itself, e.g. prs_lr_restart).
    """
    rule = rules().claim("04_prs_cifar100")
    values = _values(summary)
    if prs_label not in values:
        raise UserError(f"prs_verdict: no entry '{prs_label}' in the summary; labels: {', '.join(values)}")
    others = [label for label in (comparators or values)
              if label != prs_label and (comparators or not label.startswith(ABLATION_PREFIX))]
    if not others:
        raise UserError("prs_verdict: nothing to compare PRS with")
    missing = [label for label in others if label not in values]
    if missing:
        raise UserError(f"prs_verdict: comparators {', '.join(missing)} have no results; labels: {', '.join(values)}")
    comparisons = [Comparison(label, stats.welch_interval(values[prs_label], values[label], rules().confidence),
                              rule.minimum_effect) for label in others]
    outcome, reason = _decide(comparisons, f"an advantage of {rule.minimum_effect:g} points")
    closest = min(comparisons, key=lambda c: c.diff.difference)
    sentence = ("PRS minus each comparator, top-1 points with the interval and seeds per side: "
                + "; ".join(c.text() for c in comparisons) + ".")
    return Verdict(PAPER_CLAIMS["04_prs_cifar100"], outcome, reason,
                   _numbers(closest, f"PRS − {closest.name} (the closest comparator)", comparisons), sentence)


def negative_control_verdict(a: Sequence[float], b: Sequence[float], names: tuple[str, str] = ("arm B", "arm A")
                             ) -> Verdict:
    """Two arms of one configuration that differ only in their seeds, decided by claim 4's rule.

    It must never come out held (`claims.yaml`, negative_control.expected): if it does, the rule
    calls seed noise a result.
    """
    rule = rules().claim("04_prs_cifar100")
    c = Comparison(f"{names[0]} − {names[1]}", stats.welch_interval(b, a, rules().confidence), rule.minimum_effect)
    outcome, reason = _decide([c], f"a difference of {rule.minimum_effect:g} points")
    allowed = rules().negative_control["expected"]
    passed = outcome in allowed
    sentence = (f"Negative control: {c.text()}. The two arms differ only in their seeds, so the rule must not "
                f"call this held; the control {'passed' if passed else 'FAILED: the rule called seed noise a result'}.")
    return Verdict("negative control: identical configurations, different seeds", outcome, reason,
                   _numbers(c, c.name, [c], control_passed=passed), sentence, subject="the negative control")


# ----------------------------------------------------------------------------- claim 1: crossovers


def _crossover(ratios: Sequence[float], diff: Sequence[float]) -> float | None:
    """Where the advantage `diff` (over ascending `ratios`) turns positive for good, in log ratio; None if never."""
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
    return _crossover(*_advantage(table, model, reference, value))


def crossover_text(table: Iterable[Mapping], model: str, reference: str, value: str = "top1") -> str:
    """"≈ 32%", "≤ 5%" (ahead at every ratio) or "never (up to 100%)"."""
    ratios, diff = _advantage(table, model, reference, value)
    if diff[-1] <= 0:
        return f"never (up to {ratios[-1]:.0%})"
    if all(d > 0 for d in diff):
        return f"≤ {ratios[0]:.0%}"
    return f"≈ {crossover_ratio(table, model, reference, value):.0%}"


def measured_distances(table: Sequence[Mapping], models: Sequence[str]) -> dict[str, float | None]:
    """Each model's mean attention distance (px) over its runs, None where a run did not measure it."""
    out = {}
    for m in models:
        values = [row.get(DISTANCE_FIELD) for row in table if row["label"] == m]
        out[m] = None if not values or any(v is None for v in values) else sum(values) / len(values)
    return out


def _log_crossover(means: Mapping, model: str, reference: str, ratios: Sequence[float]) -> float:
    r = _crossover(ratios, [means[(model, x)] - means[(reference, x)] for x in ratios])
    return math.inf if r is None else math.log(r)


def data_scale_verdict(table: Sequence[Mapping], models: Sequence[str], reference: str) -> Verdict:
    """Claim 1, re-posed so that it can fail: ordered by measured convolution-likeness (smaller mean
    attention distance = more convolution-like, not the profile's list order), adjacent models'
    crossovers must differ by the minimum effect in log ratio, the more convolution-like crossing first.

    The interval of D = log r*(less) - log r*(more) comes from a bootstrap over seeds; a model that
    never crosses within the grid has r* = infinity; a pair where neither crosses is not testable.
    """
    r = rules()
    rule = r.claim("01_data_scale")
    if len(set(models)) < 2:
        raise UserError(f"data_scale_verdict: needs at least two ViT-like models to order, got {list(models)}")
    ratios = sorted({row["ratio"] for row in table if row["label"] == reference})
    cells = {(s["label"], s["ratio"]): s["values"] for s in summarize(table, by=("label", "ratio"))}
    for m in [reference, *models]:
        for x in ratios:
            if (m, x) not in cells:
                raise UserError(f"data_scale_verdict: no results for '{m}' at ratio {x}")
    n = min(len(cells[(m, x)]) for m in [reference, *models] for x in ratios)
    shown = ", ".join(f"{m}: {crossover_text(table, m, reference)}" for m in models)
    distance = measured_distances(table, models)
    base = {"what": "log r*(less) − log r*(more conv-like)", "difference": math.nan, "interval": (None, None),
            "n": n, "min_effect": rule.minimum_effect, "crossovers": shown, "distances": distance}
    unmeasured = [m for m, d in distance.items() if d is None]
    if unmeasured:
        return Verdict(PAPER_CLAIMS["01_data_scale"], "inconclusive",
                       f"convolution-likeness not measured: the runs of {', '.join(unmeasured)} have no "
                       f"mean_attention_distance_px", base,
                       f"Crossover ratios ({shown}) cannot be ordered without a measured convolution-likeness.")
    order = sorted(models, key=lambda m: -distance[m])  # least convolution-like (largest distance) first
    by_distance = " → ".join(f"{m} ({distance[m]:.2f} px)" for m in order)
    point = {m: crossover_ratio(table, m, reference) for m in models}
    if all(c is None for c in point.values()):
        return Verdict(PAPER_CLAIMS["01_data_scale"], "inconclusive", NOT_TESTABLE, base,
                       f"No ViT-like model overtook {reference} at any data ratio up to {ratios[-1]:.0%} "
                       f"({shown}); order by measured distance: {by_distance}.")
    comparisons = []
    for less, more in zip(order, order[1:]):
        if point[less] is None and point[more] is None:
            continue
        if n < r.min_seeds:
            d = math.log(point[less] or math.inf) - math.log(point[more] or math.inf)
            comparisons.append(Comparison(f"{less} vs {more}", stats.Difference(d, None, None, n, n),
                                          rule.minimum_effect))
            continue
        groups = {(m, x): cells[(m, x)] for m in (reference, less, more) for x in ratios}

        def statistic(means, less=less, more=more):
            a, b = _log_crossover(means, less, reference, ratios), _log_crossover(means, more, reference, ratios)
            return 0.0 if math.isinf(a) and math.isinf(b) else a - b

        d, low, high = stats.bootstrap_over_seeds(groups, statistic, r.bootstrap_replicates, r.confidence)
        comparisons.append(Comparison(f"{less} vs {more}", stats.Difference(d, low, high, n, n), rule.minimum_effect))
    outcome, reason = _decide(comparisons, "the more convolution-like model crossing first by the minimum effect")
    closest = min(comparisons, key=lambda c: c.diff.difference)
    sentence = (f"Crossover ratios: {shown}. Measured order, least to most convolution-like: {by_distance}. "
                "Per adjacent pair, D = log r*(less) − log r*(more): " + "; ".join(c.text() for c in comparisons)
                + ".")
    return Verdict(PAPER_CLAIMS["01_data_scale"], outcome, reason,
                   _numbers(closest, base["what"], comparisons, crossovers=shown, distances=distance), sentence)


# ----------------------------------------------------------------------------- claims 2 and 3: spectra


def fourier_verdict(rows: Sequence[Mapping], cnn: str, vit: str) -> Verdict:
    """Claim 2: at a common normalised frequency, the CNN keeps more high-frequency amplitude than
    the ViT at every data ratio, by the minimum effect, by Welch's interval over seeds.

    rows: {"label", "ratio", "seed", "summary"} per run (`fourier_summary_rows`). The trend of the
    contrast with the data ratio is reported, not tested.
    """
    rule = rules().claim("02_fourier")
    by = {(s["label"], s["ratio"]): s["values"] for s in summarize(rows, by=("label", "ratio"), value="summary")}
    ratios = sorted({x for (label, x) in by if label in (cnn, vit)})
    missing = [f"{m} at {x}" for m in (cnn, vit) for x in ratios if (m, x) not in by]
    if missing:
        raise UserError(f"fourier_verdict: no Fourier summary for {', '.join(missing)}")
    comparisons = [Comparison(f"{x:.0%} of the data", stats.welch_interval(by[(cnn, x)], by[(vit, x)],
                                                                           rules().confidence), rule.minimum_effect)
                   for x in ratios]
    outcome, reason = _decide(comparisons, f"a contrast of {rule.minimum_effect:g}")
    first, last = comparisons[0].diff.difference, comparisons[-1].diff.difference
    trend = "grows" if last > first else "shrinks" if last < first else "stays level"
    closest = min(comparisons, key=lambda c: c.diff.difference)
    sentence = (f"Contrast C = S({cnn}) − S({vit}), the mean ΔF over blocks at the common frequency, per data "
                f"ratio: " + "; ".join(c.text() for c in comparisons)
                + f". From the smallest to the largest ratio the contrast {trend} ({_fmt(first)} → {_fmt(last)}); "
                "the abstract states no direction for this, so it is reported, not tested.")
    return Verdict(PAPER_CLAIMS["02_fourier"], outcome, reason,
                   _numbers(closest, f"C at {closest.name}", comparisons), sentence)


def interpolation_positions(summary_by_epoch: Mapping[int | None, float], vit_summary: float) -> dict:
    """Where each switch epoch E puts the hybrid between its CNN end (never) and the ViT: 0 = CNN, 1 = ViT."""
    cnn = summary_by_epoch[None]
    span = vit_summary - cnn
    if span == 0:
        return {e: math.nan for e in summary_by_epoch}
    return {e: (s - cnn) / span for e, s in summary_by_epoch.items()}


def _interpolation_statistics(means: Mapping, finite: Sequence[int]) -> tuple[float, float]:
    pos = interpolation_positions({e: means[e] for e in [*finite, None]}, means["vit"])
    t = [pos[e] for e in finite]
    return stats.spearman(finite, t), t[0] - t[-1]


def interpolation_verdict(by_epoch: Mapping[int | None, Sequence[float]], vit: Sequence[float]) -> Verdict:
    """Claim 3: the later the switch E, the smaller the hybrid's position t(E) towards the ViT.

    by_epoch: {E (None = never, the CNN end): per-seed Fourier summaries}; vit: the ViT's. Held when
    the bootstrap interval of Spearman's rho(E, t) is below 0 and that of the spread t(E_min) - t(E_max)
    above the minimum effect.
    """
    r = rules()
    rule = r.claim("03_interpolation")
    if None not in by_epoch:
        raise UserError("interpolation_verdict: needs the never-switched hybrid (E = None), the CNN end")
    finite = sorted(e for e in by_epoch if e is not None)
    n = min(len(v) for v in [*by_epoch.values(), vit])
    means = {e: sum(v) / len(v) for e, v in by_epoch.items()}
    means["vit"] = sum(vit) / len(vit)
    pos = interpolation_positions({e: means[e] for e in by_epoch}, means["vit"])
    shown = ", ".join(f"E={e}: {pos[e]:.0%}" for e in finite)
    base = {"what": "spread t(E_min) − t(E_max)", "difference": math.nan, "interval": (None, None), "n": n,
            "min_effect": rule.minimum_effect}
    if not means["vit"] < means[None]:
        return Verdict(PAPER_CLAIMS["03_interpolation"], "inconclusive",
                       "no CNN-to-ViT direction: the ViT kept at least as much high-frequency amplitude as the CNN",
                       base, f"S(ViT) {means['vit']:.2f} vs S(CNN) {means[None]:.2f}.")
    if len(finite) < 2:
        return Verdict(PAPER_CLAIMS["03_interpolation"], "inconclusive", "fewer than two finite switch epochs",
                       base, f"Positions t: {shown}.")
    rho, spread = _interpolation_statistics(means, finite)
    if n < r.min_seeds:
        spread_c = Comparison("spread", stats.Difference(spread, None, None, n, n), rule.minimum_effect)
        rho_low = rho_high = None
    else:
        groups = {**{e: list(v) for e, v in by_epoch.items()}, "vit": list(vit)}
        _, rho_low, rho_high = stats.bootstrap_over_seeds(
            groups, lambda m: _interpolation_statistics(m, finite)[0], r.bootstrap_replicates, r.confidence)
        _, s_low, s_high = stats.bootstrap_over_seeds(
            groups, lambda m: _interpolation_statistics(m, finite)[1], r.bootstrap_replicates, r.confidence)
        spread_c = Comparison("spread", stats.Difference(spread, s_low, s_high, n, n), rule.minimum_effect)
    if n < r.min_seeds:
        outcome, reason = "inconclusive", f"{TOO_FEW_SEEDS}: at least {r.min_seeds} per switch epoch are needed"
    elif spread_c.status == "excluded" or (rho_low is not None and rho_low > 0):
        outcome = "did_not_hold"
        reason = ("a spread of the minimum effect is excluded" if spread_c.status == "excluded"
                  else "t rises with the switch epoch (the interval of ρ lies above 0)")
    elif spread_c.status == "ahead" and rho_high is not None and rho_high < 0:
        outcome, reason = "held", "ρ's interval lies below 0 and the spread's above the minimum effect"
    else:
        outcome, reason = "inconclusive", "an interval straddles its threshold (ρ against 0, or the spread)"
    rho_text = f"ρ(E, t) {_fmt(rho)} {_interval(rho_low, rho_high)}"
    sentence = (f"Position t from the CNN (0) to the ViT (1): {shown} (never: 0%). {rho_text}; "
                f"{spread_c.text()}.")
    numbers = _numbers(spread_c, "spread t(E_min) − t(E_max)", [spread_c], rho=rho, rho_interval=(rho_low, rho_high))
    return Verdict(PAPER_CLAIMS["03_interpolation"], outcome, reason, numbers, sentence)
