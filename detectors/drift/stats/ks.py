"""Two-sample Kolmogorov-Smirnov test."""

from __future__ import annotations

from functools import lru_cache
from typing import ClassVar

import numpy as np
from scipy.stats import kstwo

from detectors.drift.profile import FeatureProfile
from detectors.drift.stats.base import TestResult, UnivariateTest, require_numeric


@lru_cache(maxsize=8192)
def ks_sf(d: float, en: int) -> float:
    """``kstwo.sf(d, en)``, remembered: it can cost milliseconds (Pomeranz's recursion), and
    the statistic of a given pair of sizes takes few distinct values (multiples of 1/lcm)."""
    return float(kstwo.sf(d, en))


class KolmogorovSmirnov(UnivariateTest):
    """Largest gap between the reference and current empirical CDFs.

    The statistic is computed in O(m log n) by binary search of the window into the sorted
    reference: only the window is sorted. The p-value is the asymptotic two-sided one
    (``kstwo`` at the effective size nm/(n+m)), as in ``scipy.stats.ks_2samp(method="asymp")``.
    The distance is the statistic itself (in [0, 1]).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> ks = KolmogorovSmirnov()
    >>> ks.two_sample(rng.normal(size=2000), rng.normal(size=500)).p_value > 0.05
    True
    >>> ks.two_sample(rng.normal(size=2000), rng.normal(0.3, size=500)).p_value < 0.001
    True

    References
    ----------
    N. Smirnov, "Table for estimating the goodness of fit of empirical distributions",
    Annals of Mathematical Statistics 19(2), 1948.
    """

    name = "ks"
    accepts: ClassVar[frozenset[str]] = frozenset({"numeric"})
    default_threshold = 0.1

    def compare(self, profile: FeatureProfile, current: np.ndarray) -> TestResult:
        prof = require_numeric(profile, self.name)
        ref, cur = prof.sorted, np.sort(current)
        n, m = ref.size, cur.size
        if n == 0 or m == 0:
            return TestResult(self.name, 0.0, None, 0.0, n, m)
        # The ECDF gap only changes at current points: compare right and left limits there.
        # ``cur`` is sorted, so its own counts below/at each value come from its tie runs
        # in O(m) (a run of equal values shares its first and last position).
        new_run = np.empty(m, dtype=bool)
        new_run[0] = True
        np.not_equal(cur[1:], cur[:-1], out=new_run[1:])
        starts = np.maximum.accumulate(np.where(new_run, np.arange(m), 0))
        ends = np.empty(m, dtype=bool)
        ends[:-1], ends[-1] = new_run[1:], True
        stops = np.minimum.accumulate(np.where(ends, np.arange(m), m)[::-1])[::-1] + 1
        gap_right = np.searchsorted(ref, cur, "right") / n - stops / m
        gap_left = np.searchsorted(ref, cur, "left") / n - starts / m
        d = float(max(np.abs(gap_right).max(), np.abs(gap_left).max()))
        en = max(round(n * m / (n + m)), 1)
        return TestResult(self.name, d, ks_sf(d, en), d, n, m)
