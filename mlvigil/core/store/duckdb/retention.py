"""Retention: expired rows deleted in small transactions that never hold ingest for long."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from mlvigil.core.records import TABLES
from mlvigil.core.store.base import StoreError
from mlvigil.core.store.dialect import ident as _ident
from mlvigil.core.store.duckdb.connection import DuckDBConnection, T, log

# Passes of the batched retention over one table (see ``apply_retention``).
_RETENTION_ROUNDS = 3
# A checkpoint threshold no WAL reaches: the caller checkpoints on its own terms.
_NEVER = 2**62
_RETENTION_MAX_PAUSE_S = 0.1


class Retention(DuckDBConnection):
    """``apply_retention`` in batches (see there)."""

    # Set by ``DuckDBStore.__init__`` (its arguments of the same names).
    #: Most rows one retention transaction deletes (how long it may hold ingest).
    retention_batch_rows: int
    #: During retention the WAL is checkpointed once it is larger than this, in a hold of its
    #: own after the batch that grew it: a checkpoint holds commits for a time that grows with
    #: the WAL (a 16 MiB WAL of deletes: 25-95 ms), a small one for a few milliseconds.
    retention_checkpoint_bytes: int
    #: Transactions the last ``apply_retention`` took.
    retention_batches: int

    def apply_retention(self, cutoffs: dict[str, float]) -> dict[str, int]:
        """Deletes in transactions of at most ``retention_batch_rows`` rows, releasing the
        write lock between them, so an ingest append waits for one small batch at most (one
        DELETE of millions of rows held it for most of a second).

        Batches are ranges of ``rowid`` (DuckDB skips the row groups outside the range), found
        on the read cursor without holding writes. Each DELETE also checks ``ts < cutoff``, so
        it removes only expired rows even if a checkpoint renumbered rows meanwhile; rows such a
        renumbering hid are looked for again, up to ``_RETENTION_ROUNDS`` times, else the next
        pass takes them.

        The deletes are checkpointed as the WAL passes ``retention_checkpoint_bytes``, in a
        write-lock hold of their own after the batch's: a checkpoint holds commits for a time
        that grows with the WAL, and one of the whole pass's deletes (16 MiB for 2.5M rows)
        held an append for 25-95 ms. Each hold is followed by a pause as long as it (see
        ``_yielding``), so an append waits for one batch or one small checkpoint at most.

        DuckDB's vacuum (merging row groups that have deletes) is off meanwhile: a checkpoint
        that vacuumed half-deleted row groups rewrote the table, 0.3-1 s under the write lock,
        while fully deleted row groups are dropped without it. One checkpoint at the end
        stores the last deletes before vacuum is back on."""
        deleted: dict[str, int] = {}
        self.retention_batches = 0
        size = self.retention_batch_rows
        for table in cutoffs:
            if table not in TABLES:
                raise StoreError(f"unknown record table {table!r}")
        self._retention_mode(True)
        try:
            for table, cutoff in cutoffs.items():
                if table == "spans":  # files, removed whole (span_files.py)
                    deleted[table] = self.span_files.expire(cutoff)
                    continue
                deleted[table] = self._delete_expired(table, cutoff, size)
        finally:
            self._retention_mode(False)
        return deleted

    def _delete_expired(self, table: str, cutoff: float, size: int) -> int:
        name = _ident(table)
        ranges = f"SELECT DISTINCT rowid // {size} FROM {name} WHERE ts < ? ORDER BY 1"
        delete = f"DELETE FROM {name} WHERE rowid >= ? AND rowid < ? AND ts < ?"
        total = 0
        for _round in range(_RETENTION_ROUNDS):
            chunks = self._read(lambda cur: cur.execute(ranges, [cutoff]).fetchall())
            if not chunks:
                break
            for (chunk,) in chunks:
                lo = int(chunk) * size
                # The batch and the checkpoint of its deletes hold the write lock one after
                # the other, never together: an append waits for one of them at most.
                total += _yielding(self._count_written, delete, [lo, lo + size, cutoff], _NEVER)
                self.retention_batches += 1
                _yielding(self._checkpoint, self.retention_checkpoint_bytes)
        return total

    def _retention_mode(self, on: bool) -> None:
        """Vacuum off while retention deletes; back on after a checkpoint of the deletes. A
        database that is unusable now is reopened later with DuckDB's defaults."""
        with self._write_lock:
            if self._broken is not None:
                return
            try:
                if on:
                    self._con.execute("SET max_vacuum_tasks = 0")
                    return
                if self.retention_batches:
                    self._checkpoint_locked(0)
                self._con.execute("RESET max_vacuum_tasks")
            except Exception as exc:
                self._unavailable(exc)
                log.warning("store: retention could not %s vacuum: %s", "pause" if on else "resume", exc)


def _yielding(work: Callable[..., T], *args: Any) -> T:
    """``work(*args)``, then a pause as long as it took (at most ``_RETENTION_MAX_PAUSE_S``): Python's
    lock is not fair, and without the pause this thread takes the write lock again before a
    waiting append wakes up. Ingest keeps at least half of the write path meanwhile."""
    began = time.monotonic()
    out = work(*args)
    time.sleep(min(time.monotonic() - began, _RETENTION_MAX_PAUSE_S))
    return out
