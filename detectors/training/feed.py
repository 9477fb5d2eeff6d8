"""Incremental reading of ``training_steps`` and alignment of ranks by step.

Detectors never rescan a run: each evaluation reads the rows since the last one (minus a
``lookback`` overlap, because every rank exports on its own and spans arrive late), drops
the ones already seen, and hands the new ones on. ``StepAligner`` then groups rows by step
so that cross-rank statistics compare the same step on every rank.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
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
    """New ``training_steps`` rows on each poll, in time order, each row once.

    Parameters
    ----------
    history
        Seconds before ``now`` the first poll reads from.
    lookback
        Seconds re-read before the newest row seen, for late arrivals; rows seen before are
        recognised by (run_id, rank, step) and dropped.
    max_rows
        Most rows one poll reads (the newest win), bounding the first read of a long run.
    """

    def __init__(
        self,
        *,
        history: float = 3600.0,
        lookback: float = 30.0,
        max_rows: int = 200_000,
        columns: Sequence[str] = STEP_COLUMNS,
    ) -> None:
        self.history = history
        self.lookback = lookback
        self.max_rows = max_rows
        self.columns = list(columns)
        self.cursor: float | None = None
        self._seen: dict[tuple[Any, ...], float] = {}

    def poll(self, store: Store, now: float) -> list[Row]:
        since = now - self.history if self.cursor is None else self.cursor - self.lookback
        cols = store.query("training_steps", columns=self.columns, since=since, last=self.max_rows)
        ts_col = cols["ts"]
        out: list[Row] = []
        names = self.columns
        for i in range(len(ts_col)):
            row = {name: cols[name][i] for name in names}
            if row["run_id"] is None:
                continue
            key = (row["run_id"], row["rank"], row["step"] if row["step"] is not None else row["ts"])
            if key in self._seen:
                continue
            self._seen[key] = row["ts"]
            out.append(row)
        if ts_col:
            newest = ts_col[-1]
            self.cursor = newest if self.cursor is None else max(self.cursor, newest)
        if self.cursor is not None:
            # The next poll reads from cursor - lookback: older keys can never come back.
            horizon = self.cursor - self.lookback
            self._seen = {k: t for k, t in self._seen.items() if t >= horizon}
        return out


def by_run(rows: list[Row]) -> dict[str, list[Row]]:
    runs: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        runs[row["run_id"]].append(row)
    return runs


class StepAligner:
    """Groups one run's rows by step; a step is released when all ranks reported it or when
    ``lag`` newer steps have arrived (a rank that died or exports late does not stall it).

    Examples
    --------
    >>> al = StepAligner(lag=1)
    >>> al.add({"step": 1, "rank": 0, "world_size": 2})
    >>> al.add({"step": 1, "rank": 1, "world_size": 2})
    >>> al.add({"step": 2, "rank": 0, "world_size": 2})
    >>> [(s, sorted(rows)) for s, rows in al.ready()]
    [(1, [0, 1])]
    >>> al.add({"step": 3, "rank": 0, "world_size": 2})
    >>> [(s, sorted(rows)) for s, rows in al.ready()]
    [(2, [0])]
    """

    def __init__(self, lag: int = 8) -> None:
        self.lag = lag
        self.pending: dict[int, dict[int, Row]] = {}
        self.ranks: set[int] = set()
        self.world_size = 0
        self.released: int | None = None
        self.late_rows = 0

    def add(self, row: Row) -> None:
        step, rank = row["step"], row["rank"]
        if step is None:
            return
        rank = int(rank) if rank is not None else 0
        if self.released is not None and step <= self.released:
            self.late_rows += 1
            return
        self.ranks.add(rank)
        if row.get("world_size"):
            self.world_size = max(self.world_size, int(row["world_size"]))
        self.pending.setdefault(int(step), {})[rank] = row

    def ready(self) -> list[tuple[int, dict[int, Row]]]:
        expected = max(self.world_size, len(self.ranks))
        steps = sorted(self.pending)
        out = []
        for i, step in enumerate(steps):
            rows = self.pending[step]
            if len(rows) >= expected or len(steps) - 1 - i >= self.lag:
                out.append((step, self.pending.pop(step)))
                self.released = step
            else:
                break
        return out
