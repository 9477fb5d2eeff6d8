"""Data-loader stalls: steps that spend a large share of their time waiting for input."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from detectors.training.robust import RollingMedian


@dataclass(frozen=True)
class Stall:
    wait_share: float
    max_wait: float
    reason: str
    # First input-bound step of the stall (the long wait, the burst's first step, or the
    # first input-bound step in the window).
    began_step: int | None = None
    began_ts: float | None = None


class StallMonitor:
    """Input-bound steps of one rank, step by step.

    A stall holds while the median share of step time spent waiting for data over the last
    ``window`` steps is at least ``share`` (rule ``share``), while one of those steps waited
    at least ``seconds`` (``seconds``: a hung worker, a slow remote read), or while the last
    ``burst_steps`` consecutive steps each waited at least ``burst_share`` of their time
    (``burst``: a short stall, too brief to move the median; not in the first ``warmup``
    steps, when loaders fill their prefetch queues).

    Parameters
    ----------
    window
        Steps the median share and the longest wait are taken over.
    share
        Median data-wait share of step time that is a stall (0.3 = 30 %).
    seconds
        Single data wait that is a stall on its own.
    burst_steps, burst_share
        Consecutive steps each waiting at least ``burst_share`` of their time that are a
        stall (0 disables the rule).
    warmup
        Steps of the rank before the burst rule applies.

    Examples
    --------
    >>> mon = StallMonitor(window=5, share=0.3, seconds=30.0, warmup=0)
    >>> [mon.update(step_time=1.0, data_wait=0.05, step=i) for i in range(5)][-1] is None
    True
    >>> for i in range(5, 8):
    ...     stall = mon.update(step_time=2.0, data_wait=1.1, step=i)
    >>> stall.reason, round(stall.wait_share, 2), stall.began_step
    ('share', 0.55, 5)

    References
    ----------
    Mohan et al., "Analyzing and Mitigating Data Stalls in DNN Training", VLDB 2021.
    """

    def __init__(
        self,
        window: int = 10,
        share: float = 0.3,
        seconds: float = 30.0,
        burst_steps: int = 3,
        burst_share: float = 0.5,
        warmup: int = 20,
    ) -> None:
        self.share = share
        self.seconds = seconds
        self.window = window
        self.burst_steps = burst_steps
        self.burst_share = burst_share
        self.warmup = warmup
        self.n = 0
        self._shares = RollingMedian(window)
        # (step, ts, share, wait) of the last ``window`` steps.
        self._recent: deque[tuple[int | None, float | None, float, float]] = deque(maxlen=window)
        # First (step, ts) and length of the current run of steps waiting >= burst_share.
        self._burst_start: tuple[int | None, float | None] = (None, None)
        self._burst_len = 0
        self.current: Stall | None = None

    @property
    def share_now(self) -> float:
        return self._shares.value

    def update(
        self,
        *,
        step_time: float,
        data_wait: float | None,
        step: int | None = None,
        ts: float | None = None,
    ) -> Stall | None:
        """Add one step; returns the stall holding after it, or None."""
        if data_wait is None or not step_time > 0.0 or not data_wait >= 0.0:
            return self.current
        self.n += 1
        share = min(data_wait / step_time, 1.0)
        self._shares.update(share)
        self._recent.append((step, ts, share, data_wait))
        if share >= self.burst_share and self.n > self.warmup:
            if self._burst_len == 0:
                self._burst_start = (step, ts)
            self._burst_len += 1
        else:
            self._burst_len = 0
        self.current = self._evaluate()
        return self.current

    def _evaluate(self) -> Stall | None:
        share = self._shares.value
        longest = max(w for *_, w in self._recent)
        if longest >= self.seconds:
            step, ts = next((s, t) for s, t, _sh, w in self._recent if w >= self.seconds)
            return Stall(share, longest, "seconds", step, ts)
        if self._shares.full and share >= self.share:
            step, ts = next((s, t) for s, t, sh, _w in self._recent if sh >= self.share)
            return Stall(share, longest, "share", step, ts)
        if self.burst_steps and self._burst_len >= self.burst_steps:
            burst = list(self._recent)[-self._burst_len :]
            return Stall(min(sh for *_, sh, _w in burst), longest, "burst", *self._burst_start)
        return None
