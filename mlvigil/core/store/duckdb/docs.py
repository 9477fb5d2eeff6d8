"""Findings and documents: rows written whole, by id, and read back by id or collection."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from typing import Any

import duckdb

from mlvigil.core.findings import Finding
from mlvigil.core.store.base import StoreError
from mlvigil.core.store.dialect import finding_row
from mlvigil.core.store.duckdb.connection import FILE_BODY_MIN, DuckDBConnection


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
    # A document of ``FILE_BODY_MIN`` bytes or more (a drift monitor's stored reference
    # profile: ~3 MB) is kept in a file of ``documents/`` beside the database, its row holding
    # the file's name (``body_file``) instead of the body. DuckDB uses no index for these
    # lookups: ``WHERE id = ?`` scans the table and reads every row's body, so 200 inline
    # profiles (670 MB) made each lookup read them all (0.2-1.1 s, and 2-3 s for a collection
    # of small documents, under the read lock that window reads wait for).

    def put_docs(self, collection: str, docs: dict[str, dict[str, Any]]) -> None:
        rows: list[tuple[str, str, str | None, str | None]] = []
        written: list[str] = []
        replaced: list[str] = []

        def write(con: duckdb.DuckDBPyConnection) -> None:
            for doc_id, doc in docs.items():
                text = json.dumps(doc, default=str)
                if len(text) >= FILE_BODY_MIN:
                    written.append(self._write_body_file(text))
                    rows.append((collection, doc_id, None, written[-1]))
                else:
                    rows.append((collection, doc_id, text, None))
            replaced.extend(
                r[0]
                for r in con.execute(
                    "SELECT body_file FROM docs WHERE collection = ? AND list_contains(?, id)"
                    " AND body_file IS NOT NULL",
                    [collection, list(docs)],
                ).fetchall()
            )
            con.executemany(
                "INSERT OR REPLACE INTO docs (collection, id, body, body_file) VALUES (?, ?, ?, ?)", rows
            )

        if not docs:
            return
        try:
            self._write(write)
        except BaseException:
            self._remove_body_files(written)
            raise
        self._remove_body_files(replaced)

    def get_doc(self, collection: str, doc_id: str) -> dict[str, Any] | None:
        # By id alone, the collection picked here: on ``collection = ? AND id = ?`` DuckDB
        # reads more than on ``id = ?`` (both scan; neither uses an index).
        rows = self._docs("SELECT collection, body, body_file FROM docs WHERE id = ?", [doc_id])
        return next((doc for c, doc in rows if c == collection), None)

    def list_docs(
        self, collection: str, *, states: Collection[str] | None = None
    ) -> dict[str, dict[str, Any]]:
        rows = self._docs(
            "SELECT id, body, body_file FROM docs WHERE collection = ? ORDER BY id", [collection]
        )
        docs = dict(rows)
        if states is None:
            return docs
        return {i: d for i, d in docs.items() if d.get("state") in states}

    def delete_doc(self, collection: str, doc_id: str) -> bool:
        found: list[tuple[str | None]] = []

        def delete(con: duckdb.DuckDBPyConnection) -> None:
            found[:] = con.execute(
                "DELETE FROM docs WHERE collection = ? AND id = ? RETURNING body_file", [collection, doc_id]
            ).fetchall()

        self._write(delete)
        self._remove_body_files([name for (name,) in found if name])
        return bool(found)

    def _docs(self, sql: str, params: list[Any]) -> list[tuple[str, dict[str, Any]]]:
        """(key, document) of each row ``sql`` selects as (key, body, body_file). A file read
        after its row was replaced (and the file removed) is read again from the new row."""
        for _ in range(3):
            rows = self._read(lambda cur: cur.execute(sql, params).fetchall())
            try:
                return [(key, self._doc(body, name)) for key, body, name in rows]
            except FileNotFoundError:
                continue
        missing = [name for _, _, name in rows if name and not (self.documents_dir / name).exists()]
        raise StoreError(
            f"document files {missing} are missing from {self.documents_dir}: restore the data"
            f" dir {self.path.parent} whole (the database and its documents/ directory)"
        )

    def _doc(self, body: str | None, body_file: str | None) -> dict[str, Any]:
        if body_file is None:
            return json.loads(body or "null")
        return json.loads((self.documents_dir / body_file).read_bytes())
