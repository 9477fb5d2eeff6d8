"""Forecast of a run's final carbon (or energy) total from its progress so far.

Carbontracker (Anthony, Kanding & Selvan, 2020, "Carbontracker: Tracking and Predicting the
Carbon Footprint of Training Deep Learning Models", arXiv:2007.03051) measures the first
epoch(s) of training and extrapolates linearly to the planned number of epochs. Here the same
linear extrapolation is done continuously, on every evaluation, from the running totals:

    projected = total so far / progress                  (progress in (0, 1])

Progress is steps done / planned steps, or elapsed compute time / expected duration.

Uncertainty band. Power draw changes during a run (warm-up, evaluation, a new phase), so the
energy per unit of progress is not constant. Over the last ``recent`` measurement intervals
``i`` the rate ``r_i = dE_i / dp_i`` is taken, with its progress-weighted mean ``r_recent`` and
standard deviation ``s``; ``r_mean = total / progress`` is the whole-run rate. The rest of the
run, ``1 - p``, is bounded by the two extrapolations, widened by ``z`` deviations of the rate:

    lower = total + (1 - p) * max(0, min(r_mean, r_recent) - z * s)
    upper = total + (1 - p) * (max(r_mean, r_recent) + z * s)

``s`` is the spread of single intervals, not a standard error: regime changes persist, so the
remaining rate does not average out the way independent noise would (the band is deliberately
conservative; bench/carbon measures its coverage).

Parameters
----------
progress
    Progress in [0, 1] at each sample, oldest first (non-decreasing).
totals
    Cumulative total (grams or joules) at the same samples.
z
    Band half-width in standard deviations of the recent rate (1.645: 90% two-sided).
recent
    Number of most recent intervals the recent rate and its spread are taken over.

Example
-------
>>> p = [i / 100 for i in range(1, 21)]          # 20% done
>>> e = [2.0 * i for i in range(1, 21)]          # 2 g per 1% of progress, steady
>>> f = forecast(p, e)
>>> round(f.projected, 6), round(f.lower, 6), round(f.upper, 6)
(200.0, 200.0, 200.0)
>>> e2 = e[:10] + [20 + 4.0 * (i - 10) for i in range(11, 21)]   # power doubled at 10%
>>> f2 = forecast(p, e2)
>>> round(f2.projected, 1), f2.lower <= f2.projected <= f2.upper
(300.0, True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Forecast:
    progress: float
    actual: float
    projected: float
    lower: float
    upper: float
    rate_mean: float  # total / progress: per whole run
    rate_recent: float
    rate_std: float
    intervals: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def forecast(
    progress: Sequence[float], totals: Sequence[float], *, z: float = 1.645, recent: int = 20
) -> Forecast | None:
    """Projected final total with its band; None while there is no progress to divide by."""
    if len(progress) != len(totals) or not progress:
        raise ValueError("progress and totals must be non-empty and of equal length")
    p = min(float(progress[-1]), 1.0)
    total = float(totals[-1])
    if not p > 0:
        return None
    rate_mean = total / p
    # Interval rates; an interval with energy but no progress folds into the next one.
    rates: list[tuple[float, float]] = []  # (dE, dp)
    pend_e = pend_p = 0.0
    for i in range(1, len(progress)):
        pend_e += float(totals[i]) - float(totals[i - 1])
        pend_p += float(progress[i]) - float(progress[i - 1])
        if pend_p > 0:
            rates.append((pend_e, pend_p))
            pend_e = pend_p = 0.0
    window = rates[-recent:]
    if window:
        sum_e = sum(e for e, _ in window)
        sum_p = sum(dp for _, dp in window)
        rate_recent = sum_e / sum_p
        var = sum(dp * (e / dp - rate_recent) ** 2 for e, dp in window) / sum_p
        rate_std = math.sqrt(var)
    else:
        rate_recent, rate_std = rate_mean, 0.0
    remaining = max(0.0, 1.0 - p)
    lower = total + remaining * max(0.0, min(rate_mean, rate_recent) - z * rate_std)
    upper = total + remaining * (max(rate_mean, rate_recent) + z * rate_std)
    return Forecast(
        progress=p,
        actual=total,
        projected=rate_mean,
        lower=lower,
        upper=upper,
        rate_mean=rate_mean,
        rate_recent=rate_recent,
        rate_std=rate_std,
        intervals=len(window),
    )
