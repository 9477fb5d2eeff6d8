"""Writing records: group-committed appends, inference half-row merges, and loading the
ingest write-ahead log. Batches are appended as Arrow tables because DuckDB scans them
zero-copy; NULL and NaN stay distinct (a NaN loss is a finding, a missing loss is not)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb
import pyarrow as pa

from mlvigil.core.records import TABLES, RecordBatch, arrow_schema
from mlvigil.core.store.base import StoreError, StoreUnavailable
from mlvigil.core.store.dialect import ident as _ident
from mlvigil.core.store.duckdb.connection import DuckDBConnection
from mlvigil.core.store.duckdb.connection import log as store_log
from mlvigil.core.store.duckdb.span_files import SpanFile

_SCHEMAS = {table: arrow_schema(table) for table in TABLES}
#: A log load whose largest table has this many rows runs with DuckDB's ``threads`` at 1
#: (``_single_thread``); a smaller one (a loader keeping up: a request or a few) as it is.
#: Measured per 1000-span request: 1 request 11.4 ms at 2 threads vs 14.9 toggled, 4
#: requests 4.7 vs 5.9, 32 requests 3.5 vs 3.0.
SINGLE_THREAD_ROWS = 16_384


class RecordWrites(DuckDBConnection):
    """Appends (one transaction for a group of batches), merges and log loads."""

    # How far back a second half may find the first (KServe logs both within one request).
    MERGE_WINDOW_S = 3600.0

    def _merge_inferences_locked(self, rows: list[dict[str, Any]]) -> None:
        """Merge each half-row into the row its other half wrote, or insert it: one UPDATE and
        one INSERT for the whole list (a 20,000-instance event is two statements, not 40,000)."""
        cols = [c.name for c in TABLES["inferences"]]
        # Merged one after another when a request id repeats in the list (the later half meets
        # the earlier); otherwise all at once.
        if len({(r["request_id"], r["source"]) for r in rows}) < len(rows):
            for row in rows:
                self._merge_inferences_locked([row])
            return
        merge = pa.Table.from_pydict(
            {c: [r.get(c) for r in rows] for c in cols}, schema=_SCHEMAS["inferences"]
        )
        self._con.register("_merge", merge)
        try:
            self._con.execute(
                "UPDATE inferences SET features = coalesce(inferences.features, m.features),"
                " prediction = coalesce(inferences.prediction, m.prediction),"
                " score = coalesce(inferences.score, m.score),"
                " latency_s = coalesce(inferences.latency_s, m.latency_s),"
                " model_version = coalesce(inferences.model_version, m.model_version)"
                " FROM _merge AS m WHERE inferences.request_id = m.request_id"
                " AND inferences.source = m.source AND inferences.ts >= m.ts - ?",
                [self.MERGE_WINDOW_S],
            )
            self._con.execute(
                f"INSERT INTO inferences SELECT {', '.join('m.' + _ident(c) for c in cols)} FROM _merge AS m"
                " WHERE NOT EXISTS (SELECT 1 FROM inferences AS i WHERE i.request_id = m.request_id"
                " AND i.source = m.source AND i.ts >= m.ts - ?)",
                [self.MERGE_WINDOW_S],
            )
        finally:
            self._con.unregister("_merge")

    def _append_locked(self, batch: RecordBatch, span_files: list[SpanFile]) -> None:
        """``batch`` in the open transaction; its raw spans as span files, added to
        ``span_files`` (the caller removes them if the transaction fails)."""
        if batch.inference_merges:
            self._merge_inferences_locked(batch.inference_merges)
        for table, cols in batch.columns.items():
            if not cols or not next(iter(cols.values())):
                continue
            schema = _SCHEMAS.get(table)
            if schema is None:
                raise StoreError(f"unknown record table {table!r}")
            try:
                arrow = pa.Table.from_pydict(cols, schema=schema)
            except (pa.ArrowInvalid, pa.ArrowTypeError, KeyError) as exc:
                raise StoreError(f"{table}: {exc}") from exc
            if table == "spans":
                if (written := self._write_span_file(arrow)) is not None:
                    span_files.append(written)
                continue
            self._con.register("_batch", arrow)
            try:
                self._con.execute(f"INSERT INTO {_ident(table)} SELECT * FROM _batch")
            finally:
                self._con.unregister("_batch")

    def log_position(self, log: str) -> tuple[int, int] | None:
        """(segment, byte offset) up to which write-ahead log ``log`` is loaded; None: nothing yet."""
        row = self._channel_read(
            log,
            lambda con: con.execute(
                "SELECT segment, byte_offset FROM log_positions WHERE log = ?", [log]
            ).fetchone(),
        )
        return (int(row[0]), int(row[1])) if row else None

    def load_log(self, log: str, tables: dict[str, pa.Table], segment: int, offset: int) -> None:
        """Store Arrow ``tables`` (record tables, columns by name; missing ones NULL) and move
        ``log``'s position to (segment, offset), in one transaction: a replay after a crash
        starts exactly after what was stored. Raw ``spans`` go to a span file written before
        the transaction (span_files.py: a file past its log's stored position is removed at
        open, so it counts once too). Each ``log`` (a loader pass) writes on its own cursor:
        passes loading different tables commit concurrently. No checkpoint here
        (``checkpoint_loads``, from the pass that can wait)."""
        tables = dict(tables)
        for table in tables:
            if table not in TABLES:
                raise StoreError(f"unknown record table {table!r}")
        spans = tables.pop("spans", None)
        # Setting ``threads`` twice costs ~1.4 ms of CPU a load (DuckDB stops and starts its
        # workers): more than a group of a few thousand rows gains by it.
        single = max((t.num_rows for t in tables.values()), default=0) >= SINGLE_THREAD_ROWS

        def statements(con: duckdb.DuckDBPyConnection) -> None:
            if single:
                self._single_thread(con, True)
            try:
                for table, arrow in tables.items():
                    con.register("_log_batch", arrow)
                    try:
                        con.execute(f"INSERT INTO {_ident(table)} BY NAME SELECT * FROM _log_batch")
                    finally:
                        con.unregister("_log_batch")
            finally:
                if single:
                    self._single_thread(con, False)
            # UPDATE first: cheaper than INSERT OR REPLACE (a delete and an insert) per group.
            moved = con.execute(
                "UPDATE log_positions SET segment = ?, byte_offset = ? WHERE log = ?", [segment, offset, log]
            ).fetchone()
            if not moved or not moved[0]:
                con.execute("INSERT INTO log_positions VALUES (?, ?, ?)", [log, segment, offset])

        written = self._write_span_file(spans, log, segment, offset) if spans is not None else None
        try:
            self._channel_write(log, statements)
        except BaseException:
            if written is not None:
                self.span_files.remove([written])
            raise

    def _write_span_file(
        self, spans: pa.Table, log: str | None = None, segment: int = -1, offset: int = 0
    ) -> SpanFile | None:
        """``spans`` as a new span file; a full disk (or the reserve reached) is
        StoreUnavailable, other refusals StoreError, nothing left behind either way."""
        if spans.num_rows and (reason := self._free_space_reason()) is not None:
            raise StoreUnavailable(reason, self.retry_after)
        try:
            return self.span_files.write(spans, log, segment, offset)
        except OSError as exc:
            # remembered as a failed write: readiness reports it until a write succeeds
            self._write_failed = f"the store cannot write raw spans to {self.span_files.directory}: {exc}"
            raise StoreUnavailable(self._write_failed, self.retry_after) from exc
        except (pa.ArrowInvalid, pa.ArrowTypeError, KeyError, ValueError) as exc:
            raise StoreError(f"spans: {exc}") from exc

    def checkpoint_loads(self, log: str) -> bool:
        """Checkpoint DuckDB's WAL once it is over ``checkpoint_bytes``, on ``log``'s cursor,
        and merge the raw span files that are due (the loader's lowest-priority pass calls
        this after its loads: no hot load waits for it while DuckDB accepts it); see
        ``_channel_checkpoint`` for the bound."""
        try:
            self.span_files.merge()
        except OSError as exc:  # e.g. a full disk: the files stay as they are meanwhile
            store_log.warning("store: raw span files not merged: %s", exc)
        return self._channel_checkpoint(log, force_bytes=4 * self.checkpoint_bytes)

    def append(self, batch: RecordBatch) -> None:
        (err,) = self.append_many([batch])
        if err is not None:
            raise err

    def append_many(self, batches: Sequence[RecordBatch]) -> list[BaseException | None]:
        """Group commit: one transaction for all; on failure, each batch alone so one bad
        batch cannot take the others down with it. When the disk is the problem, every
        batch gets the same StoreUnavailable (nothing of it was stored)."""
        with self._write_lock:
            con = self._writable_locked()
            written: list[SpanFile] = []
            try:
                con.begin()
                for batch in batches:
                    self._append_locked(batch, written)
                con.commit()
            except Exception as exc:
                if _committed_anyway(exc):
                    self._unavailable(exc)
                    return [None] * len(batches)
                self._rollback_locked()
                self.span_files.remove(written)
                if isinstance(failed := self._failed_write(exc), StoreUnavailable):
                    return [failed] * len(batches)
                if len(batches) == 1:
                    return [exc]
            else:
                self._after_commit_locked()
                return [None] * len(batches)
            results: list[BaseException | None] = []
            for batch in batches:
                written = []
                try:
                    con.begin()
                    self._append_locked(batch, written)
                    con.commit()
                    results.append(None)
                except Exception as exc:
                    if _committed_anyway(exc):
                        self._unavailable(exc)
                        results.append(None)
                        continue
                    self._rollback_locked()
                    self.span_files.remove(written)
                    results.append(self._failed_write(exc))
            if any(r is None for r in results):
                self._after_commit_locked()
            return results


def _committed_anyway(exc: BaseException) -> bool:
    """DuckDB's words for a COMMIT that is durable although an autocheckpoint after it failed
    (only possible if the auto-checkpoint threshold is reached despite being turned off)."""
    return "COMMIT succeeded and is durable" in str(exc)
