"""ADWIN: adaptive windowing for change in the mean of a bounded stream."""

from __future__ import annotations

import math

from detectors.drift.streaming.base import DriftDetector


class ADWIN(DriftDetector):
    """Keeps the longest recent window whose halves have statistically equal means.

    The window is an exponential histogram: buckets of 2^i items (at most ``max_buckets``
    per size), so memory and time per item are O(log W). After each item, every split
    between buckets is checked with the Hoeffding-style bound of Bifet & Gavaldà; when two
    sub-windows differ by more than the bound, the older part is dropped and a change is
    reported.

    Parameters
    ----------
    delta
        Confidence: the probability of a false alarm per check is bounded by delta.
    max_buckets
        Buckets kept per size (M in the paper).
    clock
        Check for change every ``clock`` items.
    min_window
        Smallest sub-window considered on either side of a split.

    Examples
    --------
    >>> import random
    >>> rng = random.Random(1)
    >>> adwin = ADWIN(delta=0.002)
    >>> errors = [rng.random() < 0.1 for _ in range(2000)] + [rng.random() < 0.4 for _ in range(1000)]
    >>> alarms = [i for i, e in enumerate(errors) if adwin.update(float(e))]
    >>> 2000 <= alarms[0] < 2300
    True

    References
    ----------
    A. Bifet and R. Gavaldà, "Learning from time-changing data with adaptive windowing",
    SIAM International Conference on Data Mining, 2007.
    """

    def __init__(
        self, delta: float = 0.002, max_buckets: int = 5, clock: int = 32, min_window: int = 5
    ) -> None:
        self.delta, self.max_buckets, self.clock, self.min_window = delta, max_buckets, clock, min_window
        self.reset()

    def reset(self) -> None:
        """Forget the window: the next observation starts a new one."""
        # rows[i]: buckets of 2^i items as (total, variance term), newest first.
        self.rows: list[list[tuple[float, float]]] = []
        self.width = 0
        self.total = 0.0
        self.variance = 0.0
        self.ticks = 0
        self.drift_detected = False
        #: The window's mean (ADWIN's estimate); its bound varies per split, so no threshold.
        self.statistic = 0.0
        self.threshold = math.nan

    @property
    def mean(self) -> float:
        return self.total / self.width if self.width else 0.0

    def update(self, x: float) -> bool:
        """Add one observation; True when the window shrank because of a change."""
        self._insert(x)
        self.ticks += 1
        self.drift_detected = False
        if self.ticks % self.clock == 0 and self.width > 2 * self.min_window:
            while self._cut_once():
                self.drift_detected = True
        self.statistic = self.mean
        return self.drift_detected

    def _insert(self, x: float) -> None:
        if self.width:
            self.variance += (self.width / (self.width + 1)) * (x - self.mean) ** 2
        self.width += 1
        self.total += x
        if not self.rows:
            self.rows.append([])
        self.rows[0].insert(0, (x, 0.0))
        for i in range(len(self.rows)):
            if len(self.rows[i]) <= self.max_buckets:
                break
            (t1, v1), (t2, v2) = self.rows[i].pop(), self.rows[i].pop()
            n = 2.0**i
            merged = (t1 + t2, v1 + v2 + n * n / (2 * n) * (t1 / n - t2 / n) ** 2)
            if i + 1 == len(self.rows):
                self.rows.append([])
            self.rows[i + 1].insert(0, merged)

    def _drop_oldest(self) -> None:
        i = len(self.rows) - 1
        total, var = self.rows[i].pop()
        n = 2**i
        self.width -= n
        self.total -= total
        if self.width:
            self.variance -= (
                var + n * self.width / (n + self.width) * (total / n - self.total / self.width) ** 2
            )
        else:
            self.variance = 0.0
        self.variance = max(self.variance, 0.0)
        if not self.rows[i]:
            self.rows.pop()

    def _cut_once(self) -> bool:
        """Check every split from the oldest bucket; drop the oldest bucket on a change."""
        n0, s0 = 0, 0.0
        w, s = self.width, self.total
        var = self.variance / w
        delta_prime = self.delta / math.log(max(w, 2))
        for i in range(len(self.rows) - 1, -1, -1):
            for total, _ in reversed(self.rows[i]):
                n0 += 2**i
                s0 += total
                n1 = w - n0
                if n1 < self.min_window:
                    return False
                if n0 < self.min_window:
                    continue
                m = 1.0 / (1.0 / n0 + 1.0 / n1)
                eps = math.sqrt(2.0 / m * var * math.log(2.0 / delta_prime)) + 2.0 / (3.0 * m) * math.log(
                    2.0 / delta_prime
                )
                if abs(s0 / n0 - (s - s0) / n1) > eps:
                    self._drop_oldest()
                    return True
        return False
