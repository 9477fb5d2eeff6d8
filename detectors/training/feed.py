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
import threading
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from mlvigil.core.store import Store

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


def column_values(col: pa.ChunkedArray) -> list[Any]:
    """A column as Python values; numbers without nulls go through numpy (several times
    faster than Arrow's per-value conversion)."""
    if col.null_count == 0 and (pa.types.is_floating(col.type) or pa.types.is_integer(col.type)):
        values: list[Any] = col.to_numpy().tolist()
        return values
    return col.to_pylist()


def rows_of(table: pa.Table) -> list[Row]:
    """``table``'s rows as dicts (column name -> value)."""
    names = table.column_names
    return [
        dict(zip(names, values, strict=True))
        for values in zip(*map(column_values, table.columns), strict=True)
    ]


class StepFeed:
    """New ``training_steps`` rows on each poll, each (run, rank, step) once.

    The rows travel as Arrow tables (numbers 8 bytes each, not Python objects) and only the
    columns the detectors read; the detectors built together share one feed (``subscribe``),
    so one evaluation pass reads and deduplicates the store's rows once, not once per
    detector.

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
        Most rows one poll reads (the newest win), bounding the first read of a long run;
        also the most rows waiting for a subscriber that has not read them yet.
    chunk_rows
        Rows turned into Python objects at a time (deduplication here, scoring in the
        detectors), which bounds what one evaluation holds beyond the Arrow rows.
    """

    def __init__(
        self,
        *,
        history: float = 3600.0,
        lookback: float = 30.0,
        max_skew: float = 300.0,
        max_rows: int = 200_000,
        chunk_rows: int = 4096,
        columns: Sequence[str] = STEP_COLUMNS,
    ) -> None:
        self.history = history
        self.lookback = lookback
        self.max_skew = max_skew
        self.max_rows = max_rows
        self.chunk_rows = max(1, chunk_rows)
        self.columns = list(columns)
        self.cursor: float | None = None
        self._seen: dict[tuple[Any, ...], float] = {}
        # (run_id, rank) -> (newest producer ts read, service time it last advanced).
        self._ranks: dict[tuple[Any, Any], tuple[float, float]] = {}
        # (run_id, rank) -> ts under which its keys were forgotten: rows below it were read
        # before (the window may reach further back later, for a rank whose clock is behind).
        self._floor: dict[tuple[Any, Any], float] = {}
        self.duplicates = 0
        self._polled_at: float | None = None
        self._readers: list[FeedReader] = []
        # Held while a reader polls and hands out the rows, or takes its own: the detectors
        # sharing this feed are evaluated concurrently (detectors.workers), and one that
        # found the poll of this ``now`` under way must wait for its rows, not see none.
        self._lock = threading.Lock()

    def subscribe(self) -> FeedReader:
        """A reader that gets every row this feed polls from now on, once."""
        reader = FeedReader(self)
        with self._lock:
            self._readers.append(reader)
        return reader

    def since(self, now: float) -> float:
        """Producer time the next poll reads from."""
        if self.cursor is None:
            return now - self.history
        active = [ts for ts, moved in self._ranks.values() if now - moved <= self.lookback]
        # A rank that stopped (finished, died) no longer holds the window back.
        low = min(active) if active else self.cursor
        return max(low, self.cursor - self.max_skew) - self.lookback

    def poll(self, store: Store, now: float) -> list[Row]:
        """The new rows as dicts (``poll_table`` as Python objects)."""
        return rows_of(self.poll_table(store, now))

    def poll_table(self, store: Store, now: float) -> pa.Table:
        """The rows not delivered before, in the store's ts order, as one Arrow table."""
        since = self.since(now)
        cols = store.query_arrow("training_steps", columns=self.columns, since=since, last=self.max_rows)
        out = [self._take(cols, now)]
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
                    extra = store.query_arrow(
                        "training_steps",
                        columns=self.columns,
                        since=wide,
                        where={"run_id": run_id, "rank": ranks},
                        last=self.max_rows,
                    )
                    out.append(self._take(extra, now))
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
        table = out[0] if len(out) == 1 else pa.concat_tables(out, promote_options="default")
        return table.combine_chunks() if table.num_rows else table

    def _take(self, table: pa.Table, now: float) -> pa.Table:
        """``table``'s rows not seen before (deduplicated, ``chunk_rows`` at a time). When the
        read was cut at ``max_rows``, each run's steps before its first complete one are
        dropped too: they miss the ranks whose rows fell under the cut, and would hold every
        later step of the run waiting (in memory) for the lateness bound."""
        if table.num_rows >= self.max_rows:
            table = _trim_cut_steps(table)
        keep: list[bool] = []
        seen, floor, ranks = self._seen, self._floor, self._ranks
        for lo in range(0, table.num_rows, self.chunk_rows):
            part = table.slice(lo, self.chunk_rows)
            ts_col = column_values(part.column("ts"))
            run_col = column_values(part.column("run_id"))
            rank_col = column_values(part.column("rank"))
            step_col = column_values(part.column("step"))
            for run_id, rank, step, ts in zip(run_col, rank_col, step_col, ts_col, strict=True):
                if run_id is None:
                    keep.append(False)
                    continue
                key = (run_id, rank, step if step is not None else ts)
                if key in seen or ts < floor.get((run_id, rank), -math.inf):
                    self.duplicates += 1
                    keep.append(False)
                    continue
                seen[key] = ts
                keep.append(True)
                rk = (run_id, rank)
                prev = ranks.get(rk)
                if prev is None or ts > prev[0]:
                    ranks[rk] = (ts, now)
        return table.filter(pa.array(keep, pa.bool_())) if table.num_rows else table


