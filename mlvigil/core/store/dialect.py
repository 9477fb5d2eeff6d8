"""The read queries both store backends run, written once; a ``Dialect`` holds what differs
between DuckDB and PostgreSQL (the parameter mark, reading a JSON label, float casts and the
finite test), and ``SqlStore`` is the ``Store`` reads both backends share.

Identifiers are checked (letters, digits, ``_``) and double-quoted, which both databases read
the same way; values always travel as parameters.

>>> sql, params = DUCKDB.select("inferences", ["ts"], 10.0, None, {"model": ["a", "b"]}, None, "ts")
>>> sql
'SELECT "ts" FROM "inferences" WHERE ts >= ? AND "model" IN (?, ?) ORDER BY "ts"'
>>> params
[10.0, 'a', 'b']
>>> POSTGRES.where(None, 20.0, {"rank": None})
(' WHERE ts < %s AND "rank" IS NULL', [20.0])
"""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from mlvigil.core.findings import Finding
from mlvigil.core.records import TABLES
from mlvigil.core.store.base import Columns, Grid, Store, StoreError

T = TypeVar("T")

#: Runs one query with its parameters and returns its rows.
Execute = Callable[[str, list[Any]], Sequence[Sequence[Any]]]


def ident(name: str) -> str:
    """``name`` double-quoted, after checking it is a plain identifier."""
    if not name.replace("_", "").isalnum():
        raise StoreError(f"bad identifier {name!r}")
    return f'"{name}"'


@dataclass(frozen=True)
class Dialect:
    name: str
    #: How a query parameter is written: ``?`` or ``%s``.
    mark: str
    #: The test of one subject label of a finding: (SQL, its parameters).
    label_clause: Callable[[str, str], tuple[str, list[Any]]]
    #: A column read as a float.
    as_float: Callable[[str], str]
    #: True where a column (read as a float) is neither NaN nor infinite.
    is_finite: Callable[[str], str]

    def where(
        self, since: float | None, until: float | None, where: dict[str, Any] | None
    ) -> tuple[str, list[Any]]:
        """`` WHERE ...`` (or nothing) for a time range on ``ts`` and column equalities (a
        list/tuple/set is IN, None is IS NULL)."""
        clauses: list[str] = []
        params: list[Any] = []
        if since is not None:
            clauses.append(f"ts >= {self.mark}")
            params.append(since)
        if until is not None:
            clauses.append(f"ts < {self.mark}")
            params.append(until)
        for col, value in (where or {}).items():
            if isinstance(value, list | tuple | set):
                values = list(value)
                if not values:
                    clauses.append("FALSE")
                    continue
                clauses.append(f"{ident(col)} IN ({', '.join([self.mark] * len(values))})")
                params.extend(values)
            elif value is None:
                clauses.append(f"{ident(col)} IS NULL")
            else:
                clauses.append(f"{ident(col)} = {self.mark}")
                params.append(value)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def select(
        self,
        table: str,
        names: Sequence[str],
        since: float | None,
        until: float | None,
        where: dict[str, Any] | None,
        last: int | None,
        order_by: str,
    ) -> tuple[str, list[Any]]:
        """``Store.query``: ``names`` of ``table`` in ``order_by`` order, the newest ``last``."""
        if table not in TABLES:
            raise StoreError(f"unknown record table {table!r}")
        select = ", ".join(ident(c) for c in names)
        cond, params = self.where(since, until, where)
        order = ident(order_by)
        if last is not None:
            sql = (
                f"SELECT * FROM (SELECT {select} FROM {ident(table)}{cond}"
                f" ORDER BY {order} DESC LIMIT {int(last)}) AS newest ORDER BY {order}"
            )
        else:
            sql = f"SELECT {select} FROM {ident(table)}{cond} ORDER BY {order}"
        return sql, params

    def distinct(
        self, table: str, columns: Sequence[str], since: float | None, where: dict[str, Any] | None
    ) -> tuple[str, list[Any]]:
        """``Store.distinct``: the distinct value tuples of ``columns``, sorted."""
        if table not in TABLES:
            raise StoreError(f"unknown record table {table!r}")
        cond, params = self.where(since, None, where)
        select = ", ".join(ident(c) for c in columns)
        return f"SELECT DISTINCT {select} FROM {ident(table)}{cond} ORDER BY {select}", params

    def grid(
        self,
        execute: Execute,
        table: str,
        *,
        x: str,
        group: str,
        values: Sequence[str],
        bins: int,
        where: dict[str, Any] | None,
        since: float | None,
        integer_x: bool,
    ) -> Grid:
        """``Store.grid``: two queries through ``execute``, x's range, then the binned means."""
        if table not in TABLES:
            raise StoreError(f"unknown record table {table!r}")
        bins = max(int(bins), 1)
        cond, params = self.where(since, None, where)
        xs = ident(x)
        bounds = execute(f"SELECT min({xs}), max({xs}) FROM {ident(table)}{cond}", params)
        lo, hi = bounds[0] if bounds else (None, None)
        if lo is None or hi is None:
            return Grid(0.0, 0.0, bins)
        grid = Grid.sized(float(lo), float(hi), bins, integer_x)
        means = "".join(
            f", avg(CASE WHEN {self.is_finite(ident(v))} THEN {self.as_float(ident(v))} END)" for v in values
        )
        m = self.mark
        bin_index = f"least(CAST(floor(({self.as_float(xs)} - {m}) / {m}) AS BIGINT), {m})"
        sql = (
            f"SELECT {ident(group)}, {bin_index} AS b,"
            f" count(*){means} FROM {ident(table)}{cond}"
            f"{' AND ' if cond else ' WHERE '}{xs} IS NOT NULL GROUP BY 1, 2"
        )
        rows = execute(sql, [grid.lo, grid.width, grid.bins - 1, *params])
        grid.cells = {
            (r[0], int(r[1])): (int(r[2]), [None if v is None else float(v) for v in r[3:]]) for r in rows
        }
        return grid

    def findings(
        self,
        *,
        kind: str | None,
        severity: str | None,
        state: str | None,
        since: float | None,
        subject: dict[str, str] | None,
        limit: int,
        offset: int,
    ) -> tuple[str, list[Any]]:
        """``Store.findings`` over the ``findings(id, ..., subject, body)`` table."""
        clauses: list[str] = []
        params: list[Any] = []
        for col, value in (("kind", kind), ("severity", severity), ("state", state)):
            if value is not None:
                clauses.append(f"{col} = {self.mark}")
                params.append(value)
        if since is not None:
            clauses.append(f"updated_at >= {self.mark}")
            params.append(since)
        for label, value in (subject or {}).items():
            # Quoted, so a dotted name such as k8s.namespace is one key, not a nested path.
            if '"' in label or "\\" in label:
                raise StoreError(f"label name {label!r} may not contain a quote or backslash")
            clause, more = self.label_clause(label, value)
            clauses.append(clause)
            params.extend(more)
        cond = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        sql = (
            f"SELECT body FROM findings{cond} ORDER BY updated_at DESC, id"
            f" LIMIT {int(limit)} OFFSET {max(int(offset), 0)}"
        )
        return sql, params


