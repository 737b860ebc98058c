"""Statistics a reviewer accepts: paired differences over seeds with a 95% t-interval, its
p-value, Holm's correction over a family of them, and whether a learning curve has flattened.

Pure Python (no SciPy): the two-sided 95% Student-t quantiles are the standard table
values; between tabulated degrees of freedom they are interpolated in 1/df (exact to the
third decimal), and beyond 120 the normal quantile is used.  p-values come from Student's t
distribution through the regularized incomplete beta function (its continued fraction).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# the study's rule: no claim from fewer seeds (tables say "too few seeds"; the standard study plans
# at least this many for every cell)
MIN_SEEDS_FOR_A_CLAIM = 3

# t_{0.975, df}: the usual table (e.g. NIST/SEMATECH e-Handbook, table 1.3.6.7.2)
_T975 = {
    1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
    11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086,
    21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045, 30: 2.042,
    40: 2.021, 60: 2.000, 120: 1.980,
}  # fmt: skip
_Z975 = 1.960


def t975(df: int) -> float:
    """Two-sided 95% quantile of Student's t with ``df`` degrees of freedom."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df in _T975:
        return _T975[df]
    if df > 120:
        return _Z975
    lo = max(k for k in _T975 if k < df)
    hi = min(k for k in _T975 if k > df)
    w = (1 / lo - 1 / df) / (1 / lo - 1 / hi)
    return _T975[lo] + w * (_T975[hi] - _T975[lo])


def regularized_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b), the regularized incomplete beta function, by its continued fraction (Lentz's
    method, as in Numerical Recipes' ``betai``): converges in a few dozen terms for the df here."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x > (a + 1) / (a + b + 2):  # the fraction converges fast only below this point: use the symmetry
        return 1.0 - front * _beta_fraction(1.0 - x, b, a) / b
    return front * _beta_fraction(x, a, b) / a


def _beta_fraction(x: float, a: float, b: float, terms: int = 300, eps: float = 1e-15) -> float:
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, terms + 1):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):  # fmt: skip
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def t_two_sided_p(t: float, df: int) -> float:
    """P(|T| >= |t|) for Student's t with ``df`` degrees of freedom."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if math.isnan(t):
        return math.nan
    if math.isinf(t):
        return 0.0
    return regularized_beta(df / (df + t * t), df / 2, 0.5)


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjustment of a family's p-values (same order; NaN stays NaN and does not
    count in the family): an adjusted p below 0.05 holds with a family-wise error of 5%."""
    ranked = sorted((p, i) for i, p in enumerate(pvalues) if not math.isnan(p))
    adjusted = [math.nan] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(ranked):
        running = max(running, min(1.0, (len(ranked) - rank) * p))
        adjusted[i] = running
    return adjusted


@dataclass(frozen=True)
class Interval:
    """Mean of ``n`` values with its 95% t-interval and standard error; ``excludes_zero`` marks a
    difference that holds, ``p_value`` is its two-sided t-test against zero."""

    mean: float
    low: float
    high: float
    n: int
    se: float = math.nan

    @property
    def excludes_zero(self) -> bool:
        return self.n >= 2 and (self.low > 0 or self.high < 0)

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    @property
    def p_value(self) -> float:
        """NaN below two values; with no spread at all, 1 for a zero mean and 0 otherwise."""
        if self.n < 2 or math.isnan(self.se):
            return math.nan
        if self.se == 0:
            return 1.0 if self.mean == 0 else 0.0
        return t_two_sided_p(self.mean / self.se, self.n - 1)


def mean_interval(values: list[float]) -> Interval:
    """Mean and 95% t-interval of independent values (NaN-free); a single value gets an infinite one."""
    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    m = sum(xs) / n
    if n == 1:
        return Interval(m, -math.inf, math.inf, 1)
    se = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1)) / math.sqrt(n)
    h = t975(n - 1) * se
    return Interval(m, m - h, m + h, n, se)


def paired_difference(a: dict, b: dict) -> Interval:
    """``a - b`` paired on the keys both have measured (seeds; a value that is missing or NaN, such as
    global accuracy in a study without the global protocol, is not a measurement): the mean
    difference with its 95% t-interval."""
    keys = sorted(k for k in set(a) & set(b) if _measured(a[k]) and _measured(b[k]))
    return mean_interval([a[k] - b[k] for k in keys])


def flattened(values: list[float], window: int = 5, tolerance: float = 0.005) -> tuple[bool, float]:
    """Whether a curve has flattened: the mean of its last ``window`` values differs from the mean of
    the ``window`` before by less than ``tolerance`` (0.005 = half a point of accuracy).

    Returns (flattened, that difference); a curve shorter than two windows is not flattened.
    """
    xs = [v for v in values if not math.isnan(v)]
    if len(xs) < 2 * window:
        return False, math.nan
    delta = sum(xs[-window:]) / window - sum(xs[-2 * window : -window]) / window
    return abs(delta) < tolerance, delta


def _measured(v) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))
