"""Writing records: binary COPY per table, one transaction per group of batches, and
inference half-row merges ordered between replicas."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from mlvigil.core.records import TABLES, RecordBatch
from mlvigil.core.store.base import StoreError
from mlvigil.core.store.postgres.connection import _first_line, _ident, log
from mlvigil.core.store.postgres.schema import PostgresSchema

_COPY_TYPES = {
    "DOUBLE": "float8",
    "BIGINT": "int8",
    "INTEGER": "int4",
    "VARCHAR": "text",
    "BLOB": "bytea",
    "BOOLEAN": "bool",
}


def _strip_nul(value: Any) -> Any:
    # PostgreSQL text cannot hold U+0000 (DuckDB's can): it becomes U+FFFD, the one change.
    return value.replace("\x00", "\ufffd") if isinstance(value, str) else value


class RecordWrites(PostgresSchema):
    """Appends (group commit, each batch alone after a failure) and merges."""

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
