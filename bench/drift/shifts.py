"""Datasets and injected shifts shared by the benchmark and its alibi-detect worker (numpy only)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

SHIFTS = ("none", "mean_shift", "variance_change", "category_mix", "missing_values", "subgroup_shift")


def apply_shift(
    x: np.ndarray,
    shift: str,
    numeric: list[int],
    categorical: list[int],
    rng: np.random.Generator,
    scale: np.ndarray,
) -> np.ndarray:
    """A copy of window ``x`` with one injected shift on a few columns (small, realistic magnitudes)."""
    x = x.astype(np.float64, copy=True)
    cols = numeric[:3]
    if shift == "mean_shift":
        x[:, cols] += 0.25 * scale[cols]
    elif shift == "variance_change":
        mu = np.nanmean(x[:, cols], axis=0)
        x[:, cols] = mu + (x[:, cols] - mu) * 1.4
    elif shift == "category_mix" and categorical:
        # 15% of rows move to one category, drawn per window: always the lowest code would
        # also be a location shift of the codes, which tests that (wrongly) treat category
        # codes as numbers would be credited for.
        c = categorical[0]
        values = np.unique(x[:, c])
        mask = rng.random(x.shape[0]) < 0.15
        x[mask, c] = values[rng.integers(values.size)]
    elif shift == "missing_values":
        for c in cols:
            x[rng.random(x.shape[0]) < 0.08, c] = np.nan
    elif shift == "subgroup_shift":
        # Covariate shift in a subgroup: rows with a high first feature move on another one.
        group = x[:, numeric[0]] > np.nanquantile(x[:, numeric[0]], 0.7)
        x[group, numeric[1]] += 0.6 * scale[numeric[1]]
    return x


def window_specs(
    n_pool: int, sizes: list[int], null_windows: int, shift_windows: int, shifts: list[str], seed: int
) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    specs = []
    for size in sizes:
        for shift in shifts:
            reps = null_windows if shift == "none" else shift_windows
            for r in range(reps):
                specs.append(
                    {
                        "size": size,
                        "shift": shift,
                        "rep": r,
                        "seed": int(rng.integers(2**31)),
                        "rows": rng.integers(0, n_pool, size).tolist(),
                    }
                )
    return specs


def materialise(
    pool: np.ndarray, spec: dict[str, Any], numeric: list[int], categorical: list[int], scale: np.ndarray
) -> np.ndarray:
    rng = np.random.default_rng(spec["seed"])
    return apply_shift(pool[np.asarray(spec["rows"])], spec["shift"], numeric, categorical, rng, scale)


def power_at_matched_fpr(null_scores: list[float], shifted_scores: list[float], fpr: float = 0.05) -> float:
    """Detection rate when the alarm threshold is set so that exactly ``fpr`` of null windows alarm.

    Scores are "lower = more drift" (p-values). Ties at the threshold are broken at random
    (a randomised test), so discrete scores (counts of drifted columns) compare fairly.
    """
    # Scores equal up to rounding are ties: the same statistic computed in another order
    # (scipy vs numpy, say) differs in its last bits, which must not decide a detection.
    null = np.sort(np.asarray(null_scores, dtype=np.float64).astype(np.float32).astype(np.float64))
    shifted = np.asarray(shifted_scores, dtype=np.float64).astype(np.float32).astype(np.float64)
    null = np.where(np.isnan(null), np.inf, null)
    shifted = np.where(np.isnan(shifted), np.inf, shifted)
    k = fpr * null.size
    t = null[min(int(np.floor(k)), null.size - 1)]
    below, at = float(np.sum(null < t)), float(np.sum(null == t))
    gamma = (k - below) / at if at else 0.0
    return float(np.mean(shifted < t) + gamma * np.mean(shifted == t))


def alibi_python() -> str | None:
    """The interpreter that runs alibi-detect's side: this one when alibi-detect imports here,
    else ``ALIBI_PYTHON`` (default .venv-alibi/bin/python); None when neither is usable."""
    try:
        import alibi_detect  # noqa: F401

        return sys.executable
    except Exception:
        root = Path(__file__).resolve().parents[2]
        python = os.environ.get("ALIBI_PYTHON", str(root / ".venv-alibi" / "bin" / "python"))
        if not Path(python).exists():
            print(f"alibi-detect: not importable here and {python} missing; skipped", file=sys.stderr)
            return None
        return python
