"""Whether each claim of the paper held in this run: one `*_verdict` function per notebook, each
computing the notebook's closing sentence from its results (and the crossover arithmetic behind
the data-scale one)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from prs.errors import UserError
from prs.experiments.claims import PAPER_CLAIMS
from prs.experiments.tables import format_mean_std, summarize


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
