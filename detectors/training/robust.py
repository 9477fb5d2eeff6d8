"""Robust location and scale: the median and the scaled median absolute deviation (MAD).

Step times are heavy-tailed (checkpoints, garbage collection, a slow batch), so every
baseline in this package is a median and every spread a MAD, never a mean and a standard
deviation: one 10x step moves neither.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterable

# 1.4826 * MAD estimates the standard deviation of normally distributed data.
MAD_TO_SIGMA = 1.4826


def median(values: Iterable[float]) -> float:
    """Median of ``values`` (which must not be empty).

    >>> median([3.0, 1.0, 2.0, 100.0])
    2.5
    """
    s = sorted(values)
    n = len(s)
    if n == 0:
        raise ValueError("median of no values")
    mid = n // 2
    return s[mid] if n % 2 else 0.5 * (s[mid - 1] + s[mid])


def median_mad(values: Iterable[float]) -> tuple[float, float]:
    """Median and scaled MAD (a robust standard deviation) of ``values``.

    >>> m, s = median_mad([1.0, 1.1, 0.9, 1.0, 50.0])
    >>> m, round(s, 4)
    (1.0, 0.1483)
    """
    vals = list(values)
    m = median(vals)
    return m, MAD_TO_SIGMA * median(abs(v - m) for v in vals)


class RollingMedian:
    """Median of the last ``window`` values, updated in O(window) per value.

    Parameters
    ----------
    window
        Number of most recent values the median is taken over.

    Examples
    --------
    >>> rm = RollingMedian(3)
    >>> [rm.update(x) for x in (1.0, 5.0, 2.0, 9.0, 9.0)]
    [1.0, 3.0, 2.0, 5.0, 9.0]
    >>> rm.full
    True
    """

    def __init__(self, window: int) -> None:
        if window < 1:
            raise ValueError("window must be >= 1")
        self.window = window
        self._fifo: deque[float] = deque()
        self._sorted: list[float] = []

    def update(self, x: float) -> float:
        self._fifo.append(x)
        bisect.insort(self._sorted, x)
        if len(self._fifo) > self.window:
            old = self._fifo.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, old)]
        return self.value

    @property
    def value(self) -> float:
        s = self._sorted
        n = len(s)
        if n == 0:
            return float("nan")
        mid = n // 2
        return s[mid] if n % 2 else 0.5 * (s[mid - 1] + s[mid])

    @property
    def full(self) -> bool:
        return len(self._fifo) >= self.window

    def __len__(self) -> int:
        return len(self._fifo)
