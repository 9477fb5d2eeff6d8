"""The shared store on PostgreSQL: records, Findings, documents and leases for N replicas.

Selected by ``storage.backend: postgres`` (or ``MLVIGIL_STORE_DSN``). Every replica of
``mlvigil serve`` opens one of these on the same database; the database is the only shared
state (no cluster protocol of our own).

- Record tables are range-partitioned by ``ts`` (epoch seconds), one partition per UTC day,
  created on demand by the first write that needs it. Rows far outside today (a clock years
  off) go to a ``_default`` partition instead of creating thousands of partitions; a day
  partition created later takes its rows out of the default first. Retention drops whole
  day partitions older than the cutoff and deletes the rest row by row (only the partition
  that straddles the cutoff, and the default, are scanned).
- Batches are loaded with binary COPY (psycopg 3), one transaction per group of batches;
  when a group fails, each batch is retried alone so one bad batch cannot cost the others.
- Findings and documents are rows keyed by id; documents keep their JSON text as written
  (NaN and all), plus the document's ``state`` field in a column for ``list_docs(states=)``.
- Leases (``mlvigil_leases``) and outbox claims are in ``mlvigil.core.coordination``; they use
  their own connection so a long COPY never delays a heartbeat.

Connection loss (a database restart, a failover) makes writes and reads raise
``StoreUnavailable`` (HTTP 503 / gRPC UNAVAILABLE, retryable); the next call reconnects.

``PostgresStore`` is made of parts with one job each: ``connection`` (the writer and reader
connections), ``schema`` (tables and day partitions), ``records`` (COPY and merges),
``queries``, ``retention`` and ``docs`` (findings and documents).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlvigil.core.store.dialect import POSTGRES, SqlStore
from mlvigil.core.store.postgres.docs import Documents
from mlvigil.core.store.postgres.queries import RecordQueries
from mlvigil.core.store.postgres.records import RecordWrites
from mlvigil.core.store.postgres.retention import Retention
from mlvigil.core.store.postgres.schema import DAY, FUTURE_DAYS, PAST_DAYS, partition_name

if TYPE_CHECKING:
    from mlvigil.core.coordination import Coordinator

__all__ = ["DAY", "FUTURE_DAYS", "PAST_DAYS", "PostgresStore", "partition_name"]


class PostgresStore(RecordWrites, RecordQueries, Retention, Documents, SqlStore):
    """Records, Findings and documents in one PostgreSQL database (``dsn``)."""

    #: This replica's share of the work (set by the service; see mlvigil.core.coordination).
    coordinator: Coordinator | None = None

    dialect = POSTGRES
