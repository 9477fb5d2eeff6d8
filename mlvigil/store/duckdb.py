"""The embedded store on DuckDB: one file in the data directory, WAL-backed.

Writes go through one connection (the ingest writer thread); reads use their own cursors.
A commit returns only after DuckDB has synced its write-ahead log, so "acknowledged" means
"survives kill -9". Batches are appended as Arrow tables because DuckDB scans them
zero-copy; NULL and NaN stay distinct (a NaN loss is a finding, a missing loss is not).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from mlvigil.findings import Finding
from mlvigil.records import TABLES, RecordBatch
from mlvigil.store.base import Columns, Store, StoreError

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


def _ident(name: str) -> str:
    if not name.replace("_", "").isalnum():
        raise StoreError(f"bad identifier {name!r}")
    return f'"{name}"'


class DuckDBStore(Store):
    """Records, Findings and documents in ``<data_dir>/mlvigil.duckdb``."""

    def __init__(self, data_dir: str | Path, *, memory_limit: str | None = None) -> None:
        self.path = Path(data_dir) / "mlvigil.duckdb"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        config: dict[str, str | bool | int | float | list[str]] = (
            {"memory_limit": memory_limit} if memory_limit else {}
        )
        self._con = duckdb.connect(str(self.path), config=config)
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._reader = self._con.cursor()
        self._create_schema()

    def _create_schema(self) -> None:
        with self._write_lock:
            for table, cols in TABLES.items():
                body = ", ".join(f"{_ident(c.name)} {c.sql_type}" for c in cols)
                self._con.execute(f"CREATE TABLE IF NOT EXISTS {_ident(table)} ({body})")
            self._con.execute(f"CREATE TABLE IF NOT EXISTS findings ({_FINDING_COLUMNS})")
            self._con.execute(
                "CREATE TABLE IF NOT EXISTS docs (collection VARCHAR, id VARCHAR, body VARCHAR,"
                " PRIMARY KEY (collection, id))"
            )

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

    def append(self, batch: RecordBatch) -> None:
        self.append_many([batch])

    def append_many(self, batches: Sequence[RecordBatch]) -> list[BaseException | None]:
        """Group commit: one transaction for all; on failure, each batch alone so one bad
        batch cannot take the others down with it."""
        with self._write_lock:
            try:
                self._con.begin()
                for batch in batches:
                    self._append_locked(batch)
                self._con.commit()
                return [None] * len(batches)
            except Exception:
                self._con.rollback()
                if len(batches) == 1:
                    raise
            results: list[BaseException | None] = []
            for batch in batches:
                try:
                    self._con.begin()
                    self._append_locked(batch)
                    self._con.commit()
                    results.append(None)
                except Exception as exc:
                    self._con.rollback()
                    results.append(exc)
            return results

    def _where(
        self, since: float | None, until: float | None, where: dict[str, Any] | None
    ) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if since is not None:
            clauses.append("ts >= ?")
            params.append(since)
        if until is not None:
            clauses.append("ts < ?")
            params.append(until)
        for col, value in (where or {}).items():
            if isinstance(value, list | tuple | set):
                values = list(value)
                if not values:
                    clauses.append("FALSE")
                    continue
                clauses.append(f"{_ident(col)} IN ({', '.join('?' * len(values))})")
                params.extend(values)
            elif value is None:
                clauses.append(f"{_ident(col)} IS NULL")
            else:
                clauses.append(f"{_ident(col)} = ?")
                params.append(value)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

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
        select = ", ".join(_ident(c) for c in names)
        cond, params = self._where(since, until, where)
        if last is not None:
            sql = (
                f"SELECT * FROM (SELECT {select} FROM {_ident(table)}{cond}"
                f" ORDER BY {_ident(order_by)} DESC LIMIT {int(last)}) ORDER BY {_ident(order_by)}"
            )
        else:
            sql = f"SELECT {select} FROM {_ident(table)}{cond} ORDER BY {_ident(order_by)}"
        with self._read_lock:
            rows = self._reader.execute(sql, params).fetchall()
        return {name: [r[i] for r in rows] for i, name in enumerate(names)}

    def distinct(
        self,
        table: str,
        columns: Sequence[str],
        *,
        since: float | None = None,
        where: dict[str, Any] | None = None,
    ) -> list[tuple[Any, ...]]:
        cond, params = self._where(since, None, where)
        select = ", ".join(_ident(c) for c in columns)
        with self._read_lock:
            return self._reader.execute(
                f"SELECT DISTINCT {select} FROM {_ident(table)}{cond} ORDER BY {select}", params
            ).fetchall()

    def counts(self) -> dict[str, int]:
        with self._read_lock:
            return {
                t: int(self._reader.execute(f"SELECT count(*) FROM {_ident(t)}").fetchone()[0])  # type: ignore[index]
                for t in TABLES
            }

    def apply_retention(self, cutoffs: dict[str, float]) -> dict[str, int]:
        deleted: dict[str, int] = {}
        with self._write_lock:
            for table, cutoff in cutoffs.items():
                row = self._con.execute(f"DELETE FROM {_ident(table)} WHERE ts < ?", [cutoff]).fetchone()
                deleted[table] = int(row[0]) if row else 0
        return deleted

    # -- findings --------------------------------------------------------------------------
    def upsert_findings(self, findings: Iterable[Finding]) -> None:
        rows = [
            (
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
            for f in findings
        ]
        if not rows:
            return
        with self._write_lock:
            self._con.begin()
            try:
                self._con.executemany(
                    "INSERT OR REPLACE INTO findings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
                )
                self._con.commit()
            except Exception:
                self._con.rollback()
                raise

    def findings(
        self,
        *,
        kind: str | None = None,
        severity: str | None = None,
        state: str | None = None,
        since: float | None = None,
        subject: dict[str, str] | None = None,
        limit: int = 1000,
    ) -> list[Finding]:
        clauses: list[str] = []
        params: list[Any] = []
        for col, value in (("kind", kind), ("severity", severity), ("state", state)):
            if value is not None:
                clauses.append(f"{col} = ?")
                params.append(value)
        if since is not None:
            clauses.append("updated_at >= ?")
            params.append(since)
        for label, value in (subject or {}).items():
            clauses.append("json_extract_string(subject, ?) = ?")
            params.extend([f"$.{label}", value])
        cond = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        with self._read_lock:
            rows = self._reader.execute(
                f"SELECT body FROM findings{cond} ORDER BY updated_at DESC LIMIT {int(limit)}", params
            ).fetchall()
        return [Finding.from_dict(json.loads(r[0])) for r in rows]

    # -- documents -------------------------------------------------------------------------
    def put_docs(self, collection: str, docs: dict[str, dict[str, Any]]) -> None:
        rows = [(collection, doc_id, json.dumps(doc, default=str)) for doc_id, doc in docs.items()]
        if not rows:
            return
        with self._write_lock:
            self._con.begin()
            try:
                self._con.executemany("INSERT OR REPLACE INTO docs VALUES (?, ?, ?)", rows)
                self._con.commit()
            except Exception:
                self._con.rollback()
                raise

    def get_doc(self, collection: str, doc_id: str) -> dict[str, Any] | None:
        with self._read_lock:
            row = self._reader.execute(
                "SELECT body FROM docs WHERE collection = ? AND id = ?", [collection, doc_id]
            ).fetchone()
        return json.loads(row[0]) if row else None

    def list_docs(self, collection: str) -> dict[str, dict[str, Any]]:
        with self._read_lock:
            rows = self._reader.execute(
                "SELECT id, body FROM docs WHERE collection = ? ORDER BY id", [collection]
            ).fetchall()
        return {r[0]: json.loads(r[1]) for r in rows}

    def delete_doc(self, collection: str, doc_id: str) -> bool:
        with self._write_lock:
            row = self._con.execute(
                "DELETE FROM docs WHERE collection = ? AND id = ?", [collection, doc_id]
            ).fetchone()
        return bool(row and row[0])

    def close(self) -> None:
        with self._write_lock, self._read_lock:
            self._reader.close()
            self._con.execute("CHECKPOINT")
            self._con.close()
