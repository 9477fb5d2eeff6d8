"""The DuckDB connection: open and reopen, free space, readiness, and one transaction at a time.

Writes go through one connection (the ingest writer thread); reads use their own cursor;
each write-ahead log loader pass writes on a channel of its own (``_channel_write``): a
cursor and lock per pass, so passes loading different tables commit concurrently.
A commit returns only after DuckDB has synced its write-ahead log, so "acknowledged" means
"survives kill -9".

A full disk must cost availability, never data. DuckDB's automatic checkpoint runs inside
a commit and, when it cannot write, leaves a commit that is durable but reported as failed
and a database that refuses everything until reopened. So the store checkpoints itself,
after the commit has returned, and treats a failed checkpoint as "reopen later" (the WAL
holds the data). Writes are refused with ``StoreUnavailable`` (retryable) when the data
dir's free space is below ``min_free_bytes``, when DuckDB cannot write, and while the
database waits to be reopened; the reopen is retried at most every ``reopen_interval``
seconds by the next write, read or ``unavailable_reason`` call.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import duckdb

from mlvigil.core.records import TABLES, arrow_schema
from mlvigil.core.store.base import StoreUnavailable
from mlvigil.core.store.dialect import Execute
from mlvigil.core.store.dialect import ident as _ident
from mlvigil.core.store.duckdb.span_files import SpanFiles

log = logging.getLogger("mlvigil.core.store.duckdb")

# DuckDB's own checkpoint runs inside COMMIT (see the module docstring); this turns it off.
_NO_AUTO_CHECKPOINT = "1000GB"

T = TypeVar("T")

# The readiness probe's write after a failed one: room for a typical export, not just a byte
# that fits in the WAL's last page.
_PROBE_BYTES = 256 * 1024

_FINDING_COLUMNS = (
    "id VARCHAR PRIMARY KEY, kind VARCHAR, severity VARCHAR, state VARCHAR, subject VARCHAR,"
    " updated_at DOUBLE, started_at DOUBLE, resolved_at DOUBLE, body VARCHAR"
)


#: A document whose JSON is this long or longer is kept in a file, not in its row (see
#: ``Documents``).
FILE_BODY_MIN = 64 * 1024

#: The raw spans' columns in their files (span_files.py): every column of the table they replace
SPAN_FILE_SCHEMA = arrow_schema("spans")


class DuckDBConnection:
    """``<data_dir>/mlvigil.duckdb``, its write connection and read cursor, and the locks
    that give each one user at a time. The other parts of ``DuckDBStore`` run their SQL
    through ``_write`` (one transaction) and ``_read``."""

    def __init__(
        self,
        data_dir: str | Path,
        *,
        memory_limit: str | None = None,
        min_free_bytes: int = 0,
        checkpoint_bytes: int = 16 * 1024 * 1024,
        reopen_interval: float = 1.0,
        retry_after: int = 5,
    ) -> None:
        self.path = Path(data_dir) / "mlvigil.duckdb"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        #: Documents of ``FILE_BODY_MIN`` bytes or more, a file each (``Documents``).
        self.documents_dir = self.path.parent / "documents"
        self.documents_dir.mkdir(exist_ok=True)
        self._config: dict[str, str | bool | int | float | list[str]] = {
            "checkpoint_threshold": _NO_AUTO_CHECKPOINT
        }
        if memory_limit:
            self._config["memory_limit"] = memory_limit
        #: Writes are refused while the data dir has less free space than this.
        self.min_free_bytes = min_free_bytes
        #: The WAL is checkpointed into the database file once it is larger than this.
        self.checkpoint_bytes = checkpoint_bytes
        self.reopen_interval = reopen_interval
        self.retry_after = retry_after
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        # Why the database must be reopened before use (None: it is usable).
        self._broken: str | None = None
        self._next_reopen = 0.0
        # Why the last write failed for a disk reason (None once a write succeeds again).
        self._write_failed: str | None = None
        self._next_probe = 0.0
        #: Bumped by each reopen: a channel's cursor of an older connection is made again.
        self._generation = 0
        #: channel name -> (its lock, (generation, cursor) once made)
        self._channels: dict[str, tuple[threading.Lock, list[tuple[int, duckdb.DuckDBPyConnection]]]] = {}
        self._channels_lock = threading.Lock()
        # ``threads`` is a database-wide setting: loads run single-threaded while any runs.
        self._single_threaded = 0
        self._threads_lock = threading.Lock()
        #: The raw spans (the view ``spans``), files removed only while no read runs.
        self.span_files = SpanFiles(self.path.parent / "spans", SPAN_FILE_SCHEMA, remove_lock=self._read_lock)
        # The files of loads that never committed are looked for once, at the first open.
        self._span_files_checked = False
        self._con = duckdb.connect(str(self.path), config=self._config)
        self._reader = self._con.cursor()
        row = self._con.execute("SELECT current_setting('threads')").fetchone()
        self._threads = int(row[0]) if row else 1
        with self._write_lock:
            self._create_schema_locked()

    def _create_schema_locked(self) -> None:
        """The tables (if new), then one checkpoint: the first checkpoint after opening costs
        ~4x a later one (80-100 ms on a 5M-row store), paid here rather than by an ingest
        commit waiting behind it."""
        self._create_tables_locked()
        if self._free_space_reason() is not None:
            return  # no write of our own into the reserve (writes are refused meanwhile)
        try:
            self._con.execute(
                "INSERT OR REPLACE INTO docs (collection, id, body) VALUES ('_store', 'opened', ?)",
                [json.dumps({"at": time.time()})],
            )
        except Exception as exc:
            self._unavailable(exc)  # a database DuckDB gave up on is reopened before use
            log.debug("store: no checkpoint at open: %s", exc)
            return
        self._checkpoint_locked(0)

    def _create_tables_locked(self) -> None:
        for table, cols in TABLES.items():
            if table == "spans":
                continue  # a view over files (``_spans_view_locked``)
            body = ", ".join(f"{_ident(c.name)} {c.sql_type}" for c in cols)
            self._con.execute(f"CREATE TABLE IF NOT EXISTS {_ident(table)} ({body})")
        self._con.execute(f"CREATE TABLE IF NOT EXISTS findings ({_FINDING_COLUMNS})")
        # How far each write-ahead log has been loaded (collector/wal.py).
        self._con.execute(
            "CREATE TABLE IF NOT EXISTS log_positions"
            " (log VARCHAR PRIMARY KEY, segment BIGINT, byte_offset BIGINT)"
        )
        self._spans_view_locked()
        self._con.execute(
            "CREATE TABLE IF NOT EXISTS docs (collection VARCHAR, id VARCHAR, body VARCHAR,"
            " PRIMARY KEY (collection, id))"
        )
        # DuckDB does not look the two-column key up through its index: get_doc finds a
        # document by id through this one (Documents.get_doc). Existing stores get it at their
        # next open.
        self._con.execute("CREATE INDEX IF NOT EXISTS docs_id ON docs (id)")
        self._con.execute("ALTER TABLE docs ADD COLUMN IF NOT EXISTS body_file VARCHAR")
        self._documents_to_files_locked()

    def _spans_view_locked(self) -> None:
        """The view ``spans`` over the raw span files (made at every open: it names the data
        dir, which may have moved). A store made before them has a ``spans`` table: its rows
        become one file first (once). Then the files of loads that never committed go."""
        kind = self._con.execute(
            "SELECT table_type FROM information_schema.tables WHERE table_name = 'spans'"
        ).fetchone()
        if kind is not None and kind[0] == "BASE TABLE":
            self._spans_table_to_file_locked()
        select = ", ".join(_ident(c.name) for c in TABLES["spans"])
        glob = self.span_files.glob().replace("'", "''")
        source = f"read_parquet('{glob}')"
        found = self._con.execute("SELECT sql FROM duckdb_views() WHERE view_name = 'spans'").fetchone()
        columns = [
            r[0]
            for r in self._con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'spans'"
                " ORDER BY ordinal_position"
            ).fetchall()
        ]
        # Written only when it changed (a moved data dir, new columns): an open on a full
        # disk must not need a write.
        if found is None or source not in found[0] or columns != [c.name for c in TABLES["spans"]]:
            self._con.execute(f"CREATE OR REPLACE VIEW spans AS SELECT {select} FROM {source}")
        if self._span_files_checked:
            return  # a reopen: loads may be writing their files now
        self._span_files_checked = True
        positions = {
            str(r[0]): (int(r[1]), int(r[2]))
            for r in self._con.execute("SELECT log, segment, byte_offset FROM log_positions").fetchall()
        }
        if dropped := self.span_files.discard_uncommitted(positions):
            log.info("store: %d raw span files of uncommitted loads removed (the log replays them)", dropped)

    def _spans_table_to_file_locked(self) -> None:
        """An older store's ``spans`` table becomes the migrated span file, then is dropped. A
        crash after the file's rename and before the drop leaves both: the file is kept and
        the table dropped at the next open (never copied twice)."""
        if not self.span_files.has_migrated():
            found = self._con.execute("SELECT count(*), min(ts), max(ts) FROM spans").fetchone()
            rows, lo, hi = found or (0, None, None)
            if rows:
                cols = ", ".join(_ident(f.name) for f in SPAN_FILE_SCHEMA)
                tmp = self.span_files.directory / "migrated.parquet.tmp"
                path = str(tmp).replace("'", "''")
                self._con.execute(
                    f"COPY (SELECT {cols} FROM spans ORDER BY ts) TO '{path}'"
                    " (FORMAT parquet, COMPRESSION zstd)"
                )
                with open(tmp, "rb+") as f:
                    os.fsync(f.fileno())
                self.span_files.adopt(tmp, int(rows), float(lo or 0.0), float(hi or 0.0))
                log.info("store: %d raw spans moved from their table to %s", rows, self.span_files.directory)
        self._con.execute("DROP TABLE spans")

    def _documents_to_files_locked(self) -> None:
        """Moves the large documents a store made before ``body_file`` keeps inline into
        files (once: later writes put them there), then removes the files no row names (left
        by a write or delete that a crash interrupted)."""
        large = self._con.execute(
            "SELECT collection, id, body FROM docs WHERE body_file IS NULL AND strlen(body) >= ?",
            [FILE_BODY_MIN],
        ).fetchall()
        if large:
            moved: list[tuple[str, str, str]] = []
            try:
                for collection, doc_id, body in large:
                    moved.append((self._write_body_file(body), collection, doc_id))
                # One UPDATE from a table of the moves: each UPDATE ... WHERE id = ? would scan
                # every body again (~2 s each with 200 profiles inline).
                self._con.execute("BEGIN")
                self._con.execute(
                    "CREATE TEMP TABLE _moved (body_file VARCHAR, collection VARCHAR, id VARCHAR)"
                )
                self._con.executemany("INSERT INTO _moved VALUES (?, ?, ?)", moved)
                self._con.execute(
                    "UPDATE docs SET body = NULL, body_file = m.body_file FROM _moved m"
                    " WHERE docs.collection = m.collection AND docs.id = m.id"
                )
                self._con.execute("DROP TABLE _moved")
                self._con.execute("COMMIT")
                log.info("store: %d large documents moved to %s", len(moved), self.documents_dir)
            except (OSError, duckdb.Error) as exc:  # e.g. a full disk: they stay inline meanwhile
                with contextlib.suppress(duckdb.Error):
                    self._con.execute("ROLLBACK")
                log.warning("store: large documents stay in their rows for now: %s", exc)
        named = {
            r[0]
            for r in self._con.execute("SELECT body_file FROM docs WHERE body_file IS NOT NULL").fetchall()
        }
        self._remove_body_files(p.name for p in self.documents_dir.iterdir() if p.name not in named)

    def _write_body_file(self, text: str) -> str:
        """Writes a document's body to a new file of ``documents_dir``, durably (its row is
        committed next); returns the file's name."""
        name = f"{uuid.uuid4().hex}.json"
        tmp = self.documents_dir / f"{name}.tmp"
        with open(tmp, "wb") as f:
            f.write(text.encode())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.documents_dir / name)
        fd = os.open(self.documents_dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return name

    def _remove_body_files(self, names: Iterable[str]) -> None:
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                (self.documents_dir / name).unlink()

    # -- availability ----------------------------------------------------------------------
    def _unavailable(self, exc: BaseException) -> StoreUnavailable | None:
        """A StoreUnavailable for an error that is the disk's, not the data's (None otherwise);
        marks the database for reopening when DuckDB has invalidated it."""
        if isinstance(exc, StoreUnavailable):
            return exc
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        fatal = isinstance(exc, duckdb.FatalException) or "invalidated" in str(exc)
        if fatal:
            if self._broken is None:
                log.error("store: database unusable until reopened: %s", text)
            self._broken = f"the database must be reopened after an error: {text}"
        if fatal or isinstance(exc, duckdb.IOException | OSError) or "Could not write" in text:
            return StoreUnavailable(f"the store cannot write to {self.path.parent}: {text}", self.retry_after)
        return None

    def _free_bytes(self) -> int:
        st = os.statvfs(self.path.parent)
        return st.f_bavail * st.f_frsize

    def _free_space_reason(self) -> str | None:
        if self.min_free_bytes <= 0:
            return None
        try:
            free = self._free_bytes()
        except OSError as exc:
            return f"cannot read the free space of {self.path.parent}: {exc}"
        if free < self.min_free_bytes:
            return (
                f"the data dir {self.path.parent} has {free / 2**20:.1f} MiB free, below the reserve"
                f" of {self.min_free_bytes / 2**20:.1f} MiB (storage.min_free_bytes); free space on"
                " that disk"
            )
        return None

    def _reopen_locked(self) -> None:
        """Close the unusable database and open the file again (both locks held); the WAL
        replays every committed write. Retried at most every ``reopen_interval`` seconds."""
        now = time.monotonic()
        if self._broken is None or now < self._next_reopen:
            return
        self._next_reopen = now + self.reopen_interval
        for handle in (self._reader, *self._channel_cursors(), self._con):
            with contextlib.suppress(Exception):
                handle.close()
        self._generation += 1
        try:
            self._con = duckdb.connect(str(self.path), config=self._config)
            self._reader = self._con.cursor()
            self._create_schema_locked()
        except Exception as exc:
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            self._broken = f"cannot reopen the database {self.path}: {text}"
            log.warning("store: %s; retrying in %.1fs", self._broken, self.reopen_interval)
            return
        log.warning("store: database reopened after: %s", self._broken)
        self._broken = None

    def _recover(self) -> None:
        if self._broken is not None and time.monotonic() >= self._next_reopen:
            with self._write_lock, self._read_lock:
                self._reopen_locked()

    def _writable_locked(self) -> duckdb.DuckDBPyConnection:
        """The connection to write with (write lock held), or StoreUnavailable."""
        if self._broken is not None:
            with self._read_lock:
                self._reopen_locked()
        if self._broken is not None:
            raise StoreUnavailable(self._broken, self.retry_after)
        if (reason := self._free_space_reason()) is not None:
            raise StoreUnavailable(reason, self.retry_after)
        return self._con

    def _failed_write(self, exc: BaseException) -> BaseException:
        """The error to raise for a failed write; a disk failure is remembered, so readiness
        reports it until a write (or the readiness probe's write) succeeds again."""
        unavailable = self._unavailable(exc)
        if unavailable is None:
            return exc
        self._write_failed = unavailable.reason
        return unavailable

    def _after_commit_locked(self, checkpoint_bytes: int | None = None) -> None:
        """A write succeeded: readiness stops reporting the last failed one; then checkpoint
        a WAL larger than ``checkpoint_bytes`` (default: the store's)."""
        self._write_failed = None
        self._checkpoint_locked(checkpoint_bytes)

    def _wal_bytes(self) -> int:
        try:
            return os.stat(f"{self.path}.wal").st_size
        except OSError:
            return 0

    def _checkpoint_locked(
        self,
        checkpoint_bytes: int | None = None,
        con: duckdb.DuckDBPyConnection | None = None,
        vacuum: bool = True,
    ) -> bool:
        """Checkpoint a WAL larger than ``checkpoint_bytes`` (default: the store's) now that
        every commit in it is durable, on ``con`` (default: the write connection; the write
        lock is held either way); False when DuckDB refused it (another write transaction was
        open) or it failed. ``vacuum=False``: without DuckDB's vacuum, which merges row groups
        and on an append-only table grows with the table (0.5-1.1 CPU-s every second 16 MB
        checkpoint of ``llm_calls`` after a few 100k rows, against ~0.1 s without); appends
        leave nothing to reclaim, and retention's checkpoints vacuum what deletes free. A failure here
        never turns an acknowledged write into an error: the data is in the WAL; the database
        is reopened before its next use if DuckDB gave up on it."""
        try:
            wal = os.stat(f"{self.path}.wal").st_size
            room = self._free_bytes()
        except OSError:
            return True
        if wal < (self.checkpoint_bytes if checkpoint_bytes is None else checkpoint_bytes):
            return True
        if self._free_space_reason() is not None or room < wal:
            # A checkpoint writes up to the WAL's contents into the database file, and one
            # that runs out of room invalidates the database: wait until there is room.
            return False
        con = con or self._con
        try:
            if not vacuum:
                con.execute("SET max_vacuum_tasks = 0")  # database-wide: the write lock is held
            try:
                con.execute("CHECKPOINT")
            finally:
                if not vacuum:
                    con.execute("RESET max_vacuum_tasks")
        except Exception as exc:
            if self._unavailable(exc) is None:
                log.debug("store: checkpoint deferred: %s", exc)
            else:
                log.warning("store: checkpoint failed (committed data is kept in the WAL): %s", exc)
            return False
        return True

    def _rollback_locked(self) -> None:
        # After a failed COMMIT DuckDB has already ended the transaction.
        with contextlib.suppress(Exception):
            self._con.rollback()

    def _write(
        self, statements: Callable[[duckdb.DuckDBPyConnection], object], checkpoint_bytes: int | None = None
    ) -> None:
        """Run ``statements`` in one transaction on the write connection, then checkpoint a WAL
        over ``checkpoint_bytes`` (default: the store's)."""
        with self._write_lock:
            con = self._writable_locked()
            try:
                con.begin()
                statements(con)
                con.commit()
            except Exception as exc:
                self._rollback_locked()
                raise self._failed_write(exc) from exc
            self._after_commit_locked(checkpoint_bytes)

    # -- channels: a connection and lock per writer that needs no other's lock -----------------
    def _channel(self, channel: str) -> tuple[threading.Lock, list[tuple[int, duckdb.DuckDBPyConnection]]]:
        with self._channels_lock:
            return self._channels.setdefault(channel, (threading.Lock(), []))

    def _channel_cursors(self) -> list[duckdb.DuckDBPyConnection]:
        with self._channels_lock:
            return [cur[0][1] for _, cur in self._channels.values() if cur]

    def _channel_con_locked(
        self, cur: list[tuple[int, duckdb.DuckDBPyConnection]]
    ) -> duckdb.DuckDBPyConnection:
        """The channel's cursor (its lock held), made again after a reopen; StoreUnavailable
        while the database waits to be reopened or the disk is short of its reserve."""
        if self._broken is not None:
            self._recover()
        if self._broken is not None:
            raise StoreUnavailable(self._broken, self.retry_after)
        if cur and cur[0][0] == self._generation:
            return cur[0][1]
        with self._write_lock:  # the write connection is replaced only under this lock
            if self._broken is not None:
                raise StoreUnavailable(self._broken, self.retry_after)
            cur[:] = [(self._generation, self._con.cursor())]
        return cur[0][1]

    def _channel_write(self, channel: str, statements: Callable[[duckdb.DuckDBPyConnection], object]) -> None:
        """Run ``statements`` in one transaction on ``channel``'s own cursor, under its own lock:
        channels writing different tables commit concurrently, and none waits for the write
        connection (retention, the pipeline). No checkpoint here: ``_channel_checkpoint``,
        called where a wait costs nothing."""
        lock, cur = self._channel(channel)
        with lock:
            if (reason := self._free_space_reason()) is not None:
                raise StoreUnavailable(reason, self.retry_after)
            con = self._channel_con_locked(cur)
            try:
                con.begin()
                statements(con)
                con.commit()
            except Exception as exc:
                with contextlib.suppress(Exception):
                    con.rollback()
                raise self._failed_write(exc) from exc
            self._write_failed = None

    def _channel_read(self, channel: str, query: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Run ``query`` on ``channel``'s cursor (no wait for the shared read cursor)."""
        lock, cur = self._channel(channel)
        with lock:
            con = self._channel_con_locked(cur)
            try:
                return query(con)
            except Exception as exc:
                raise (self._unavailable(exc) or exc) from exc
            finally:
                with contextlib.suppress(duckdb.Error):
                    con.fetchall()  # no result left open (it would hold a transaction open)

    def _channel_checkpoint(self, channel: str, force_bytes: int) -> bool:
        """Checkpoint a WAL over ``checkpoint_bytes`` from ``channel``'s cursor. DuckDB refuses
        a checkpoint while another write transaction is open (another channel's load): then
        it is left to the next call, until the WAL is over ``force_bytes``; past that every
        channel's lock and the write lock are taken (each waits for its current transaction)
        and the checkpoint runs, so DuckDB's WAL and memory stay bounded under constant load.
        True when the WAL is under the threshold afterwards."""
        lock, cur = self._channel(channel)
        with lock:
            con = self._channel_con_locked(cur)
            with self._write_lock:
                if self._checkpoint_locked(None, con, vacuum=False):
                    return True
        if self._wal_bytes() < force_bytes:
            return False
        with self._channels_lock:
            locks = sorted(self._channels.items())
        with contextlib.ExitStack() as held:
            for _, (other, _) in locks:
                held.enter_context(other)
            held.enter_context(self._write_lock)
            return self._checkpoint_locked(None, con, vacuum=False)

    def _single_thread(self, con: duckdb.DuckDBPyConnection, enter: bool) -> None:
        """Large loads insert on one thread: a log group of tens of thousands of rows costs
        less CPU that way; DuckDB's parallel insert spends the rest coordinating (small groups
        skip this: ``records.SINGLE_THREAD_ROWS``). ``threads`` is database-wide, so it is
        restored when the last concurrent load ends."""
        with self._threads_lock:
            self._single_threaded += 1 if enter else -1
            if self._single_threaded == (1 if enter else 0):
                con.execute(f"SET threads = {1 if enter else self._threads}")

    def _read(self, query: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Run ``query`` on the read cursor; disk errors become StoreUnavailable."""
        self._recover()
        with self._read_lock:
            if self._broken is not None:
                raise StoreUnavailable(self._broken, self.retry_after)
            try:
                return query(self._reader)
            except Exception as exc:
                err = exc
            finally:
                # A result left open (a fetchone) keeps the reader's transaction open, and
                # with it every CHECKPOINT refused: the DuckDB WAL and the in-memory tables
                # then grow without bound under steady ingest. Drain it.
                with contextlib.suppress(duckdb.Error):
                    self._reader.fetchall()
        raise (self._unavailable(err) or err) from err

    def _read_rows(self, work: Callable[[Execute], T]) -> T:
        return self._read(lambda cur: work(lambda sql, params: cur.execute(sql, params).fetchall()))

    def unavailable_reason(self) -> str | None:
        """Never waits for a write or read in progress (a readiness probe must answer fast):
        reopening and the probe write are tried only when both locks are free at once."""
        if not self._write_lock.acquire(blocking=False):
            return self._broken or self._free_space_reason() or self._write_failed
        try:
            if self._broken is not None and self._read_lock.acquire(blocking=False):
                try:
                    self._reopen_locked()
                finally:
                    self._read_lock.release()
            if self._broken is not None:
                return self._broken
            if (reason := self._free_space_reason()) is not None:
                return reason
            if self._write_failed is not None and time.monotonic() >= self._next_probe:
                # The last write failed for lack of space and none has been tried since
                # (clients are told to back off): find out with a write of our own.
                self._next_probe = time.monotonic() + self.reopen_interval
                self._probe_write_locked()
            return self._write_failed
        finally:
            self._write_lock.release()

    def _probe_write_locked(self) -> None:
        try:
            self._con.begin()
            self._con.execute(
                "INSERT OR REPLACE INTO docs (collection, id, body) VALUES ('_store', 'write-probe', ?)",
                [json.dumps({"at": time.time(), "room": "x" * _PROBE_BYTES})],
            )
            self._con.commit()
        except Exception as exc:
            self._rollback_locked()
            self._failed_write(exc)
            return
        self._after_commit_locked()

    def _checkpoint(self, checkpoint_bytes: int) -> None:
        """Checkpoint a WAL larger than ``checkpoint_bytes`` in a write-lock hold of its own."""
        with self._write_lock:
            if self._broken is None:
                self._checkpoint_locked(checkpoint_bytes)

    def _count_written(self, sql: str, params: list[Any], checkpoint_bytes: int | None = None) -> int:
        """Run one counting DML statement (DELETE, UPDATE) in its own transaction."""
        counted: list[int] = []
        self._write(
            lambda con: counted.append(int(con.execute(sql, params).fetchone()[0])),  # type: ignore[index]
            checkpoint_bytes,
        )
        return counted[0]

    def close(self) -> None:
        with self._write_lock, self._read_lock:
            for handle in (self._reader, *self._channel_cursors()):
                with contextlib.suppress(Exception):
                    handle.close()
            try:
                if self._broken is None:
                    self._con.execute("CHECKPOINT")
            except Exception as exc:
                # Every commit is in the WAL; the next open replays it.
                log.warning("store: checkpoint on close failed (the WAL keeps the data): %s", exc)
            finally:
                with contextlib.suppress(Exception):
                    self._con.close()
