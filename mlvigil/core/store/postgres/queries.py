"""Reading records: rows by time range and labels, and counts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from mlvigil.core.records import TABLES
from mlvigil.core.store.base import Columns
from mlvigil.core.store.postgres.connection import PostgresConnection, _ident


class RecordQueries(PostgresConnection):
    """The record reads of the ``Store`` interface not shared in ``SqlStore``, and how rows
    read back become the interface's Python values."""

    def _columns(self, names: Sequence[str], rows: Sequence[Sequence[Any]]) -> Columns:
        # bytea comes back as memoryview; the interface returns bytes like DuckDB does.
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
    return bytes(value) if isinstance(value, memoryview) else value
