"""The schema, and the day partitions of the record tables (created on demand)."""

from __future__ import annotations

import calendar
import contextlib
import time
from collections.abc import Callable, Iterable
from typing import Any

import psycopg
from psycopg import sql

from mlvigil.core.records import TABLES
from mlvigil.core.store.postgres.connection import PostgresConnection, _ident

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
# Secondary indexes the detectors' and the API's queries use (besides ts on every table).
_INDEXES: dict[str, tuple[tuple[str, ...], ...]] = {
    "inferences": (("request_id",), ("service", "model", "ts")),
    "labels": (("request_id",),),
    "training_steps": (("run_id", "ts"),),
    "metric_points": (("name", "ts"), ("hw_id", "ts")),
    "llm_calls": (("service", "ts"),),
}


def partition_name(table: str, day: int) -> str:
    return f"{table}_d{time.strftime('%Y%m%d', time.gmtime(day * DAY))}"


class PostgresSchema(PostgresConnection):
    """Creates the tables at open; ``_ensure_partitions`` before a write that needs a new day."""

    def __init__(
        self,
        dsn: str,
        *,
        retry_after: int = 5,
        connect_timeout: float = 5.0,
        past_days: int = PAST_DAYS,
        now: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(dsn, retry_after=retry_after, connect_timeout=connect_timeout)
        self.past_days = past_days
        self._now = now
        # Day partitions known to exist, per table (others are checked, then created).
        self._partitions: dict[str, set[int]] = {t: set() for t in TABLES}
        with self._write_lock:
            con = self._connect_locked("writer")
            self._create_schema(con)

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
