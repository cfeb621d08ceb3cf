"""The statistics the pre-registered rules use (`claims.yaml`): Student's t quantiles, Welch's
interval of a difference of means, a seeded bootstrap over seeds, and Spearman's rank correlation.

Written here, without SciPy (not a dependency): the t distribution's CDF through the regularised
incomplete beta function (its continued fraction, evaluated by the modified Lentz method), and the
quantile by bisection on the CDF. tests/test_claims.py checks the quantiles against tabulated values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz), for x < (a+1)/(a+b+2)."""
    tiny, eps = 1e-300, 1e-15
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= c * d
        if abs(c * d - 1.0) < eps:
            return h
    raise ArithmeticError(f"incomplete beta: the continued fraction did not converge (a={a}, b={b}, x={x})")


def regularized_incomplete_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with `df` > 0 degrees of freedom (non-integer df allowed, as Welch's)."""
    if not df > 0:
        raise ValueError(f"t_cdf: degrees of freedom must be > 0, got {df}")
    tail = 0.5 * regularized_incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p (bisection on `t_cdf` to 1e-12)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"t_quantile: p must be in (0, 1), got {p}")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    while hi - lo > 1e-12 * max(1.0, hi):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class Difference:
    """mean(a) - mean(b) with its interval at `confidence`; None bounds when it cannot be computed."""

    difference: float
    low: float | None
    high: float | None
    n_a: int
    n_b: int
    df: float | None = None

    @property
    def interval(self) -> tuple[float | None, float | None]:
        return (self.low, self.high)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _variance(values: Sequence[float]) -> float:
    m = _mean(values)
    return sum((v - m) ** 2 for v in values) / (len(values) - 1)


def welch_interval(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Difference:
    """Welch's interval for mean(a) - mean(b): t quantile at the Welch-Satterthwaite degrees of freedom.

    With fewer than two values on either side there is no variance: the bounds are None. When both
    sides have no spread at all the interval is the point itself.
    """
    a, b = [float(v) for v in a], [float(v) for v in b]
    if not a or not b:
        raise ValueError("welch_interval: both groups need at least one value")
    diff = _mean(a) - _mean(b)
    if len(a) < 2 or len(b) < 2:
        return Difference(diff, None, None, len(a), len(b))
    va, vb = _variance(a) / len(a), _variance(b) / len(b)
    se2 = va + vb
    if se2 == 0.0:
        return Difference(diff, diff, diff, len(a), len(b), math.inf)
    df = se2 ** 2 / ((va ** 2 / (len(a) - 1) if va else 0.0) + (vb ** 2 / (len(b) - 1) if vb else 0.0))
    half = t_quantile(0.5 + confidence / 2.0, df) * math.sqrt(se2)
    return Difference(diff, diff - half, diff + half, len(a), len(b), df)


def ranks(values: Sequence[float]) -> list[float]:
    """Ranks 1..n, ties given their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return out


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (Pearson's on average ranks); nan when either side is constant."""
    rx, ry = ranks(x), ranks(y)
    mx, my = _mean(rx), _mean(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx, syy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return sxy / math.sqrt(sxx * syy) if sxx and syy else math.nan


def bootstrap_over_seeds(groups: Mapping[object, Sequence[float]], statistic: Callable[[Mapping], float],
                         replicates: int = 2000, confidence: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """The statistic on the groups' means, and its percentile interval when the values of every group
    (one per seed) are resampled with replacement, independently per group.

    statistic({group: mean value}) -> float (may be +-inf, e.g. a crossover outside the grid; nan
    replicates are dropped). Seeded: the same inputs give the same interval.
    """
    rng = np.random.default_rng(seed)
    arrays = {k: np.asarray(v, dtype=float) for k, v in groups.items()}
    point = statistic({k: float(v.mean()) for k, v in arrays.items()})
    draws = []
    for _ in range(replicates):
        means = {k: float(v[rng.integers(0, len(v), len(v))].mean()) for k, v in arrays.items()}
        value = statistic(means)
        if not math.isnan(value):
            draws.append(value)
    if not draws:
        return point, math.nan, math.nan
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(np.asarray(draws), [tail, 1.0 - tail], method="lower")
    return point, float(low), float(high)
