"""Hellinger distance."""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from detectors.drift.profile import FeatureProfile
from detectors.drift.stats.base import TestResult, UnivariateTest, chi2_sf, occupied


class Hellinger(UnivariateTest):
    """``H = sqrt(sum (sqrt p - sqrt q)^2 / 2)`` over bins/categories, in [0, 1].

    By the delta method ``4 sum (sqrt p - sqrt q)^2 / (1/n + 1/m)`` is asymptotically
    chi-squared with B - 1 degrees of freedom under no drift, which gives the p-value.

    Examples
    --------
    >>> import numpy as np
    >>> h = Hellinger()
    >>> ref = np.array(["a"] * 500 + ["b"] * 500, dtype=object)
    >>> round(h.two_sample(ref, np.array(["a"] * 500 + ["b"] * 500, dtype=object)).distance, 3)
    0.0

    References
    ----------
    E. Hellinger, "Neue Begründung der Theorie quadratischer Formen von unendlichvielen
    Veränderlichen", Journal für die reine und angewandte Mathematik 136, 1909.
    """

    name = "hellinger"
    accepts: ClassVar[frozenset[str]] = frozenset({"numeric", "categorical"})
    default_threshold = 0.1

    def compare(self, profile: FeatureProfile, current: np.ndarray) -> TestResult:
        ref_counts, cur_counts = occupied(*profile.bin_current(current))
        n, m = int(ref_counts.sum()), int(cur_counts.sum())
        if n == 0 or m == 0:
            return TestResult(self.name, 0.0, None, 0.0, n, m)
        sq = float(np.sum((np.sqrt(ref_counts / n) - np.sqrt(cur_counts / m)) ** 2))
        p_value = chi2_sf(4 * sq / (1.0 / n + 1.0 / m), ref_counts.size - 1)
        h = math.sqrt(sq / 2)
        return TestResult(self.name, h, p_value, h, n, m)
