"""Reading records: rows by time range and labels, and counts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from mlvigil.core.records import TABLES
from mlvigil.core.store.base import Columns, StoreError
from mlvigil.core.store.dialect import POSTGRES
from mlvigil.core.store.postgres.connection import PostgresConnection, _ident


class RecordQueries(PostgresConnection):
    """The record reads of the ``Store`` interface not shared in ``SqlStore``."""

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


def _py(value: Any) -> Any:
    # bytea comes back as memoryview; the interface returns bytes like DuckDB does.
    return bytes(value) if isinstance(value, memoryview) else value
