"""Goodput accounting: the share of wall-clock time a run spends on productive steps.

Each rank's wall time between its first and latest step is split into

- ``productive``: step time minus data-loader wait and checkpointing,
- ``data_wait``: time the step waited on input,
- ``checkpoint``: time spent saving checkpoints inside steps,
- ``idle``: gaps between the end of one step and the start of the next (restarts,
  evaluation, hangs),

and the run's goodput ratio is productive / (productive + data_wait + checkpoint + idle),
summed over ranks.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class _RankClock:
    last_end: float | None = None


@dataclass
class GoodputMeter:
    """Running goodput of one run.

    Parameters
    ----------
    max_gap
        Gaps between steps longer than this (seconds) count as idle only up to it: a run that
        was stopped for a day is not a day of badput.

    Examples
    --------
    >>> g = GoodputMeter()
    >>> g.add(rank=0, ts=0.0, step_time=1.0, data_wait=0.2)
    >>> g.add(rank=0, ts=1.5, step_time=1.0, checkpoint=0.3)   # 0.5 s idle before it
    >>> round(g.ratio, 3), {k: round(v, 2) for k, v in g.breakdown().items()}
    (0.6, {'productive': 1.5, 'data_wait': 0.2, 'checkpoint': 0.3, 'idle': 0.5})

    References
    ----------
    Google Cloud, "ML Goodput measurement" (2024); Jiang et al., MegaScale, NSDI 2024.
    """

    max_gap: float = 600.0
    productive: float = 0.0
    data_wait: float = 0.0
    checkpoint: float = 0.0
    idle: float = 0.0
    _ranks: dict[int, _RankClock] = field(default_factory=dict)

    def add(
        self,
        *,
        rank: int,
        ts: float,
        step_time: float,
        data_wait: float | None = None,
        checkpoint: float | None = None,
    ) -> None:
        if not step_time >= 0.0:
            return
        clock = self._ranks.setdefault(rank, _RankClock())
        if clock.last_end is not None:
            gap = ts - clock.last_end
            if gap > 0:
                self.idle += min(gap, self.max_gap)
        clock.last_end = max(clock.last_end or ts, ts + step_time)
        wait = min(max(data_wait or 0.0, 0.0), step_time)
        ckpt = min(max(checkpoint or 0.0, 0.0), step_time - wait)
        self.data_wait += wait
        self.checkpoint += ckpt
        self.productive += step_time - wait - ckpt

    @property
    def total(self) -> float:
        return self.productive + self.data_wait + self.checkpoint + self.idle

    @property
    def ratio(self) -> float:
        total = self.total
        return self.productive / total if total > 0 else 1.0

    def breakdown(self) -> dict[str, float]:
        return {
            "productive": self.productive,
            "data_wait": self.data_wait,
            "checkpoint": self.checkpoint,
            "idle": self.idle,
        }
