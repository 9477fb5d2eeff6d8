"""Findings and documents: rows written whole, by id, and read back by id or collection."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from typing import Any

import duckdb

from mlvigil.core.findings import Finding
from mlvigil.core.store.dialect import finding_row
from mlvigil.core.store.duckdb.connection import DuckDBConnection


class Documents(DuckDBConnection):
    """``upsert_findings`` and the document collections (alerts, monitors, outbox, ...)."""

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
        # By id alone, the collection picked here: DuckDB looks a filter on ``id`` alone up
        # through the ``docs_id`` index, but scans the table for ``collection = ? AND id = ?``,
        # reading the body of every document (2 s with 200 stored 3 MB drift profiles).
        rows = self._read(
            lambda cur: cur.execute("SELECT collection, body FROM docs WHERE id = ?", [doc_id]).fetchall()
        )
        body = next((b for c, b in rows if c == collection), None)
        return json.loads(body) if body is not None else None

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
