"""Population Stability Index."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from detectors.drift.profile import FeatureProfile
from detectors.drift.stats.base import TestResult, UnivariateTest, chi2_sf, occupied, proportions


class PopulationStabilityIndex(UnivariateTest):
    """``PSI = sum (q - p) ln(q / p)`` over reference quantile bins (numeric) or categories.

    Categories unseen in the reference fall in their own cell. Under no drift
    ``PSI / (1/n + 1/m)`` is asymptotically chi-squared with B - 1 degrees of freedom
    (Yurdakul 2018), which gives the p-value; the customary thresholds are 0.1 (moderate)
    and 0.2 (significant).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(4)
    >>> psi = PopulationStabilityIndex()
    >>> psi.two_sample(rng.normal(size=5000), rng.normal(size=5000)).distance < 0.02
    True
    >>> psi.two_sample(rng.normal(size=5000), rng.normal(1.0, size=5000)).distance > 0.2
    True

    References
    ----------
    B. Yurdakul, "Statistical properties of population stability index", PhD thesis,
    Western Michigan University, 2018.
    """

    name = "psi"
    accepts: ClassVar[frozenset[str]] = frozenset({"numeric", "categorical"})
    default_threshold = 0.2

    def compare(self, profile: FeatureProfile, current: np.ndarray) -> TestResult:
        ref_counts, cur_counts = occupied(*profile.bin_current(current))
        n, m = int(ref_counts.sum()), int(cur_counts.sum())
        if n == 0 or m == 0:
            return TestResult(self.name, 0.0, None, 0.0, n, m)
        p, q = proportions(ref_counts, cur_counts)
        psi = float(np.sum((q - p) * np.log(q / p)))
        p_value = chi2_sf(psi / (1.0 / n + 1.0 / m), ref_counts.size - 1)
        return TestResult(self.name, psi, p_value, psi, n, m)
