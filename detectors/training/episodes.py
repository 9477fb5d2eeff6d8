"""Episodes: anomalies recorded when they are observed, whatever the evaluation schedule.

A detector's scorers run on every step as rows arrive; each time one observes an anomaly it
is recorded here at once (``observe``), with the step and time it began, the step and time it
was last seen, and its peak. ``close`` ends it. A detector reports every open episode and,
exactly once, every closed one, so an anomaly that began and ended between two evaluations
still becomes a Finding: it fires at the next evaluation with its whole story in the evidence
and resolves at the one after.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Episode:
    """One anomaly from its first to its last observation."""

    key: str
    began_step: int | None
    began_ts: float | None
    last_step: int | None
    last_ts: float | None
    peak: float
    peak_step: int | None
    observations: int = 1
    open: bool = True
    ended_step: int | None = None
    ended_ts: float | None = None
    # Reported to the engine: while open, and (separately) once after it closed.
    reported: bool = False
    reported_closed: bool = False
    # Detector-specific details of the peak observation (scores, thresholds).
    detail: dict[str, Any] = field(default_factory=dict)

    def evidence(self) -> dict[str, Any]:
        return {
            "began_step": self.began_step,
            "began_ts": self.began_ts,
            "last_step": self.last_step,
            "last_ts": self.last_ts,
            "peak": self.peak,
            "peak_step": self.peak_step,
            "observations": self.observations,
            "ongoing": self.open,
            "ended_step": self.ended_step,
            "ended_ts": self.ended_ts,
        }


class EpisodeLog:
    """Episodes of one run, at most one pending per key.

    A new observation of a key whose last episode has closed but was not reported yet
    extends that episode, so one key makes at most one Finding per evaluation.

    Examples
    --------
    >>> log = EpisodeLog()
    >>> _ = log.observe("loss_spike", step=120, ts=10.0, value=8.0)
    >>> log.close("loss_spike", step=140, ts=12.0)
    >>> [(e.key, e.began_step, e.peak, e.open) for e in log.pending()]
    [('loss_spike', 120, 8.0, False)]
    >>> log.mark_reported()
    >>> log.pending()
    []
    """

    def __init__(self) -> None:
        self.episodes: dict[str, Episode] = {}

    def observe(
        self,
        key: str,
        *,
        step: int | None,
        ts: float | None,
        value: float,
        higher_is_worse: bool = True,
        began: tuple[int | None, float | None] | None = None,
        detail: dict[str, Any] | None = None,
    ) -> Episode:
        ep = self.episodes.get(key)
        resumable = ep is not None and (ep.open or not ep.reported_closed)
        began_step, began_ts = began if began is not None else (step, ts)
        if ep is None or not resumable:
            ep = self.episodes[key] = Episode(
                key, began_step, began_ts, step, ts, value, step, detail=dict(detail or {})
            )
            return ep
        if not ep.open:
            ep.open = True
            ep.reported_closed = False
            ep.ended_step = ep.ended_ts = None
        ep.observations += 1
        # Rows may arrive out of order: the episode begins at its earliest observation.
        if began_step is not None and (ep.began_step is None or began_step < ep.began_step):
            ep.began_step, ep.began_ts = began_step, began_ts
        if step is not None and (ep.last_step is None or step >= ep.last_step):
            ep.last_step, ep.last_ts = step, ts
        worse = value > ep.peak if higher_is_worse else value < ep.peak
        if worse:
            ep.peak, ep.peak_step = value, step
            if detail:
                ep.detail.update(detail)
        return ep

    def close(self, key: str, *, step: int | None, ts: float | None) -> None:
        ep = self.episodes.get(key)
        if ep is not None and ep.open:
            ep.open = False
            ep.ended_step, ep.ended_ts = step, ts

    def is_open(self, key: str) -> bool:
        ep = self.episodes.get(key)
        return ep is not None and ep.open

    def pending(self) -> list[Episode]:
        """Episodes to report now: the open ones and the closed ones not reported since closing."""
        return [e for e in self.episodes.values() if e.open or not e.reported_closed]

    def mark_reported(self) -> None:
        for e in self.episodes.values():
            e.reported = True
            if not e.open:
                e.reported_closed = True
        self.episodes = {k: e for k, e in self.episodes.items() if e.open}
