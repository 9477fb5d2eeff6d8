"""The shared store on PostgreSQL: records, Findings, documents and leases for N replicas.

Selected by ``storage.backend: postgres`` (or ``MLVIGIL_STORE_DSN``). Every replica of
``mlvigil serve`` opens one of these on the same database; the database is the only shared
state (no cluster protocol of our own).

- Record tables are range-partitioned by ``ts`` (epoch seconds), one partition per UTC day,
  created on demand by the first write that needs it. Rows far outside today (a clock years
  off) go to a ``_default`` partition instead of creating thousands of partitions; a day
  partition created later takes its rows out of the default first. Retention drops whole
  day partitions older than the cutoff and deletes the rest row by row (only the partition
  that straddles the cutoff, and the default, are scanned).
- Batches are loaded with binary COPY (psycopg 3), one transaction per group of batches;
  when a group fails, each batch is retried alone so one bad batch cannot cost the others.
- Findings and documents are rows keyed by id; documents keep their JSON text as written
  (NaN and all), plus the document's ``state`` field in a column for ``list_docs(states=)``.
- Leases (``mlvigil_leases``) and outbox claims are in ``mlvigil.core.coordination``; they use
  their own connection so a long COPY never delays a heartbeat.

Connection loss (a database restart, a failover) makes writes and reads raise
``StoreUnavailable`` (HTTP 503 / gRPC UNAVAILABLE, retryable); the next call reconnects.
"""

from __future__ import annotations

import calendar
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
from psycopg import sql

from mlvigil.core.findings import Finding
from mlvigil.core.records import TABLES, RecordBatch
from mlvigil.core.store.base import Columns, StoreError, StoreUnavailable
from mlvigil.core.store.dialect import POSTGRES, Execute, SqlStore, finding_row

if TYPE_CHECKING:
    from mlvigil.core.coordination import Coordinator

log = logging.getLogger(__name__)

T = TypeVar("T")

DAY = 86400.0
# Day partitions are created for rows within a window around now: back to the longest
# retention (``past_days``; older rows are dropped soon anyway) and FUTURE_DAYS ahead. Rows
# outside it (a producer clock years off) go to the default partition, so one hostile batch
# creates at most past_days + FUTURE_DAYS partitions, not one per distinct day it names.
PAST_DAYS = 400
FUTURE_DAYS = 7

_PG_TYPES = {
    "DOUBLE": "double precision",
    "BIGINT": "bigint",
    "INTEGER": "integer",
    "VARCHAR": "text",
    "BLOB": "bytea",
    "BOOLEAN": "boolean",
}
_COPY_TYPES = {
    "DOUBLE": "float8",
    "BIGINT": "int8",
    "INTEGER": "int4",
    "VARCHAR": "text",
    "BLOB": "bytea",
    "BOOLEAN": "bool",
}
# Secondary indexes the detectors' and the API's queries use (besides ts on every table).
_INDEXES: dict[str, tuple[tuple[str, ...], ...]] = {
    "inferences": (("request_id",), ("service", "model", "ts")),
    "labels": (("request_id",),),
    "training_steps": (("run_id", "ts"),),
    "metric_points": (("name", "ts"), ("hw_id", "ts")),
    "llm_calls": (("service", "ts"),),
}


def _ident(name: str) -> sql.Identifier:
    if not name.replace("_", "").isalnum():
        raise StoreError(f"bad identifier {name!r}")
    return sql.Identifier(name)


def partition_name(table: str, day: int) -> str:
    return f"{table}_d{time.strftime('%Y%m%d', time.gmtime(day * DAY))}"


def _strip_nul(value: Any) -> Any:
    # PostgreSQL text cannot hold U+0000 (DuckDB's can): it becomes U+FFFD, the one change.
    return value.replace("\x00", "\ufffd") if isinstance(value, str) else value


