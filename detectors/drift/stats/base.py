"""The interface every univariate drift test implements, and the merge they share.

A test compares a reference ``FeatureProfile`` (computed once) with the present values of
one feature in a window and returns a ``TestResult``: the test statistic, a p-value where
the test has a calibrated null distribution, and a distance on the test's conventional
scale (used when a monitor sets a distance threshold instead of a significance level).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np

from detectors.drift.profile import (
    CategoricalProfile,
    FeatureProfile,
    NumericProfile,
    current_values,
    feature_profile,
)


@dataclass(frozen=True)
class TestResult:
    test: str
    statistic: float
    p_value: float | None
    distance: float
    n_reference: int
    n_current: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class UnivariateTest(ABC):
    """A two-sample test of one feature against its reference profile."""

    #: Registry name (``test:`` in a monitor).
    name: ClassVar[str]
    #: Feature kinds the test accepts: ``numeric``, ``categorical`` or both.
    accepts: ClassVar[frozenset[str]]
    #: Conventional drift threshold on ``distance`` (used when the monitor sets none).
    default_threshold: ClassVar[float]

    __test__ = False  # not a pytest class

    @abstractmethod
    def compare(self, profile: FeatureProfile, current: np.ndarray) -> TestResult:
        """Compare present (non-missing) current values with the profile."""

    def two_sample(
        self, reference: Sequence[Any] | np.ndarray, current: Sequence[Any] | np.ndarray
    ) -> TestResult:
        """Convenience: profile ``reference`` and compare ``current`` with it."""
        kind = "numeric" if "numeric" in self.accepts else "categorical"
        profile = feature_profile("x", reference, kind)
        if profile.kind not in self.accepts:
            profile = feature_profile("x", reference, "categorical")
        values, _ = current_values(profile, current)
        return self.compare(profile, values)


def require_numeric(profile: FeatureProfile, test: str) -> NumericProfile:
    if not isinstance(profile, NumericProfile):
        raise TypeError(f"{test} needs a numeric feature; {profile.name!r} is categorical")
    return profile


def require_categorical(profile: FeatureProfile, test: str) -> CategoricalProfile:
    if not isinstance(profile, CategoricalProfile):
        raise TypeError(f"{test} needs a categorical feature; {profile.name!r} is numeric")
    return profile


@dataclass(frozen=True)
class Merged:
    """Distinct values of the pooled sample with per-sample multiplicities, in order."""

    values: np.ndarray
    ref_counts: np.ndarray
    cur_counts: np.ndarray

    @property
    def ref_cdf(self) -> np.ndarray:
        return np.cumsum(self.ref_counts) / max(int(self.ref_counts.sum()), 1)

    @property
    def cur_cdf(self) -> np.ndarray:
        return np.cumsum(self.cur_counts) / max(int(self.cur_counts.sum()), 1)


def merge(ref_sorted: np.ndarray, current: np.ndarray) -> Merged:
    """Merge a window into the sorted reference: O(n + m log m), the reference is not re-sorted."""
    cur = current if current.size < 2 or bool(np.all(current[1:] >= current[:-1])) else np.sort(current)
    n, m = ref_sorted.size, cur.size
    pos = np.searchsorted(ref_sorted, cur, side="right") + np.arange(m)
    is_cur = np.zeros(n + m, dtype=bool)
    is_cur[pos] = True
    pooled = np.empty(n + m)
    pooled[pos] = cur
    pooled[~is_cur] = ref_sorted
    starts = np.flatnonzero(np.r_[True, pooled[1:] != pooled[:-1]])
    cur_counts = np.add.reduceat(is_cur.astype(np.int64), starts)
    lengths = np.diff(np.r_[starts, n + m])
    return Merged(pooled[starts], lengths - cur_counts, cur_counts)


def chi2_sf(statistic: float, dof: int) -> float:
    from scipy.stats import chi2

    return float(chi2.sf(statistic, max(dof, 1)))


def proportions(
    ref_counts: np.ndarray, cur_counts: np.ndarray, eps: float = 1e-4
) -> tuple[np.ndarray, np.ndarray]:
    """Bin proportions, smoothed so that an empty bin on one side stays finite in log ratios."""
    p = ref_counts / max(ref_counts.sum(), 1)
    q = cur_counts / max(cur_counts.sum(), 1)
    p = np.where(p == 0, eps, p)
    q = np.where(q == 0, eps, q)
    return p / p.sum(), q / q.sum()


def occupied(ref_counts: np.ndarray, cur_counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = (ref_counts + cur_counts) > 0
    return ref_counts[keep], cur_counts[keep]
