"""The embedded store on DuckDB: one file in the data directory, WAL-backed.

Writes go through one connection (the ingest writer thread); reads use their own cursors.
A commit returns only after DuckDB has synced its write-ahead log, so "acknowledged" means
"survives kill -9". Batches are appended as Arrow tables because DuckDB scans them
zero-copy; NULL and NaN stay distinct (a NaN loss is a finding, a missing loss is not).

A full disk must cost availability, never data. DuckDB's automatic checkpoint runs inside
a commit and, when it cannot write, leaves a commit that is durable but reported as failed
and a database that refuses everything until reopened. So the store checkpoints itself,
after the commit has returned, and treats a failed checkpoint as "reopen later" (the WAL
holds the data). Writes are refused with ``StoreUnavailable`` (retryable) when the data
dir's free space is below ``min_free_bytes``, when DuckDB cannot write, and while the
database waits to be reopened; the reopen is retried at most every ``reopen_interval``
seconds by the next write, read or ``unavailable_reason`` call.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import pyarrow as pa

from mlvigil.core.findings import Finding
from mlvigil.core.records import TABLES, RecordBatch
from mlvigil.core.store.base import (
    MAX_WINDOW_FEATURES,
    WINDOW_META,
    Columns,
    StoreError,
    StoreUnavailable,
    window_feature_name_ok,
)
from mlvigil.core.store.dialect import DUCKDB, Execute, SqlStore, finding_row
from mlvigil.core.store.dialect import ident as _ident

log = logging.getLogger(__name__)


# DuckDB's own checkpoint runs inside COMMIT (see the module docstring); this turns it off.
_NO_AUTO_CHECKPOINT = "1000GB"

T = TypeVar("T")

# Passes of the batched retention over one table (see ``apply_retention``).
_RETENTION_ROUNDS = 3
_RETENTION_MAX_PAUSE_S = 0.1

# The readiness probe's write after a failed one: room for a typical export, not just a byte
# that fits in the WAL's last page.
_PROBE_BYTES = 256 * 1024

_ARROW_TYPES = {
    "DOUBLE": pa.float64(),
    "BIGINT": pa.int64(),
    "INTEGER": pa.int32(),
    "VARCHAR": pa.string(),
    "BLOB": pa.binary(),
    "BOOLEAN": pa.bool_(),
}

_SCHEMAS = {
    table: pa.schema([(c.name, _ARROW_TYPES[c.sql_type]) for c in cols]) for table, cols in TABLES.items()
}

_FINDING_COLUMNS = (
    "id VARCHAR PRIMARY KEY, kind VARCHAR, severity VARCHAR, state VARCHAR, subject VARCHAR,"
    " updated_at DOUBLE, started_at DOUBLE, resolved_at DOUBLE, body VARCHAR"
)


class DuckDBStore(SqlStore):
    """Records, Findings and documents in ``<data_dir>/mlvigil.duckdb``."""

    dialect = DUCKDB

    def __init__(
        self,
        data_dir: str | Path,
        *,
        memory_limit: str | None = None,
        min_free_bytes: int = 0,
        checkpoint_bytes: int = 16 * 1024 * 1024,
        reopen_interval: float = 1.0,
        retry_after: int = 5,
        retention_batch_rows: int = 20_000,
    ) -> None:
        self.path = Path(data_dir) / "mlvigil.duckdb"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._config: dict[str, str | bool | int | float | list[str]] = {
            "checkpoint_threshold": _NO_AUTO_CHECKPOINT
        }
        if memory_limit:
            self._config["memory_limit"] = memory_limit
        #: Writes are refused while the data dir has less free space than this.
        self.min_free_bytes = min_free_bytes
        #: The WAL is checkpointed into the database file once it is larger than this.
        self.checkpoint_bytes = checkpoint_bytes
        self.reopen_interval = reopen_interval
        self.retry_after = retry_after
        #: Most rows one retention transaction deletes (how long it may hold ingest).
        self.retention_batch_rows = max(1, int(retention_batch_rows))
        #: Transactions the last ``apply_retention`` took.
        self.retention_batches = 0
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        # Why the database must be reopened before use (None: it is usable).
        self._broken: str | None = None
        self._next_reopen = 0.0
        # Why the last write failed for a disk reason (None once a write succeeds again).
        self._write_failed: str | None = None
        self._next_probe = 0.0
        self._con = duckdb.connect(str(self.path), config=self._config)
        self._reader = self._con.cursor()
        with self._write_lock:
            self._create_schema_locked()

    def _create_schema_locked(self) -> None:
        for table, cols in TABLES.items():
            body = ", ".join(f"{_ident(c.name)} {c.sql_type}" for c in cols)
            self._con.execute(f"CREATE TABLE IF NOT EXISTS {_ident(table)} ({body})")
        self._con.execute(f"CREATE TABLE IF NOT EXISTS findings ({_FINDING_COLUMNS})")
        # How far each write-ahead log has been loaded (collector/wal.py).
        self._con.execute(
            "CREATE TABLE IF NOT EXISTS log_positions"
            " (log VARCHAR PRIMARY KEY, segment BIGINT, byte_offset BIGINT)"
        )
        self._con.execute(
            "CREATE TABLE IF NOT EXISTS docs (collection VARCHAR, id VARCHAR, body VARCHAR,"
            " PRIMARY KEY (collection, id))"
        )

    # -- availability ----------------------------------------------------------------------
    def _unavailable(self, exc: BaseException) -> StoreUnavailable | None:
        """A StoreUnavailable for an error that is the disk's, not the data's (None otherwise);
        marks the database for reopening when DuckDB has invalidated it."""
        if isinstance(exc, StoreUnavailable):
            return exc
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        fatal = isinstance(exc, duckdb.FatalException) or "invalidated" in str(exc)
        if fatal:
            if self._broken is None:
                log.error("store: database unusable until reopened: %s", text)
            self._broken = f"the database must be reopened after an error: {text}"
        if fatal or isinstance(exc, duckdb.IOException | OSError) or "Could not write" in text:
            return StoreUnavailable(f"the store cannot write to {self.path.parent}: {text}", self.retry_after)
        return None

    def _free_bytes(self) -> int:
        st = os.statvfs(self.path.parent)
        return st.f_bavail * st.f_frsize

    def _free_space_reason(self) -> str | None:
        if self.min_free_bytes <= 0:
            return None
        try:
            free = self._free_bytes()
        except OSError as exc:
            return f"cannot read the free space of {self.path.parent}: {exc}"
        if free < self.min_free_bytes:
            return (
                f"the data dir {self.path.parent} has {free / 2**20:.1f} MiB free, below the reserve"
                f" of {self.min_free_bytes / 2**20:.1f} MiB (storage.min_free_bytes); free space on"
                " that disk"
            )
        return None

    def _reopen_locked(self) -> None:
        """Close the unusable database and open the file again (both locks held); the WAL
        replays every committed write. Retried at most every ``reopen_interval`` seconds."""
        now = time.monotonic()
        if self._broken is None or now < self._next_reopen:
            return
        self._next_reopen = now + self.reopen_interval
        for handle in (self._reader, self._con):
            with contextlib.suppress(Exception):
                handle.close()
        try:
            self._con = duckdb.connect(str(self.path), config=self._config)
            self._reader = self._con.cursor()
            self._create_schema_locked()
        except Exception as exc:
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            self._broken = f"cannot reopen the database {self.path}: {text}"
            log.warning("store: %s; retrying in %.1fs", self._broken, self.reopen_interval)
            return
        log.warning("store: database reopened after: %s", self._broken)
        self._broken = None

    def _recover(self) -> None:
        if self._broken is not None and time.monotonic() >= self._next_reopen:
            with self._write_lock, self._read_lock:
                self._reopen_locked()

    def _writable_locked(self) -> duckdb.DuckDBPyConnection:
        """The connection to write with (write lock held), or StoreUnavailable."""
        if self._broken is not None:
            with self._read_lock:
                self._reopen_locked()
        if self._broken is not None:
            raise StoreUnavailable(self._broken, self.retry_after)
        if (reason := self._free_space_reason()) is not None:
            raise StoreUnavailable(reason, self.retry_after)
        return self._con

    def _failed_write(self, exc: BaseException) -> BaseException:
        """The error to raise for a failed write; a disk failure is remembered, so readiness
        reports it until a write (or the readiness probe's write) succeeds again."""
        unavailable = self._unavailable(exc)
        if unavailable is None:
            return exc
        self._write_failed = unavailable.reason
        return unavailable

    def _after_commit_locked(self, checkpoint_bytes: int | None = None) -> None:
        """Checkpoint a WAL larger than ``checkpoint_bytes`` (default: the store's) now that
        the commit is durable. A failure here never turns an acknowledged write into an
        error: the data is in the WAL; the database is reopened before its next use if
        DuckDB gave up on it."""
        self._write_failed = None
        try:
            wal = os.stat(f"{self.path}.wal").st_size
            room = self._free_bytes()
        except OSError:
            return
        if wal < (self.checkpoint_bytes if checkpoint_bytes is None else checkpoint_bytes):
            return
        if self._free_space_reason() is not None or room < wal:
            # A checkpoint writes up to the WAL's contents into the database file, and one
            # that runs out of room invalidates the database: wait until there is room.
            return
        try:
            self._con.execute("CHECKPOINT")
        except Exception as exc:
            if self._unavailable(exc) is None:
                log.debug("store: checkpoint deferred: %s", exc)
            else:
                log.warning("store: checkpoint failed (committed data is kept in the WAL): %s", exc)

    def _rollback_locked(self) -> None:
        # After a failed COMMIT DuckDB has already ended the transaction.
        with contextlib.suppress(Exception):
            self._con.rollback()

    def _write(self, statements: Callable[[duckdb.DuckDBPyConnection], object]) -> None:
        """Run ``statements`` in one transaction on the write connection."""
        with self._write_lock:
            con = self._writable_locked()
            try:
                con.begin()
                statements(con)
                con.commit()
            except Exception as exc:
                self._rollback_locked()
                raise self._failed_write(exc) from exc
            self._after_commit_locked()

    def _read(self, query: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Run ``query`` on the read cursor; disk errors become StoreUnavailable."""
        self._recover()
        with self._read_lock:
            if self._broken is not None:
                raise StoreUnavailable(self._broken, self.retry_after)
            try:
                return query(self._reader)
            except Exception as exc:
                err = exc
            finally:
                # A result left open (a fetchone) keeps the reader's transaction open, and
                # with it every CHECKPOINT refused: the DuckDB WAL and the in-memory tables
                # then grow without bound under steady ingest. Drain it.
                with contextlib.suppress(duckdb.Error):
                    self._reader.fetchall()
        raise (self._unavailable(err) or err) from err

    def _read_rows(self, work: Callable[[Execute], T]) -> T:
        return self._read(lambda cur: work(lambda sql, params: cur.execute(sql, params).fetchall()))

    def unavailable_reason(self) -> str | None:
        """Never waits for a write or read in progress (a readiness probe must answer fast):
        reopening and the probe write are tried only when both locks are free at once."""
        if not self._write_lock.acquire(blocking=False):
            return self._broken or self._free_space_reason() or self._write_failed
        try:
            if self._broken is not None and self._read_lock.acquire(blocking=False):
                try:
                    self._reopen_locked()
                finally:
                    self._read_lock.release()
            if self._broken is not None:
                return self._broken
            if (reason := self._free_space_reason()) is not None:
                return reason
            if self._write_failed is not None and time.monotonic() >= self._next_probe:
                # The last write failed for lack of space and none has been tried since
                # (clients are told to back off): find out with a write of our own.
                self._next_probe = time.monotonic() + self.reopen_interval
                self._probe_write_locked()
            return self._write_failed
        finally:
            self._write_lock.release()

    def _probe_write_locked(self) -> None:
        try:
            self._con.begin()
            self._con.execute(
                "INSERT OR REPLACE INTO docs VALUES ('_store', 'write-probe', ?)",
                [json.dumps({"at": time.time(), "room": "x" * _PROBE_BYTES})],
            )
            self._con.commit()
        except Exception as exc:
            self._rollback_locked()
            self._failed_write(exc)
            return
        self._after_commit_locked()

    # -- records ---------------------------------------------------------------------------
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

    def _append_locked(self, batch: RecordBatch) -> None:
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
            self._con.register("_batch", arrow)
            try:
                self._con.execute(f"INSERT INTO {_ident(table)} SELECT * FROM _batch")
            finally:
                self._con.unregister("_batch")

    def log_position(self, log: str) -> tuple[int, int] | None:
        """(segment, byte offset) up to which write-ahead log ``log`` is loaded; None: nothing yet."""
        row = self._read(
            lambda con: con.execute(
                "SELECT segment, byte_offset FROM log_positions WHERE log = ?", [log]
            ).fetchone()
        )
        return (int(row[0]), int(row[1])) if row else None

    def load_log(self, log: str, tables: dict[str, pa.Table], segment: int, offset: int) -> None:
        """Insert Arrow ``tables`` (record tables, columns by name; missing ones NULL) and move
        ``log``'s position to (segment, offset), in one transaction: a replay after a crash
        starts exactly after what was stored."""

        def statements(con: duckdb.DuckDBPyConnection) -> None:
            # One thread for the inserts: a log group (thousands of rows) costs about half
            # the CPU that way; DuckDB's parallel insert spends the rest coordinating.
            threads = con.execute("SELECT current_setting('threads')").fetchone()
            con.execute("SET threads = 1")
            try:
                for table, arrow in tables.items():
                    if table not in TABLES:
                        raise StoreError(f"unknown record table {table!r}")
                    con.register("_log_batch", arrow)
                    try:
                        con.execute(f"INSERT INTO {_ident(table)} BY NAME SELECT * FROM _log_batch")
                    finally:
                        con.unregister("_log_batch")
            finally:
                con.execute(f"SET threads = {int(threads[0]) if threads else 1}")
            # UPDATE first: cheaper than INSERT OR REPLACE (a delete and an insert) per group.
            moved = con.execute(
                "UPDATE log_positions SET segment = ?, byte_offset = ? WHERE log = ?", [segment, offset, log]
            ).fetchone()
            if not moved or not moved[0]:
                con.execute("INSERT INTO log_positions VALUES (?, ?, ?)", [log, segment, offset])

        self._write(statements)

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
            try:
                con.begin()
                for batch in batches:
                    self._append_locked(batch)
                con.commit()
            except Exception as exc:
                if _committed_anyway(exc):
                    self._unavailable(exc)
                    return [None] * len(batches)
                self._rollback_locked()
                if isinstance(failed := self._failed_write(exc), StoreUnavailable):
                    return [failed] * len(batches)
                if len(batches) == 1:
                    return [exc]
            else:
                self._after_commit_locked()
                return [None] * len(batches)
            results: list[BaseException | None] = []
            for batch in batches:
                try:
                    con.begin()
                    self._append_locked(batch)
                    con.commit()
                    results.append(None)
                except Exception as exc:
                    if _committed_anyway(exc):
                        self._unavailable(exc)
                        results.append(None)
                        continue
                    self._rollback_locked()
                    results.append(self._failed_write(exc))
            if any(r is None for r in results):
                self._after_commit_locked()
            return results

    def _where(
        self, since: float | None, until: float | None, where: dict[str, Any] | None
    ) -> tuple[str, list[Any]]:
        return DUCKDB.where(since, until, where)

    def _select(
        self,
        table: str,
        names: Sequence[str],
        since: float | None,
        until: float | None,
        where: dict[str, Any] | None,
        last: int | None,
        order_by: str,
    ) -> tuple[str, list[Any]]:
        return DUCKDB.select(table, names, since, until, where, last, order_by)

    def query(
        self,
        table: str,
        *,
        columns: Sequence[str] | None = None,
        since: float | None = None,
        until: float | None = None,
        where: dict[str, Any] | None = None,
        last: int | None = None,
        order_by: str = "ts",
    ) -> Columns:
        names = list(columns) if columns else [c.name for c in TABLES.get(table, ())]
        sql, params = self._select(table, names, since, until, where, last, order_by)
        rows = self._read(lambda cur: cur.execute(sql, params).fetchall())
        return {name: [r[i] for r in rows] for i, name in enumerate(names)}

    def feature_window(
        self,
        *,
        numeric: Sequence[str] | None = None,
        text: Sequence[str] | None = None,
        since: float | None = None,
        until: float | None = None,
        where: dict[str, Any] | None = None,
        last: int | None = None,
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """The features are extracted by DuckDB's JSON reader (C++, all cores, the GIL
        released), each row parsed once for all features, and only the features asked for:
        no Python object per row and value. Measured, extracting at read time costs less than
        keeping a second, typed copy of the features at write time unless a row is read more
        than about nine times (docs/drift.md, "Evaluation cost")."""
        cond, params = self._where(since, until, where)
        meta = ", ".join(_ident(c) for c in WINDOW_META)
        if last is not None:
            # The newest N rows by a narrow top-N on ts first: sorting whole rows (features
            # included) to find them costs seconds on a large store.
            cutoff_sql = (
                f"SELECT min(ts) FROM (SELECT ts FROM inferences{cond} ORDER BY ts DESC LIMIT {int(last)})"
            )
            row = self._read(lambda cur: cur.execute(cutoff_sql, params).fetchone())
            if row is None or row[0] is None:
                return {c: [] for c in WINDOW_META}, {}, {}
            cond, params = self._where(max(row[0], since) if since is not None else row[0], until, where)
            source = f"(SELECT * FROM inferences{cond} ORDER BY ts DESC LIMIT {int(last)})"
        else:
            source = f"(SELECT * FROM inferences{cond})"
        if numeric is None and text is None:
            keys_sql = (
                f"SELECT DISTINCT k FROM (SELECT unnest(try(json_keys(features))) AS k FROM {source})"
                f" WHERE k IS NOT NULL ORDER BY k LIMIT {MAX_WINDOW_FEATURES}"
            )
            found = [r[0] for r in self._read(lambda cur: cur.execute(keys_sql, params).fetchall())]
            numeric = text = found
        names = list(dict.fromkeys([*(numeric or ()), *(text or ())]))
        names = [k for k in names if window_feature_name_ok(k)]
        index = {k: i + 1 for i, k in enumerate(names)}
        # Each row's JSON is parsed once for all features (json_extract with a list of
        # paths); each value comes back as its JSON text, which says its type: a number
        # parses as one, a string is quoted.
        select = [meta]
        for j, k in enumerate(k for k in (numeric or ()) if k in index):
            select.append(f"TRY_CAST(f{index[k]} AS DOUBLE) AS n{j}")
        for j, k in enumerate(k for k in (text or ()) if k in index):
            f = f"f{index[k]}"
            number = f"TRY_CAST({f} AS DOUBLE)"
            # The category label of feature_value_forms: whole numbers as integers (integer
            # text as it is, so large ids keep every digit), booleans as True/False.
            select.append(
                f"CASE WHEN {f} IS NULL OR {f} = 'null' OR {f}[1] IN ('[', '{{') THEN NULL"
                f" WHEN {f}[1] = '\"' THEN json_extract_string({f}, '$')"
                f" WHEN {f} = 'true' THEN 'True' WHEN {f} = 'false' THEN 'False'"
                f" WHEN NOT regexp_matches({f}, '[.eE]') THEN {f}"
                f" WHEN abs({number}) < 1e38 AND {number} = trunc({number})"
                f" THEN CAST(CAST({number} AS HUGEINT) AS VARCHAR) ELSE {f} END AS s{j}"
            )
        paths = [f'$."{k}"' for k in names]
        texts = ", ".join(f"CAST(v[{i}] AS VARCHAR) AS f{i}" for i in index.values())
        extract = "try(json_extract(features, ?::VARCHAR[])) AS v" if names else "NULL AS v"
        sql = (
            f"SELECT {', '.join(select)} FROM (SELECT {meta}{', ' + texts if texts else ''}"
            f" FROM (SELECT {meta}, {extract} FROM {source})) ORDER BY ts"
        )
        args = [*([paths] if names else []), *params]
        raw = self._read(lambda cur: cur.execute(sql, args).fetchnumpy())
        out_meta: dict[str, Any] = {c: raw[c] for c in WINDOW_META}
        num_cols: dict[str, Any] = {
            k: raw[f"n{j}"] for j, k in enumerate(k for k in (numeric or ()) if k in index)
        }
        text_cols: dict[str, Any] = {
            k: raw[f"s{j}"] for j, k in enumerate(k for k in (text or ()) if k in index)
        }
        return out_meta, num_cols, text_cols

    def query_arrow(
        self,
        table: str,
        *,
        columns: Sequence[str],
        since: float | None = None,
        where: dict[str, Any] | None = None,
        last: int | None = None,
    ) -> pa.Table:
        if last is None:
            sql, params = self._select(table, columns, since, None, where, None, "ts")
            return self._read(lambda cur: cur.sql(sql, params=params).to_arrow_table())
        # The newest ``last`` rows in two steps: the ts of the cut from the ts column alone,
        # then the rows from it. DuckDB's top-N over every column of the window held ~10x
        # the result's size (285 MB for a 29 MB result of 800,000 candidate rows).
        cond, params = self._where(since, None, where)
        cut_sql = (
            f"SELECT ts FROM {_ident(table)}{cond} ORDER BY ts DESC LIMIT 1 OFFSET {max(int(last) - 1, 0)}"
        )

        def read(cur: duckdb.DuckDBPyConnection) -> pa.Table:
            cut = cur.execute(cut_sql, params).fetchall()
            sql, more = self._select(table, columns, cut[0][0] if cut else since, None, where, None, "ts")
            rows = cur.sql(sql, params=more).to_arrow_table()
            return rows.slice(max(rows.num_rows - int(last), 0))

        return self._read(read)

    def counts(self) -> dict[str, int]:
        return self._read(
            lambda cur: {
                t: int(cur.execute(f"SELECT count(*) FROM {_ident(t)}").fetchone()[0])  # type: ignore[index]
                for t in TABLES
            }
        )

    def apply_retention(self, cutoffs: dict[str, float]) -> dict[str, int]:
        """Deletes in transactions of at most ``retention_batch_rows`` rows, releasing the
        write lock between them, so an ingest append waits for one small batch at most (one
        DELETE of millions of rows held it for most of a second).

        Batches are ranges of ``rowid`` (DuckDB skips the row groups outside the range), found
        on the read cursor without holding writes. Each DELETE also checks ``ts < cutoff``, so
        it removes only expired rows even if a checkpoint renumbered rows meanwhile; rows such a
        renumbering hid are looked for again, up to ``_RETENTION_ROUNDS`` times, else the next
        pass takes them.

        DuckDB's vacuum (merging row groups that have deletes) is off meanwhile: a checkpoint
        that vacuumed half-deleted row groups rewrote the table, 0.3-1 s under the write lock,
        while fully deleted row groups are dropped without it. One checkpoint at the end
        stores the deletes before vacuum is back on."""
        deleted: dict[str, int] = {}
        self.retention_batches = 0
        size = self.retention_batch_rows
        for table in cutoffs:
            if table not in TABLES:
                raise StoreError(f"unknown record table {table!r}")
        self._retention_mode(True)
        try:
            for table, cutoff in cutoffs.items():
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
                began = time.monotonic()
                total += self._count_written(delete, [lo, lo + size, cutoff])
                self.retention_batches += 1
                # Python's lock is not fair: without a pause this thread takes it again before
                # a waiting append wakes up. Pausing as long as the batch held it leaves ingest
                # at least half of the write path while retention runs.
                time.sleep(min(time.monotonic() - began, _RETENTION_MAX_PAUSE_S))
        return total

    def _count_written(self, sql: str, params: list[Any]) -> int:
        """Run one counting DML statement (DELETE, UPDATE) in its own transaction."""
        counted: list[int] = []
        self._write(lambda con: counted.append(int(con.execute(sql, params).fetchone()[0])))  # type: ignore[index]
        return counted[0]

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
                    self._after_commit_locked(checkpoint_bytes=0)
                self._con.execute("RESET max_vacuum_tasks")
            except Exception as exc:
                self._unavailable(exc)
                log.warning("store: retention could not %s vacuum: %s", "pause" if on else "resume", exc)

    # -- findings --------------------------------------------------------------------------
    def upsert_findings(self, findings: Iterable[Finding]) -> None:
        rows = [finding_row(f) for f in findings]
        if not rows:
            return
        self._write(
            lambda con: con.executemany(
                "INSERT OR REPLACE INTO findings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
            )
        )

    # -- documents -------------------------------------------------------------------------
    def put_docs(self, collection: str, docs: dict[str, dict[str, Any]]) -> None:
        rows = [(collection, doc_id, json.dumps(doc, default=str)) for doc_id, doc in docs.items()]
        if not rows:
            return
        self._write(lambda con: con.executemany("INSERT OR REPLACE INTO docs VALUES (?, ?, ?)", rows))

    def get_doc(self, collection: str, doc_id: str) -> dict[str, Any] | None:
        row = self._read(
            lambda cur: cur.execute(
                "SELECT body FROM docs WHERE collection = ? AND id = ?", [collection, doc_id]
            ).fetchone()
        )
        return json.loads(row[0]) if row else None

    def list_docs(
        self, collection: str, *, states: Collection[str] | None = None
    ) -> dict[str, dict[str, Any]]:
        rows = self._read(
            lambda cur: cur.execute(
                "SELECT id, body FROM docs WHERE collection = ? ORDER BY id", [collection]
            ).fetchall()
        )
        docs = {r[0]: json.loads(r[1]) for r in rows}
        if states is None:
            return docs
        return {i: d for i, d in docs.items() if d.get("state") in states}

    def delete_doc(self, collection: str, doc_id: str) -> bool:
        found: list[bool] = []

        def delete(con: duckdb.DuckDBPyConnection) -> None:
            row = con.execute(
                "DELETE FROM docs WHERE collection = ? AND id = ?", [collection, doc_id]
            ).fetchone()
            found.append(bool(row and row[0]))

        self._write(delete)
        return found[0]

    def close(self) -> None:
        with self._write_lock, self._read_lock:
            with contextlib.suppress(Exception):
                self._reader.close()
            try:
                if self._broken is None:
                    self._con.execute("CHECKPOINT")
            except Exception as exc:
                # Every commit is in the WAL; the next open replays it.
                log.warning("store: checkpoint on close failed (the WAL keeps the data): %s", exc)
            finally:
                with contextlib.suppress(Exception):
                    self._con.close()


def _committed_anyway(exc: BaseException) -> bool:
    """DuckDB's words for a COMMIT that is durable although an autocheckpoint after it failed
    (only possible if the auto-checkpoint threshold is reached despite being turned off)."""
    return "COMMIT succeeded and is durable" in str(exc)
