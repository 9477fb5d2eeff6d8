"""The store interface: what receivers write to and detectors, alerts and the API read from.

The embedded default is DuckDB (``mlvigil.store.duckdb``). Larger installations implement
this interface on an existing engine; nothing outside ``mlvigil.store`` knows which one runs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from typing import Any

import pyarrow as pa

from mlvigil.findings import Finding
from mlvigil.records import RecordBatch

Columns = dict[str, list[Any]]


class StoreError(Exception):
    """A write or query the store could not carry out."""


class StoreUnavailable(Exception):
    """The store cannot take writes (or answer) now: its disk is full or below the free-space
    reserve, or the database is being reopened. Nothing of the refused write was stored, so
    the caller may retry it after ``retry_after`` seconds (HTTP 503 / gRPC UNAVAILABLE)."""

    def __init__(self, reason: str, retry_after: int = 5) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class Store(ABC):
    """Durable storage of records, Findings and small documents (outbox, monitors, triggers)."""

    # -- records ---------------------------------------------------------------------------
    @abstractmethod
    def append(self, batch: RecordBatch) -> None:
        """Write one batch in one transaction: all of it is durable on return, or none of it."""

    def append_many(self, batches: Sequence[RecordBatch]) -> list[BaseException | None]:
        """Write several batches, each all-or-nothing; the default writes them one by one."""
        results: list[BaseException | None] = []
        for batch in batches:
            try:
                self.append(batch)
                results.append(None)
            except Exception as exc:
                results.append(exc)
        return results

    @abstractmethod
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
        """Rows of ``table`` as columns, oldest first.

        ``since``/``until`` bound ``ts`` (since inclusive, until exclusive); ``where`` is
        equality on columns (a list value means IN); ``last`` keeps only the newest N rows.
        """

    def query_arrow(
        self,
        table: str,
        *,
        columns: Sequence[str],
        since: float | None = None,
        where: dict[str, Any] | None = None,
        last: int | None = None,
    ) -> pa.Table:
        """``query`` as an Arrow table (8 bytes a number instead of a Python object each), for
        readers that hold many rows; the default converts ``query``'s lists."""
        return pa.table(self.query(table, columns=columns, since=since, where=where, last=last))

    @abstractmethod
    def distinct(
        self,
        table: str,
        columns: Sequence[str],
        *,
        since: float | None = None,
        where: dict[str, Any] | None = None,
    ) -> list[tuple[Any, ...]]:
        """Distinct combinations of ``columns`` (the subjects present), optionally since a time."""

    @abstractmethod
    def counts(self) -> dict[str, int]:
        """Rows stored per record table."""

    @abstractmethod
    def apply_retention(self, cutoffs: dict[str, float]) -> dict[str, int]:
        """Delete rows older than each table's cutoff (epoch seconds); returns rows deleted."""

    # -- findings --------------------------------------------------------------------------
    @abstractmethod
    def upsert_findings(self, findings: Iterable[Finding]) -> None:
        """Insert or replace Findings by id, in one transaction."""

    @abstractmethod
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
        """Findings, newest update first, filtered on kind, severity, state, time and subject labels."""

    # -- documents -------------------------------------------------------------------------
    @abstractmethod
    def put_docs(self, collection: str, docs: dict[str, dict[str, Any]]) -> None:
        """Insert or replace JSON documents by id, all in one transaction."""

    @abstractmethod
    def get_doc(self, collection: str, doc_id: str) -> dict[str, Any] | None: ...

    @abstractmethod
    def list_docs(self, collection: str) -> dict[str, dict[str, Any]]: ...

    @abstractmethod
    def delete_doc(self, collection: str, doc_id: str) -> bool: ...

    def put_doc(self, collection: str, doc_id: str, doc: dict[str, Any]) -> None:
        self.put_docs(collection, {doc_id: doc})

    # -- lifecycle -------------------------------------------------------------------------
    def unavailable_reason(self) -> str | None:
        """Why the store cannot take writes now, or None when it can (readiness). May try
        to recover first (reopen a database a failed write left unusable)."""
        return None

    @abstractmethod
    def close(self) -> None:
        """Flush and release; every acknowledged write is durable afterwards."""