class PostgresStore(SqlStore):
    """Records, Findings and documents in one PostgreSQL database (``dsn``)."""

    #: This replica's share of the work (set by the service; see mlvigil.core.coordination).
    coordinator: Coordinator | None = None

    dialect = POSTGRES

    def __init__(
        self,
        dsn: str,
        *,
        retry_after: int = 5,
        connect_timeout: float = 5.0,
        past_days: int = PAST_DAYS,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.dsn = dsn
        self.past_days = past_days
        self.retry_after = retry_after
        self.connect_timeout = connect_timeout
        self._now = now
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._writer: psycopg.Connection[Any] | None = None
        self._reader: psycopg.Connection[Any] | None = None
        # Day partitions known to exist, per table (others are checked, then created).
        self._partitions: dict[str, set[int]] = {t: set() for t in TABLES}
        self._down: str | None = None
        with self._write_lock:
            con = self._connect_locked("writer")
            self._create_schema(con)

    # -- connections -----------------------------------------------------------------------
    def connect(self) -> psycopg.Connection[Any]:
        """A new autocommit connection to the store's database (also for coordination)."""
        return psycopg.connect(self.dsn, autocommit=True, connect_timeout=max(1, int(self.connect_timeout)))

    def _connect_locked(self, which: str) -> psycopg.Connection[Any]:
        con = self._writer if which == "writer" else self._reader
        if con is not None and not con.closed and not con.broken:
            return con
        try:
            con = self.connect()
        except psycopg.Error as exc:
            self._down = f"cannot connect to PostgreSQL: {_first_line(exc)}"
            raise StoreUnavailable(self._down, self.retry_after) from exc
        self._down = None
        if which == "writer":
            self._writer = con
        else:
            self._reader = con
        return con

    def _unavailable(self, exc: BaseException) -> StoreUnavailable | None:
        if isinstance(exc, StoreUnavailable):
            return exc
        if isinstance(exc, psycopg.OperationalError | psycopg.errors.AdminShutdown | psycopg.InterfaceError):
            self._down = f"PostgreSQL connection failed: {_first_line(exc)}"
            return StoreUnavailable(self._down, self.retry_after)
        if isinstance(exc, psycopg.errors.DiskFull | psycopg.errors.InsufficientResources):
            return StoreUnavailable(f"PostgreSQL cannot write: {_first_line(exc)}", self.retry_after)
        return None

    def _write(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        """Run ``work`` in one transaction on the writer connection."""
        with self._write_lock:
            con = self._connect_locked("writer")
            try:
                with con.transaction():
                    return work(con)
            except Exception as exc:
                err = exc
        raise (self._unavailable(err) or err) from err

    def _read(self, work: Callable[[psycopg.Cursor[Any]], T]) -> T:
        with self._read_lock:
            con = self._connect_locked("reader")
            try:
                with con.cursor() as cur:
                    return work(cur)
            except Exception as exc:
                err = exc
        raise (self._unavailable(err) or err) from err

    def _read_rows(self, work: Callable[[Execute], T]) -> T:
        return self._read(lambda cur: work(lambda sql, params: cur.execute(sql, params).fetchall()))

    def unavailable_reason(self) -> str | None:
        if not self._read_lock.acquire(blocking=False):
            return self._down
        try:
            con = self._connect_locked("reader")
            con.execute("SELECT 1")
            return None
        except Exception as exc:
            unavailable = self._unavailable(exc)
            return unavailable.reason if unavailable else _first_line(exc)
        finally:
            self._read_lock.release()

    # -- schema ----------------------------------------------------------------------------
    def _create_schema(self, con: psycopg.Connection[Any]) -> None:
        with con.transaction():
            # One schema creator at a time (replicas start together).
            con.execute("SELECT pg_advisory_xact_lock(hashtext('mlvigil.schema'))")
            for table, cols in TABLES.items():
                body = sql.SQL(", ").join(
                    sql.SQL("{} {}").format(_ident(c.name), sql.SQL(_PG_TYPES[c.sql_type])) for c in cols
                )
                con.execute(
                    sql.SQL("CREATE TABLE IF NOT EXISTS {} ({}) PARTITION BY RANGE (ts)").format(
                        _ident(table), body
                    )
                )
                con.execute(
                    sql.SQL("CREATE TABLE IF NOT EXISTS {} PARTITION OF {} DEFAULT").format(
                        _ident(f"{table}_default"), _ident(table)
                    )
                )
                for cols_ in (("ts",), *_INDEXES.get(table, ())):
                    con.execute(
                        sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({})").format(
                            _ident(f"{table}_{'_'.join(cols_)}_idx"),
                            _ident(table),
                            sql.SQL(", ").join(_ident(c) for c in cols_),
                        )
                    )
            con.execute(
                "CREATE TABLE IF NOT EXISTS findings (id text PRIMARY KEY, kind text, severity text,"
                " state text, subject jsonb, updated_at double precision, started_at double precision,"
                " resolved_at double precision, body text)"
            )
            con.execute("CREATE INDEX IF NOT EXISTS findings_updated_idx ON findings (updated_at)")
            con.execute("CREATE INDEX IF NOT EXISTS findings_state_idx ON findings (state)")
            con.execute(
                "CREATE TABLE IF NOT EXISTS docs (collection text, id text, body text, state text,"
                " PRIMARY KEY (collection, id))"
            )
            con.execute("CREATE INDEX IF NOT EXISTS docs_state_idx ON docs (collection, state)")
            con.execute(
                "CREATE TABLE IF NOT EXISTS mlvigil_leases (name text PRIMARY KEY, holder text NOT NULL,"
                " expires_at double precision NOT NULL, acquired_at double precision NOT NULL)"
            )
        for table in TABLES:
            self._partitions[table] = {d for d, _ in self._day_partitions(con, table)}

    @staticmethod
    def _day_partitions(con: psycopg.Connection[Any], table: str) -> list[tuple[int, str]]:
        """(day, partition name) of ``table``'s day partitions, oldest first."""
        rows = con.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = %s AND c.relname <> %s",
            [table, f"{table}_default"],
        ).fetchall()
        out = []
        for (name,) in rows:
            with contextlib.suppress(ValueError):
                out.append(
                    (calendar.timegm(time.strptime(name.rsplit("_d", 1)[-1], "%Y%m%d")) // 86400, name)
                )
        return sorted(out)

    def _ensure_partitions(self, con: psycopg.Connection[Any], table: str, ts: Iterable[Any]) -> None:
        """Create the day partitions ``ts`` needs (writer lock held, outside a transaction)."""
        today = int(self._now() // DAY)
        days = {int(t // DAY) for t in ts if t is not None} - self._partitions[table]
        days = {d for d in days if today - self.past_days <= d <= today + FUTURE_DAYS}
        for day in sorted(days):
            name = partition_name(table, day)
            lo, hi = day * DAY, (day + 1) * DAY
            with con.transaction():
                # DDL of all replicas, one at a time; re-checked under the lock.
                con.execute("SELECT pg_advisory_xact_lock(hashtext('mlvigil.partitions'))")
                exists = con.execute("SELECT to_regclass(%s) IS NOT NULL", [name]).fetchone()
                if not (exists and exists[0]):
                    default = _ident(f"{table}_default")
                    con.execute(
                        sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS)").format(
                            _ident(name), _ident(table)
                        )
                    )
                    # Rows of this day that arrived before the partition did move into it.
                    con.execute(
                        sql.SQL(
                            "WITH moved AS (DELETE FROM {} WHERE ts >= %s AND ts < %s RETURNING *)"
                            " INSERT INTO {} SELECT * FROM moved"
                        ).format(default, _ident(name)),
                        [lo, hi],
                    )
                    con.execute(
                        sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})").format(
                            _ident(table), _ident(name), sql.Literal(lo), sql.Literal(hi)
                        )
                    )
            self._partitions[table].add(day)

    # -- records ---------------------------------------------------------------------------
    MERGE_WINDOW_S = 3600.0

    def _merge_inferences(self, con: psycopg.Connection[Any], rows: list[dict[str, Any]]) -> None:
        """Merge each half-row into the row its other half wrote, or insert it. Two replicas may
        receive the two halves at once: a transaction lock per (request id, source) orders them."""
        cols = [c.name for c in TABLES["inferences"]]
        keys = sorted({(str(r.get("request_id")), str(r.get("source"))) for r in rows})
        for rid, src in keys:
            con.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"mlvigil.inference:{src}:{rid}"])
        for row in rows:
            values = {c: _strip_nul(row.get(c)) for c in cols}
            updated = con.execute(
                "UPDATE inferences SET features = coalesce(features, %(features)s),"
                " prediction = coalesce(prediction, %(prediction)s), score = coalesce(score, %(score)s),"
                " latency_s = coalesce(latency_s, %(latency_s)s),"
                " model_version = coalesce(model_version, %(model_version)s)"
                " WHERE request_id = %(request_id)s AND source = %(source)s AND ts >= %(ts)s - %(window)s",
                {**values, "window": self.MERGE_WINDOW_S},
            ).rowcount
            if not updated:
                con.execute(
                    sql.SQL("INSERT INTO inferences ({}) VALUES ({})").format(
                        sql.SQL(", ").join(_ident(c) for c in cols),
                        sql.SQL(", ").join(sql.Placeholder(c) for c in cols),
                    ),
                    values,
                )

    def _copy(
        self, con: psycopg.Connection[Any], table: str, cols: dict[str, list[Any]], clean: bool
    ) -> None:
        spec = TABLES.get(table)
        if spec is None:
            raise StoreError(f"unknown record table {table!r}")
        names = [c.name for c in spec]
        missing = [n for n in names if n not in cols]
        if missing:
            raise StoreError(f"{table}: missing columns {missing}")
        lists = [cols[n] for n in names]
        if len({len(x) for x in lists}) != 1:
            raise StoreError(f"{table}: columns of different lengths")
        if clean:
            lists = [
                [_strip_nul(v) for v in x] if c.sql_type == "VARCHAR" else x
                for c, x in zip(spec, lists, strict=True)
            ]
        stmt = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
            _ident(table), sql.SQL(", ").join(_ident(n) for n in names)
        )
        with con.cursor() as cur, cur.copy(stmt) as copy:
            copy.set_types([_COPY_TYPES[c.sql_type] for c in spec])
            for row in zip(*lists, strict=True):
                copy.write_row(row)

    def _prepare_partitions(self, con: psycopg.Connection[Any], batches: Sequence[RecordBatch]) -> None:
        for batch in batches:
            for table, cols in batch.columns.items():
                if table in TABLES and cols.get("ts"):
                    self._ensure_partitions(con, table, cols["ts"])
            if batch.inference_merges:
                self._ensure_partitions(con, "inferences", (r.get("ts") for r in batch.inference_merges))

    def _append_in(self, con: psycopg.Connection[Any], batch: RecordBatch, clean: bool) -> None:
        if batch.inference_merges:
            self._merge_inferences(con, batch.inference_merges)
        for table, cols in batch.columns.items():
            if not cols or not next(iter(cols.values())):
                continue
            self._copy(con, table, cols, clean)

    def append(self, batch: RecordBatch) -> None:
        (err,) = self.append_many([batch])
        if err is not None:
            raise err

    def append_many(self, batches: Sequence[RecordBatch]) -> list[BaseException | None]:
        """Group commit: one transaction for all; on failure, each batch alone. A lost
        connection gives every batch the same StoreUnavailable (nothing of it was stored)."""
        with self._write_lock:
            try:
                con = self._connect_locked("writer")
                self._prepare_partitions(con, batches)
                with con.transaction():
                    for batch in batches:
                        self._append_in(con, batch, clean=False)
                return [None] * len(batches)
            except Exception as exc:
                if (unavailable := self._unavailable(exc)) is not None:
                    return [unavailable] * len(batches)
                first: BaseException = exc
            results: list[BaseException | None] = []
            for batch in batches:
                try:
                    with con.transaction():
                        # The retry also replaces NUL characters, the one value PostgreSQL refuses.
                        self._append_in(con, batch, clean=True)
                    results.append(None)
                except Exception as exc:
                    results.append(self._unavailable(exc) or exc)
            if any(r is not None for r in results):
                log.warning(
                    "store: %d of %d batches refused: %s",
                    sum(r is not None for r in results),
                    len(batches),
                    _first_line(first),
                )
            return results

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
        if table not in TABLES:
            raise StoreError(f"unknown record table {table!r}")
        names = list(columns) if columns else [c.name for c in TABLES[table]]
        stmt, params = POSTGRES.select(table, names, since, until, where, last, order_by)
        rows = self._read(lambda cur: cur.execute(stmt, params).fetchall())
        return {name: [_py(r[i]) for r in rows] for i, name in enumerate(names)}

    def counts(self) -> dict[str, int]:
        def count(cur: psycopg.Cursor[Any]) -> dict[str, int]:
            out = {}
            for t in TABLES:
                row = cur.execute(sql.SQL("SELECT count(*) FROM {}").format(_ident(t))).fetchone()
                out[t] = int(row[0]) if row else 0
            return out

        return self._read(count)

    def apply_retention(self, cutoffs: dict[str, float]) -> dict[str, int]:
        """Drop the day partitions wholly older than each cutoff; delete older rows from the
        partition that straddles it (and from the default partition)."""
        deleted: dict[str, int] = {}
        for table, cutoff in cutoffs.items():
            if table not in TABLES:
                raise StoreError(f"unknown record table {table!r}")

            def drop(con: psycopg.Connection[Any], table: str = table, cutoff: float = cutoff) -> int:
                n = 0
                con.execute("SELECT pg_advisory_xact_lock(hashtext('mlvigil.partitions'))")
                for day, name in self._day_partitions(con, table):
                    if (day + 1) * DAY > cutoff:
                        break
                    row = con.execute(sql.SQL("SELECT count(*) FROM {}").format(_ident(name))).fetchone()
                    n += int(row[0]) if row else 0
                    con.execute(sql.SQL("DROP TABLE {}").format(_ident(name)))
                    self._partitions[table].discard(day)
                n += con.execute(
                    sql.SQL("DELETE FROM {} WHERE ts < %s").format(_ident(table)), [cutoff]
                ).rowcount
                return n

            deleted[table] = self._write(drop)
        return deleted

    # -- findings --------------------------------------------------------------------------
    def upsert_findings(self, findings: Iterable[Finding]) -> None:
        rows = [finding_row(f) for f in findings]
        if not rows:
            return

        def upsert(con: psycopg.Connection[Any]) -> None:
            with con.cursor() as cur:
                cur.executemany(
                    "INSERT INTO findings VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, severity = excluded.severity,"
                    " state = excluded.state,"
                    " subject = excluded.subject, updated_at = excluded.updated_at,"
                    " started_at = excluded.started_at, resolved_at = excluded.resolved_at,"
                    " body = excluded.body",
                    rows,
                )

        self._write(upsert)

    # -- documents -------------------------------------------------------------------------
    def put_docs(self, collection: str, docs: dict[str, dict[str, Any]]) -> None:
        rows = [
            (collection, doc_id, json.dumps(doc, default=str), _doc_state(doc))
            for doc_id, doc in docs.items()
        ]
        if not rows:
            return

        def put(con: psycopg.Connection[Any]) -> None:
            with con.cursor() as cur:
                cur.executemany(
                    "INSERT INTO docs VALUES (%s, %s, %s, %s) ON CONFLICT (collection, id)"
                    " DO UPDATE SET body = excluded.body, state = excluded.state",
                    rows,
                )

        self._write(put)

    def get_doc(self, collection: str, doc_id: str) -> dict[str, Any] | None:
        row = self._read(
            lambda cur: cur.execute(
                "SELECT body FROM docs WHERE collection = %s AND id = %s", [collection, doc_id]
            ).fetchone()
        )
        return json.loads(row[0]) if row else None

    def list_docs(
        self, collection: str, *, states: Collection[str] | None = None
    ) -> dict[str, dict[str, Any]]:
        if states is None:
            stmt = "SELECT id, body FROM docs WHERE collection = %s ORDER BY id"
            params: list[Any] = [collection]
        else:
            stmt = "SELECT id, body FROM docs WHERE collection = %s AND state = ANY(%s) ORDER BY id"
            params = [collection, list(states)]
        rows = self._read(lambda cur: cur.execute(stmt, params).fetchall())
        return {r[0]: json.loads(r[1]) for r in rows}

    def delete_doc(self, collection: str, doc_id: str) -> bool:
        return bool(
            self._write(
                lambda con: (
                    con.execute(
                        "DELETE FROM docs WHERE collection = %s AND id = %s", [collection, doc_id]
                    ).rowcount
                )
            )
        )

    def close(self) -> None:
        with self._write_lock, self._read_lock:
            for con in (self._writer, self._reader):
                if con is not None:
                    with contextlib.suppress(Exception):
                        con.close()
            self._writer = self._reader = None


def _doc_state(doc: dict[str, Any]) -> str | None:
    state = doc.get("state")
    return state if isinstance(state, str) else None


def _py(value: Any) -> Any:
    # bytea comes back as memoryview; the interface returns bytes like DuckDB does.
    return bytes(value) if isinstance(value, memoryview) else value


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
