"""Change in the missing-value rate of a feature."""

from __future__ import annotations

import math

from scipy.stats import fisher_exact, norm

from detectors.drift.stats.base import TestResult


class MissingRate:
    """Two-proportion test of the missing-value rate, reference vs window.

    Fisher's exact test when an expected cell is small, else the pooled two-proportion
    z-test. The distance is the absolute change of the rate (threshold 0.05).

    Examples
    --------
    >>> MissingRate().compare(10, 1000, 12, 1000).p_value > 0.5
    True
    >>> MissingRate().compare(10, 1000, 80, 1000).p_value < 1e-9
    True

    References
    ----------
    R. A. Fisher, "On the interpretation of chi-squared from contingency tables",
    Journal of the Royal Statistical Society 85(1), 1922.
    """

    name = "missing_rate"
    default_threshold = 0.05

    def compare(self, ref_missing: int, ref_total: int, cur_missing: int, cur_total: int) -> TestResult:
        if ref_total == 0 or cur_total == 0:
            return TestResult(self.name, 0.0, None, 0.0, ref_total, cur_total)
        p_ref, p_cur = ref_missing / ref_total, cur_missing / cur_total
        pooled = (ref_missing + cur_missing) / (ref_total + cur_total)
        expected = min(pooled, 1 - pooled) * min(ref_total, cur_total)
        if expected < 5:
            table = [[ref_missing, ref_total - ref_missing], [cur_missing, cur_total - cur_missing]]
            p = float(fisher_exact(table).pvalue)
            stat = p_cur - p_ref
        else:
            se = math.sqrt(pooled * (1 - pooled) * (1 / ref_total + 1 / cur_total))
            stat = (p_cur - p_ref) / se
            p = float(2 * norm.sf(abs(stat)))
        return TestResult(self.name, stat, min(p, 1.0), abs(p_cur - p_ref), ref_total, cur_total)