DUCKDB = Dialect(
    "duckdb",
    "?",
    label_clause=lambda label, value: ("json_extract_string(subject, ?) = ?", [f'$."{label}"', value]),
    as_float=lambda col: col,
    is_finite=lambda col: f"isfinite({col})",
)
POSTGRES = Dialect(
    "postgres",
    "%s",
    label_clause=lambda label, value: ("subject ->> %s = %s", [label, value]),
    as_float=lambda col: f"{col}::float8",
    is_finite=lambda col: f"{col}::float8 NOT IN ('NaN'::float8, 'Infinity'::float8, '-Infinity'::float8)",
)


def finding_row(f: Finding) -> tuple[Any, ...]:
    """``f`` as a row of the ``findings`` table, in its column order (both backends)."""
    return (
        f.id,
        f.kind,
        str(f.severity),
        str(f.state),
        json.dumps(f.subject, sort_keys=True),
        f.updated_at,
        f.started_at,
        f.resolved_at,
        json.dumps(f.to_dict(), default=str),
    )


class SqlStore(Store):
    """The reads a SQL backend answers the same way: the query text from ``dialect``, run
    through the backend's ``_read_rows`` (its read connection and its error handling)."""

    dialect: ClassVar[Dialect]

    @abstractmethod
    def _read_rows(self, work: Callable[[Execute], T]) -> T:
        """``work`` called with a function that runs one query on the read connection and
        returns its rows."""

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
        sql, params = self.dialect.select(table, names, since, until, where, last, order_by)
        rows = self._read_rows(lambda run: run(sql, params))
        return self._columns(names, rows)

    def _columns(self, names: Sequence[str], rows: Sequence[Sequence[Any]]) -> Columns:
        """Rows as columns; a backend whose driver returns other Python types converts here."""
        return {name: [r[i] for r in rows] for i, name in enumerate(names)}

    def distinct(
        self,
        table: str,
        columns: Sequence[str],
        *,
        since: float | None = None,
        where: dict[str, Any] | None = None,
    ) -> list[tuple[Any, ...]]:
        sql, params = self.dialect.distinct(table, columns, since, where)
        return self._read_rows(lambda run: [tuple(r) for r in run(sql, params)])

    def findings(
        self,
        *,
        kind: str | None = None,
        severity: str | None = None,
        state: str | None = None,
        since: float | None = None,
        subject: dict[str, str] | None = None,
        limit: int = 1000,
        offset: int = 0,
    ) -> list[Finding]:
        sql, params = self.dialect.findings(
            kind=kind,
            severity=severity,
            state=state,
            since=since,
            subject=subject,
            limit=limit,
            offset=offset,
        )
        rows = self._read_rows(lambda run: run(sql, params))
        return [Finding.from_dict(json.loads(r[0])) for r in rows]

    def finding(self, finding_id: str) -> Finding | None:
        sql = f"SELECT body FROM findings WHERE id = {self.dialect.mark}"
        rows = self._read_rows(lambda run: run(sql, [finding_id]))
        return Finding.from_dict(json.loads(rows[0][0])) if rows else None

    def grid(
        self,
        table: str,
        *,
        x: str,
        group: str,
        values: Sequence[str],
        bins: int,
        where: dict[str, Any] | None = None,
        since: float | None = None,
        integer_x: bool = False,
    ) -> Grid:
        return self._read_rows(
            lambda run: self.dialect.grid(
                run,
                table,
                x=x,
                group=group,
                values=values,
                bins=bins,
                where=where,
                since=since,
                integer_x=integer_x,
            )
        )
