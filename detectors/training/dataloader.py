"""Data-loader stalls: steps that spend a large share of their time waiting for input."""

from __future__ import annotations

from dataclasses import dataclass

from detectors.training.robust import RollingMedian


@dataclass(frozen=True)
class Stall:
    wait_share: float
    max_wait: float
    reason: str


class StallMonitor:
    """Input-bound steps of one rank, over a rolling window.

    A stall holds while the median share of step time spent waiting for data over the last
    ``window`` steps is at least ``share``, or while one of those steps waited at least
    ``seconds`` (a hung worker, a slow remote read).

    Parameters
    ----------
    window
        Steps the median share and the longest wait are taken over.
    share
        Median data-wait share of step time that is a stall (0.3 = 30 %).
    seconds
        Single data wait that is a stall on its own.

    Examples
    --------
    >>> mon = StallMonitor(window=5, share=0.3, seconds=30.0)
    >>> [mon.update(step_time=1.0, data_wait=0.05) for _ in range(5)][-1] is None
    True
    >>> for _ in range(3):
    ...     stall = mon.update(step_time=2.0, data_wait=1.1)
    >>> stall.reason, round(stall.wait_share, 2)
    ('share', 0.55)

    References
    ----------
    Mohan et al., "Analyzing and Mitigating Data Stalls in DNN Training", VLDB 2021.
    """

    def __init__(self, window: int = 10, share: float = 0.3, seconds: float = 30.0) -> None:
        self.share = share
        self.seconds = seconds
        self.window = window
        self._shares = RollingMedian(window)
        self._waits: list[float] = []

    def update(self, *, step_time: float, data_wait: float | None) -> Stall | None:
        if data_wait is None or not step_time > 0.0 or not data_wait >= 0.0:
            return self.current
        self._shares.update(min(data_wait / step_time, 1.0))
        self._waits.append(data_wait)
        if len(self._waits) > self.window:
            del self._waits[0]
        return self.current

    @property
    def current(self) -> Stall | None:
        if not self._waits:
            return None
        share = self._shares.value
        longest = max(self._waits)
        if longest >= self.seconds:
            return Stall(share, longest, "seconds")
        if self._shares.full and share >= self.share:
            return Stall(share, longest, "share")
        return None
