"""The embedded store on DuckDB: one file in the data directory, WAL-backed.

``DuckDBStore`` is made of parts with one job each:

- ``connection``: open and reopen, free space and readiness, checkpoints, one transaction at a
  time (what "acknowledged" and "a full disk costs availability, never data" mean here);
- ``records``: appends, inference merges and loading the ingest write-ahead log;
- ``queries``: record reads (``query``, ``feature_window``, ``query_arrow``, ``counts``);
- ``retention``: expired rows deleted in batches that never hold ingest for long;
- ``docs``: findings and document collections.

The reads of findings, grids and distinct values are ``SqlStore``'s (``dialect.py``), shared
with PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path

from mlvigil.core.store.dialect import DUCKDB, SqlStore
from mlvigil.core.store.duckdb.docs import Documents
from mlvigil.core.store.duckdb.queries import RecordQueries
from mlvigil.core.store.duckdb.records import RecordWrites
from mlvigil.core.store.duckdb.retention import Retention

__all__ = ["DuckDBStore"]


class DuckDBStore(RecordWrites, RecordQueries, Retention, Documents, SqlStore):
    """Records, Findings and documents in ``<data_dir>/mlvigil.duckdb``."""

    dialect = DUCKDB

    def __init__(
        self,
        data_dir: str | Path,
        *,
        memory_limit: str | None = None,
        min_free_bytes: int = 0,
        checkpoint_bytes: int = 16 * 1024 * 1024,
        reopen_interval: float = 1.0,
        retry_after: int = 5,
        retention_batch_rows: int = 20_000,
        retention_checkpoint_bytes: int = 2 * 1024 * 1024,
    ) -> None:
        self.retention_batch_rows = max(1, int(retention_batch_rows))
        self.retention_checkpoint_bytes = retention_checkpoint_bytes
        self.retention_batches = 0
        super().__init__(
            data_dir,
            memory_limit=memory_limit,
            min_free_bytes=min_free_bytes,
            checkpoint_bytes=checkpoint_bytes,
            reopen_interval=reopen_interval,
            retry_after=retry_after,
        )
