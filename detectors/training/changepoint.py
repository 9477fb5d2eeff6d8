"""Page's CUSUM: the one-sided cumulative-sum test for a shift in the mean.

Each observation ``z`` (standardised: 0 under the baseline, 1 per standard deviation) adds
``z - k`` to a statistic that is floored at zero; an alarm is raised when it exceeds ``h``.
The last time the statistic was zero is the maximum-likelihood estimate of when the shift
began, which is how findings say *since when* a run is slower.
"""

from __future__ import annotations


class PageCUSUM:
    """One-sided CUSUM change detector on standardised observations.

    Parameters
    ----------
    k
        Reference value (allowance), in standard deviations: half the shift to detect.
    h
        Decision threshold, in standard deviations.
    clip
        Each observation is clipped to ``[-clip, clip]`` so that a single outlier (a
        checkpoint step, a GC pause) cannot raise the alarm alone.

    Examples
    --------
    >>> cusum = PageCUSUM(k=0.5, h=4.0)
    >>> alarms = [cusum.update(z) for z in [0.1, -0.3, 0.2] + [2.0] * 4]
    >>> alarms
    [False, False, False, False, False, True, True]
    >>> cusum.change_index  # the shift began at observation 3 (0-based)
    3

    References
    ----------
    E. S. Page, "Continuous inspection schemes", Biometrika 41(1/2), 1954.
    """

    def __init__(self, k: float = 0.5, h: float = 5.0, clip: float = 4.0) -> None:
        self.k = k
        self.h = h
        self.clip = clip
        self.statistic = 0.0
        self.n = 0
        # Index of the first observation after the statistic last left zero.
        self.change_index = 0

    def update(self, z: float) -> bool:
        """Add one observation; True while the statistic is above ``h``."""
        z = max(-self.clip, min(self.clip, z))
        if self.statistic <= 0.0:
            self.change_index = self.n
        # Capped so that an unconfirmed alarm decays in bounded time once the data return.
        self.statistic = min(max(0.0, self.statistic + z - self.k), 2.0 * self.h)
        self.n += 1
        return self.statistic > self.h

    def reset(self) -> None:
        self.statistic = 0.0
        self.change_index = self.n
