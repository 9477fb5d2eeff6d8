"""Findings and documents: rows keyed by id; documents keep their JSON text as written."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from typing import Any

import psycopg

from mlvigil.core.findings import Finding
from mlvigil.core.store.dialect import finding_row
from mlvigil.core.store.postgres.connection import PostgresConnection


class Documents(PostgresConnection):
    """``upsert_findings`` and the document collections."""

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


def _doc_state(doc: dict[str, Any]) -> str | None:
    state = doc.get("state")
    return state if isinstance(state, str) else None
