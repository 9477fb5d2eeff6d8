"""The PostgreSQL connections: a writer and a reader, each used by one thread at a time.

Connection loss (a database restart, a failover) makes writes and reads raise
``StoreUnavailable`` (HTTP 503 / gRPC UNAVAILABLE, retryable); the next call reconnects.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from psycopg import sql

from mlvigil.core.store.base import StoreError, StoreUnavailable
from mlvigil.core.store.dialect import Execute

log = logging.getLogger("mlvigil.core.store.postgres")

T = TypeVar("T")


def _ident(name: str) -> sql.Identifier:
    if not name.replace("_", "").isalnum():
        raise StoreError(f"bad identifier {name!r}")
    return sql.Identifier(name)


class PostgresConnection:
    """The writer and reader connections, and the locks that give each one user at a time.
    The other parts of ``PostgresStore`` run their SQL through ``_write`` (one transaction)
    and ``_read``."""

    def __init__(self, dsn: str, *, retry_after: int = 5, connect_timeout: float = 5.0) -> None:
        self.dsn = dsn
        self.retry_after = retry_after
        self.connect_timeout = connect_timeout
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._writer: psycopg.Connection[Any] | None = None
        self._reader: psycopg.Connection[Any] | None = None
        self._down: str | None = None

    def connect(self) -> psycopg.Connection[Any]:
        """A new autocommit connection to the store's database (also for coordination)."""
        return psycopg.connect(self.dsn, autocommit=True, connect_timeout=max(1, int(self.connect_timeout)))

    def _connect_locked(self, which: str) -> psycopg.Connection[Any]:
        con = self._writer if which == "writer" else self._reader
        if con is not None and not con.closed and not con.broken:
            return con
        try:
            con = self.connect()
        except psycopg.Error as exc:
            self._down = f"cannot connect to PostgreSQL: {_first_line(exc)}"
            raise StoreUnavailable(self._down, self.retry_after) from exc
        self._down = None
        if which == "writer":
            self._writer = con
        else:
            self._reader = con
        return con

    def _unavailable(self, exc: BaseException) -> StoreUnavailable | None:
        if isinstance(exc, StoreUnavailable):
            return exc
        if isinstance(exc, psycopg.OperationalError | psycopg.errors.AdminShutdown | psycopg.InterfaceError):
            self._down = f"PostgreSQL connection failed: {_first_line(exc)}"
            return StoreUnavailable(self._down, self.retry_after)
        if isinstance(exc, psycopg.errors.DiskFull | psycopg.errors.InsufficientResources):
            return StoreUnavailable(f"PostgreSQL cannot write: {_first_line(exc)}", self.retry_after)
        return None

    def _write(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        """Run ``work`` in one transaction on the writer connection."""
        with self._write_lock:
            con = self._connect_locked("writer")
            try:
                with con.transaction():
                    return work(con)
            except Exception as exc:
                err = exc
        raise (self._unavailable(err) or err) from err

    def _read(self, work: Callable[[psycopg.Cursor[Any]], T]) -> T:
        with self._read_lock:
            con = self._connect_locked("reader")
            try:
                with con.cursor() as cur:
                    return work(cur)
            except Exception as exc:
                err = exc
        raise (self._unavailable(err) or err) from err

    def _read_rows(self, work: Callable[[Execute], T]) -> T:
        return self._read(lambda cur: work(lambda sql, params: cur.execute(sql, params).fetchall()))

    def unavailable_reason(self) -> str | None:
        if not self._read_lock.acquire(blocking=False):
            return self._down
        try:
            con = self._connect_locked("reader")
            con.execute("SELECT 1")
            return None
        except Exception as exc:
            unavailable = self._unavailable(exc)
            return unavailable.reason if unavailable else _first_line(exc)
        finally:
            self._read_lock.release()

    def close(self) -> None:
        with self._write_lock, self._read_lock:
            for con in (self._writer, self._reader):
                if con is not None:
                    with contextlib.suppress(Exception):
                        con.close()
            self._writer = self._reader = None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