def _trim_cut_steps(table: pa.Table) -> pa.Table:
    """``table`` without each run's steps before its first step that every rank (by its
    ``world_size``) reported; runs without such a step are kept whole. Row order is kept."""
    counts = table.group_by(["run_id", "step"]).aggregate([("rank", "count_distinct"), ("world_size", "max")])
    complete = counts.filter(pc.greater_equal(counts["rank_count_distinct"], counts["world_size_max"]))
    first = complete.group_by("run_id").aggregate([("step", "min")])
    if not first.num_rows:
        return table
    indexed = table.append_column("_row", pa.array(range(table.num_rows), pa.int64()))
    joined = indexed.join(first, keys="run_id", join_type="left outer")
    keep = pc.or_kleene(pc.is_null(joined["step_min"]), pc.greater_equal(joined["step"], joined["step_min"]))
    kept = joined.filter(pc.fill_null(keep, True)).sort_by("_row")
    return kept.select(table.column_names)


class FeedReader:
    """One detector's view of a shared ``StepFeed``: the first reader to ask at a new ``now``
    polls the store; every reader then gets each polled table once."""

    def __init__(self, feed: StepFeed) -> None:
        self.feed = feed
        self._waiting: list[pa.Table] = []
        self._rows = 0
        self.dropped_rows = 0

    def read(self, store: Store, now: float) -> list[pa.Table]:
        feed = self.feed
        with feed._lock:
            if feed._polled_at is None or now > feed._polled_at:
                table = feed.poll_table(store, now)
                feed._polled_at = now  # after the poll: one that failed is tried again
                if table.num_rows:
                    for reader in feed._readers:
                        reader._put(table)
            out, self._waiting, self._rows = self._waiting, [], 0
        return out

    def _put(self, table: pa.Table) -> None:
        self._waiting.append(table)
        self._rows += table.num_rows
        # A reader nobody evaluates (its detector was removed) must not hold rows forever.
        while self._rows > self.feed.max_rows and len(self._waiting) > 1:
            old = self._waiting.pop(0)
            self._rows -= old.num_rows
            self.dropped_rows += old.num_rows

    def close(self) -> None:
        with self.feed._lock:
            if self in self.feed._readers:
                self.feed._readers.remove(self)
            self._waiting, self._rows = [], 0


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


# A run's aligner keeps at least this many steps of every rank waiting (see max_pending_rows).
PENDING_STEPS_MIN = 128


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

    def __init__(
        self, bound: float = 30.0, max_pending: int = 20_000, max_pending_rows: int = 16_384
    ) -> None:
        self.bound = bound
        self.max_pending = max_pending
        # Rows waiting, at most max(max_pending_rows, PENDING_STEPS_MIN steps of every rank):
        # a rank that stopped reporting holds every later step until the lateness bound, so a
        # first read after a start would otherwise keep all it read of the run.
        self.max_pending_rows = max_pending_rows
        self.pending_rows = 0
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
        if rank not in p.rows:
            p.rows[rank] = row
            self.pending_rows += 1

    @staticmethod
    def declared(rows: dict[int, Row]) -> int:
        return max((int(r["world_size"]) for r in rows.values() if r.get("world_size")), default=0)

    def expected(self, rows: dict[int, Row]) -> int:
        declared = self.declared(rows)
        return declared if declared > 0 else self.max_rank + 1

    def ready(self, now: float, *, settled_only: bool = False) -> list[AlignedStep]:
        """Steps to release now, in step order. ``settled_only``: only those complete by their
        declared ``world_size`` with no step possibly missing before them (what a later call
        at the same ``now`` would release the same way), none for the lateness bound."""
        out = []
        overflow = len(self.pending) - self.max_pending
        row_cap = max(self.max_pending_rows, PENDING_STEPS_MIN * (self.max_rank + 1))
        for step in sorted(self.pending):
            p = self.pending[step]
            if settled_only and self.pending_rows <= row_cap:
                declared = self.declared(p.rows)
                if declared <= 0 or len(p.rows) < declared:
                    break
            expected = self.expected(p.rows)
            complete = len(p.rows) >= expected
            final = overflow > 0 or self.pending_rows > row_cap
            final = final or (not settled_only and now - p.first_seen >= self.bound)
            gap = self.released is not None and self.stride is not None and step - self.released > self.stride
            if not final and (not complete or gap):
                break
            del self.pending[step]
            self.pending_rows -= len(p.rows)
            overflow -= 1
            self.released = step
            if not complete:
                self.incomplete_steps += 1
            out.append(AlignedStep(step, p.rows, expected, complete))
        return out
