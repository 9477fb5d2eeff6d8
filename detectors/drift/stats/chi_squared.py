"""Pearson's chi-squared test of homogeneity for categories."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from detectors.drift.profile import FeatureProfile
from detectors.drift.stats.base import TestResult, UnivariateTest, chi2_sf, occupied

#: Cells expected to hold fewer current rows than this are pooled into one.
MIN_EXPECTED = 5.0


def pool_sparse(ref_counts: np.ndarray, cur_counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pool cells whose smaller expected count is under ``MIN_EXPECTED`` into one cell, so
    that the chi-squared approximation holds (Cochran's rule)."""
    n, m = ref_counts.sum(), cur_counts.sum()
    total = ref_counts + cur_counts
    expected_min = total * min(n, m) / max(n + m, 1)
    sparse = expected_min < MIN_EXPECTED
    if not sparse.any():
        return ref_counts, cur_counts
    ref = np.append(ref_counts[~sparse], ref_counts[sparse].sum())
    cur = np.append(cur_counts[~sparse], cur_counts[sparse].sum())
    if ref.size > 1 and (ref[-1] + cur[-1]) * min(n, m) / (n + m) < MIN_EXPECTED:
        # Still sparse: fold the pooled cell into the smallest remaining one.
        j = int(np.argmin(ref[:-1] + cur[:-1]))
        ref[j] += ref[-1]
        cur[j] += cur[-1]
        ref, cur = ref[:-1], cur[:-1]
    return ref, cur


class ChiSquared(UnivariateTest):
    """Homogeneity of the category mix between reference and window (2 x K table).

    Categories never seen in the reference form their own cell, so new values count as
    drift; sparse cells are pooled. The distance is the total-variation distance between
    the two category distributions (half the L1 gap of the shares), threshold 0.1.

    Examples
    --------
    >>> import numpy as np
    >>> chi2 = ChiSquared()
    >>> ref = np.array(["a"] * 600 + ["b"] * 400, dtype=object)
    >>> chi2.two_sample(ref, np.array(["a"] * 60 + ["b"] * 40, dtype=object)).p_value > 0.5
    True
    >>> chi2.two_sample(ref, np.array(["a"] * 30 + ["b"] * 40 + ["c"] * 30, dtype=object)).p_value < 1e-6
    True

    References
    ----------
    K. Pearson, "On the criterion that a given system of deviations from the probable...",
    Philosophical Magazine 50(302), 1900.
    """

    name = "chi2"
    accepts: ClassVar[frozenset[str]] = frozenset({"categorical"})
    default_threshold = 0.1

    def compare(self, profile: FeatureProfile, current: np.ndarray) -> TestResult:
        ref_counts, cur_counts = occupied(*profile.bin_current(current))
        n, m = int(ref_counts.sum()), int(cur_counts.sum())
        if n == 0 or m == 0:
            return TestResult(self.name, 0.0, None, 0.0, n, m)
        tv = float(np.abs(ref_counts / n - cur_counts / m).sum() / 2)
        ref, cur = pool_sparse(ref_counts, cur_counts)
        if ref.size < 2:
            return TestResult(self.name, 0.0, 1.0, tv, n, m)
        total = ref + cur
        e_ref, e_cur = total * n / (n + m), total * m / (n + m)
        stat = float(np.sum((ref - e_ref) ** 2 / e_ref + (cur - e_cur) ** 2 / e_cur))
        return TestResult(self.name, stat, chi2_sf(stat, ref.size - 1), tv, n, m)
