"""Incremental reading of ``training_steps`` and alignment of ranks by step.

Detectors never rescan a run: each evaluation reads the rows since the last one (minus a
``lookback`` overlap, because every rank exports on its own and spans arrive late), drops
the ones already seen, and hands the new ones on. ``StepAligner`` then groups rows by step
so that cross-rank statistics compare the same step on every rank, and only complete steps.

The lateness bound (docs/training.md) has two parts, both ``lookback`` seconds:

- *read*: the re-read window starts ``lookback`` before the newest row already read from the
  slowest-clocked active rank, so a row is read if it is at most ``lookback`` older, on its own
  node's clock, than what its rank had already delivered; clock skew between nodes is no part
  of the bound up to ``max_skew`` (ranks not seen yet are looked for that far back);
- *align*: a step waits for its missing ranks at most ``lookback`` seconds of service time
  after its first row arrived; then it is released as incomplete, and rows for it that come
  later are dropped and counted (``late_rows``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mlvigil.store import Store

STEP_COLUMNS = (
    "ts",
    "run_id",
    "step",
    "rank",
    "world_size",
    "host",
    "k8s_pod",
    "gpu_uuid",
    "step_time_s",
    "loss",
    "grad_norm",
    "samples",
    "tokens",
    "data_wait_s",
    "comm_s",
    "checkpoint_s",
)

Row = dict[str, Any]


class StepFeed:
    """New ``training_steps`` rows on each poll, each (run, rank, step) once.

    Parameters
    ----------
    history
        Seconds before ``now`` the first poll reads from.
    lookback
        Seconds re-read before the newest row of the slowest-clocked active rank, for late
        arrivals; rows seen before are recognised by (run_id, rank, step) and dropped, so a
        retried export that was stored twice counts once.
    max_skew
        Most seconds the re-read reaches back for a rank whose clock is behind the others'
        (bounds the re-read cost; a node more than this behind loses its late rows).
    max_rows
        Most rows one poll reads (the newest win), bounding the first read of a long run.
    """

    def __init__(
        self,
        *,
        history: float = 3600.0,
        lookback: float = 30.0,
        max_skew: float = 300.0,
        max_rows: int = 200_000,
        columns: Sequence[str] = STEP_COLUMNS,
    ) -> None:
        self.history = history
        self.lookback = lookback
        self.max_skew = max_skew
        self.max_rows = max_rows
        self.columns = list(columns)
        self.cursor: float | None = None
        self._seen: dict[tuple[Any, ...], float] = {}
        # (run_id, rank) -> (newest producer ts read, service time it last advanced).
        self._ranks: dict[tuple[Any, Any], tuple[float, float]] = {}
        # (run_id, rank) -> ts under which its keys were forgotten: rows below it were read
        # before (the window may reach further back later, for a rank whose clock is behind).
        self._floor: dict[tuple[Any, Any], float] = {}
        self.duplicates = 0

    def since(self, now: float) -> float:
        """Producer time the next poll reads from."""
        if self.cursor is None:
            return now - self.history
        active = [ts for ts, moved in self._ranks.values() if now - moved <= self.lookback]
        # A rank that stopped (finished, died) no longer holds the window back.
        low = min(active) if active else self.cursor
        return max(low, self.cursor - self.max_skew) - self.lookback

    def poll(self, store: Store, now: float) -> list[Row]:
        since = self.since(now)
        cols = store.query("training_steps", columns=self.columns, since=since, last=self.max_rows)
        out = self._take(cols, now)
        if self.cursor is not None:
            # A rank not seen yet whose node's clock is behind the others' writes rows older
            # than the window above; look for such ranks up to ``max_skew`` back.
            wide = self.cursor - self.max_skew - self.lookback
            if wide < since:
                found = store.distinct("training_steps", ["run_id", "rank"], since=wide)
                unseen: dict[Any, list[Any]] = defaultdict(list)
                for run_id, rank in found:
                    if run_id is not None and rank is not None and (run_id, rank) not in self._ranks:
                        unseen[run_id].append(rank)
                for run_id, ranks in unseen.items():
                    extra = store.query(
                        "training_steps",
                        columns=self.columns,
                        since=wide,
                        where={"run_id": run_id, "rank": ranks},
                        last=self.max_rows,
                    )
                    out.extend(self._take(extra, now))
        newest = [t for t, _ in self._ranks.values()]
        if newest:
            self.cursor = max(newest) if self.cursor is None else max(self.cursor, max(newest))
        if self.cursor is not None:
            # Keys older than the next poll's window can never come back; ranks idle for
            # ``history`` are forgotten.
            horizon = self.since(now)
            self._seen = {k: t for k, t in self._seen.items() if t >= horizon}
            self._ranks = {k: v for k, v in self._ranks.items() if now - v[1] <= self.history}
            self._floor = {k: max(self._floor.get(k, horizon), horizon) for k in self._ranks}
        return out

    def _take(self, cols: dict[str, list[Any]], now: float) -> list[Row]:
        ts_col, run_col, rank_col, step_col = cols["ts"], cols["run_id"], cols["rank"], cols["step"]
        out: list[Row] = []
        names = self.columns
        for i in range(len(ts_col)):
            run_id, rank, step, ts = run_col[i], rank_col[i], step_col[i], ts_col[i]
            if run_id is None:
                continue
            key = (run_id, rank, step if step is not None else ts)
            if key in self._seen or ts < self._floor.get((run_id, rank), -math.inf):
                self.duplicates += 1
                continue
            self._seen[key] = ts
            out.append({name: cols[name][i] for name in names})
            rk = (run_id, rank)
            prev = self._ranks.get(rk)
            if prev is None or ts > prev[0]:
                self._ranks[rk] = (ts, now)
        return out


def by_run(rows: list[Row]) -> dict[str, list[Row]]:
    runs: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        runs[row["run_id"]].append(row)
    return runs


@dataclass
class AlignedStep:
    """One step's rows by rank; ``complete``: every expected rank is among them."""

    step: int
    rows: dict[int, Row]
    expected: int
    complete: bool


