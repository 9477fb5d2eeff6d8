"""Westfall-Young min-P: a correction across features that knows how they move together.

Bonferroni charges a monitor for every feature as if each could alarm on its own; with
correlated features (radius, perimeter and area of the same cell; token counts in and out)
most of that charge is wasted, and the monitor loses power exactly where one feature moves
alone. The single-step min-P procedure asks instead how small the smallest of the monitor's
p-values gets when nothing drifts, and adjusts every p-value by that distribution:

    adjusted_j = P(min_i P_i <= p_j | no drift)

That controls the family-wise error at ``alpha`` whatever the dependence, and is never
less powerful than Bonferroni (it equals it for independent features and tends to the raw
p-value for identical ones).

The no-drift distribution comes from the reference's kept rows (whole rows, so every
dependence between features is kept). They are split at random into two halves: a profile
is built from one, and windows are drawn without replacement from the other and tested
exactly as a live window. A random subset of an independent sample is itself an independent
sample, so each window's p-values are exact no-drift p-values (unlike windows resampled
from the very rows the profile holds, which sit too close to it). The split is redrawn every
few windows. Windows are at most half a half: the dependence between the features' p-values
hardly changes with the window size, which is what lets time windows of varying size share
a calibration. The result is cached on the profile per window size and family of tests.

Example
-------
>>> import numpy as np
>>> from detectors.drift.profile import ReferenceProfile
>>> rng = np.random.default_rng(0)
>>> base = rng.normal(size=3000)
>>> cols = {f"x{j}": base + 0.1 * rng.normal(size=3000) for j in range(10)}
>>> prof = ReferenceProfile.from_columns(cols)
>>> family = [Member(f"x{j}", "ks") for j in range(10)]
>>> null = min_p_null(prof, family, size=300, windows=200)
>>> bool(np.quantile(null, 0.05) > 0.05 / 10)  # ten near-copies: far fewer than ten tests
True

References
----------
P. H. Westfall and S. S. Young, "Resampling-Based Multiple Testing: Examples and Methods for
p-Value Adjustment", Wiley, 1993 (single-step min-P, section 2.6).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from detectors.drift.profile import NumericProfile, ReferenceProfile, current_values
from detectors.drift.stats import MissingRate, test_for

#: Resampled windows are at most this large: the dependence between the features' p-values
#: settles well before, and resampling larger windows would only cost time.
MAX_CALIBRATION_SIZE = 1024
#: Windows drawn from one random split of the kept rows before the split is redrawn.
WINDOWS_PER_SPLIT = 4
#: Name of the missing-value-rate test in a family.
MISSING = "missing"
#: States of a calibration: computed, being computed (Bonferroni meanwhile), failed.
READY = "ready"
PENDING = "pending"
FAILED = "failed"


@dataclass(frozen=True)
class Member:
    """One test of a monitor's family: a feature and the test applied to it."""

    feature: str
    test: str


def calibration_size(n_current: int) -> int:
    """Window size the null is resampled at: the window's own, on a grid of powers of the
    square root of 2 (so time windows of varying size share a few calibrations), at most
    ``MAX_CALIBRATION_SIZE``."""
    if n_current <= 8:
        return max(n_current, 1)
    grid = 2.0 ** (round(2.0 * math.log2(n_current)) / 2.0)
    return int(min(round(grid), MAX_CALIBRATION_SIZE))


def min_p_null(
    profile: ReferenceProfile, family: list[Member], size: int, windows: int, seed: int = 0
) -> np.ndarray:
    """Smallest p-value of ``family`` in each of ``windows`` no-drift windows of up to
    ``size`` rows (see the module docstring)."""
    rows = profile.sample_rows
    if not rows:
        return np.empty(0)
    kinds = {name: f.kind for name, f in profile.features.items()}
    return min_p_null_rows(rows, kinds, family, size, windows, seed)


def min_p_null_rows(
    rows: dict[str, np.ndarray],
    kinds: dict[str, str],
    family: list[Member],
    size: int,
    windows: int,
    seed: int = 0,
) -> np.ndarray:
    """``min_p_null`` from a profile's kept rows and feature kinds alone: what a calibration
    worker process needs (picklable, no profile)."""
    if not rows or not family:
        return np.empty(0)
    n_rows = len(next(iter(rows.values())))
    half = n_rows // 2
    size = min(size, half // 2)
    if size < 2:
        return np.empty(0)
    rng = np.random.default_rng(seed)
    missing = MissingRate()
    p = np.ones((windows, len(family)))
    split: ReferenceProfile | None = None
    pool = np.empty(0, dtype=np.int64)
    for b in range(windows):
        if b % WINDOWS_PER_SPLIT == 0:
            order = rng.permutation(n_rows)
            split = ReferenceProfile.from_columns(
                {name: col[order[:half]] for name, col in rows.items()}, kinds=kinds, null_rows=0
            )
            pool = order[half:]
        assert split is not None
        idx = rng.choice(pool, size, replace=False)
        window: dict[str, tuple[np.ndarray, int]] = {}
        for j, member in enumerate(family):
            prof = split.features[member.feature]
            if member.feature not in window:
                values, n_missing = current_values(prof, rows[member.feature][idx])
                window[member.feature] = (
                    np.sort(values) if isinstance(prof, NumericProfile) else values,
                    n_missing,
                )
            values, n_missing = window[member.feature]
            if member.test == MISSING:
                res = missing.compare(prof.n_missing, prof.n_total, n_missing, int(values.size) + n_missing)
            else:
                # A half can profile a feature as another kind than the whole reference did
                # (fewer distinct values); the test then falls back as it would live.
                res = test_for(member.test, prof, size).compare(prof, values)
            p[b, j] = 1.0 if res.p_value is None else res.p_value
    return np.asarray(p.min(axis=1))


def cached_min_p_null(
    profile: ReferenceProfile, family: list[Member], n_current: int, windows: int, seed: int = 0
) -> np.ndarray:
    """``min_p_null`` at ``calibration_size(n_current)``, computed once per profile, family
    and size."""
    size = calibration_size(n_current)
    key = ("min_p", size, tuple(family), windows, seed)
    null = profile.null_cache.get(key)
    if null is None:
        null = min_p_null(profile, family, size, windows, seed)
        profile.null_cache[key] = null
    return null
