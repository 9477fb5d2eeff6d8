"""Retention: whole day partitions dropped, the rest deleted row by row."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from mlvigil.core.records import TABLES
from mlvigil.core.store.base import StoreError
from mlvigil.core.store.postgres.connection import _ident
from mlvigil.core.store.postgres.schema import DAY, PostgresSchema


class Retention(PostgresSchema):
    """``apply_retention`` (see there)."""

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
