"""Jensen-Shannon distance."""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from detectors.drift.profile import FeatureProfile
from detectors.drift.stats.base import TestResult, UnivariateTest, chi2_sf, occupied


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-np.sum(p * np.log(p)))


class JensenShannon(UnivariateTest):
    """Square root of the Jensen-Shannon divergence (base 2, in [0, 1]) over bins/categories.

    The p-value is the G-test's: with weights n/N and m/N the divergence (in nats) is the
    mutual information between sample and bin, and ``2 N`` times it is asymptotically
    chi-squared with B - 1 degrees of freedom. The reported distance is the usual
    equal-weight one (threshold 0.1 by convention).

    Examples
    --------
    >>> import numpy as np
    >>> js = JensenShannon()
    >>> ref = np.array(["a"] * 500 + ["b"] * 500, dtype=object)
    >>> round(js.two_sample(ref, np.array(["a"] * 900 + ["b"] * 100, dtype=object)).distance, 2)
    0.38

    References
    ----------
    J. Lin, "Divergence measures based on the Shannon entropy", IEEE Transactions on
    Information Theory 37(1), 1991.
    """

    name = "js"
    accepts: ClassVar[frozenset[str]] = frozenset({"numeric", "categorical"})
    default_threshold = 0.1

    def compare(self, profile: FeatureProfile, current: np.ndarray) -> TestResult:
        ref_counts, cur_counts = occupied(*profile.bin_current(current))
        n, m = int(ref_counts.sum()), int(cur_counts.sum())
        if n == 0 or m == 0:
            return TestResult(self.name, 0.0, None, 0.0, n, m)
        p, q = ref_counts / n, cur_counts / m
        mix = (p + q) / 2
        jsd = max(_entropy(mix) - (_entropy(p) + _entropy(q)) / 2, 0.0) / math.log(2)
        pooled = (ref_counts + cur_counts) / (n + m)
        mutual_info = _entropy(pooled) - (n * _entropy(p) + m * _entropy(q)) / (n + m)
        p_value = chi2_sf(2 * (n + m) * max(mutual_info, 0.0), ref_counts.size - 1)
        return TestResult(self.name, math.sqrt(jsd), p_value, math.sqrt(jsd), n, m)