@dataclass
class _Pending:
    first_seen: float
    rows: dict[int, Row] = field(default_factory=dict)


class StepAligner:
    """Groups one run's rows by step and releases steps in step order.

    A step is released when every expected rank reported it, or, incomplete, ``bound``
    seconds (service time) after its first row arrived. The expected number of ranks is the
    step's ``world_size`` attribute, else one more than the highest rank seen in the run.
    A step is also held while an earlier step may still be missing entirely (a gap larger
    than the run's step stride), so a retried batch of older steps is not overtaken.

    Examples
    --------
    >>> al = StepAligner(bound=30.0)
    >>> al.add({"step": 1, "rank": 0, "world_size": 2}, now=0.0)
    >>> al.add({"step": 2, "rank": 0, "world_size": 2}, now=0.0)
    >>> al.add({"step": 1, "rank": 1, "world_size": 2}, now=5.0)
    >>> [(a.step, sorted(a.rows), a.complete) for a in al.ready(now=5.0)]
    [(1, [0, 1], True)]
    >>> al.ready(now=29.0)   # step 2 still waits for rank 1
    []
    >>> [(a.step, sorted(a.rows), a.complete) for a in al.ready(now=30.0)]
    [(2, [0], False)]
    >>> al.add({"step": 2, "rank": 1, "world_size": 2}, now=31.0)   # past the bound
    >>> al.late_rows
    1
    """

    def __init__(self, bound: float = 30.0, max_pending: int = 20_000) -> None:
        self.bound = bound
        self.max_pending = max_pending
        self.pending: dict[int, _Pending] = {}
        self.max_rank = -1
        self.released: int | None = None
        self.stride: int | None = None
        self.late_rows = 0
        self.incomplete_steps = 0
        self._last_by_rank: dict[int, int] = {}

    def add(self, row: Row, now: float) -> None:
        step, rank = row["step"], row["rank"]
        if step is None:
            return
        step = int(step)
        rank = int(rank) if rank is not None else 0
        if self.released is not None and step <= self.released:
            self.late_rows += 1
            return
        self.max_rank = max(self.max_rank, rank)
        prev = self._last_by_rank.get(rank)
        if prev is not None and step != prev:
            gap = abs(step - prev)
            self.stride = gap if self.stride is None else min(self.stride, gap)
        self._last_by_rank[rank] = max(step, prev) if prev is not None else step
        p = self.pending.get(step)
        if p is None:
            p = self.pending[step] = _Pending(now)
        p.rows.setdefault(rank, row)

    def expected(self, rows: dict[int, Row]) -> int:
        declared = max((int(r["world_size"]) for r in rows.values() if r.get("world_size")), default=0)
        return declared if declared > 0 else self.max_rank + 1

    def ready(self, now: float) -> list[AlignedStep]:
        out = []
        overflow = len(self.pending) - self.max_pending
        for step in sorted(self.pending):
            p = self.pending[step]
            expected = self.expected(p.rows)
            complete = len(p.rows) >= expected
            final = now - p.first_seen >= self.bound or overflow > 0
            gap = self.released is not None and self.stride is not None and step - self.released > self.stride
            if not final and (not complete or gap):
                break
            del self.pending[step]
            overflow -= 1
            self.released = step
            if not complete:
                self.incomplete_steps += 1
            out.append(AlignedStep(step, p.rows, expected, complete))
        return out
