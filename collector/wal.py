"""The write-ahead log: the durability point of ingest (issue 15), and its loaders.

A request is acknowledged once its record batches are in the log: appended to the current
segment and covered by an ``fdatasync`` that serves every request of its group (group
commit). Loaders copy the log into the query store asynchronously, each recording how far
it got in the same transaction as the rows it loaded, so after a crash the log is replayed
from exactly there: every acknowledged record is loaded once, none twice.

Segment files ``seg-<n>.wal`` hold records back to back::

    magic b"MVW1" | payload length u32 | CRC-32 of payload u32 | append time ns u64 | payload

and a payload is a sequence of tables: name length u16, name, Arrow IPC stream length u32,
Arrow IPC stream (uncompressed). A record cut short by a crash, or whose CRC does not
match, ends its segment: reopening the log truncates the cut record away (it was never
acknowledged). The log is bounded: while more than ``max_bytes`` are not yet loaded,
appends are refused (``LogFull``; the receivers answer 503 with Retry-After).

The OTLP receivers append here (collector/otlp_ingest.py) and acknowledge at the group's
fdatasync; the service's ``IngestLog`` runs one ``LoaderThread`` into the DuckDB store.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pyarrow as pa
from prometheus_client import CollectorRegistry, Counter, Gauge

from collector.pipeline import ShuttingDown
from mlvigil.core.store import Store, StoreUnavailable
from mlvigil.core.store.duckdb import DuckDBStore

MAGIC = b"MVW1"
logger = logging.getLogger(__name__)

HEADER = struct.Struct("<4sIIQ")
_NAME = struct.Struct("<H")
_LEN = struct.Struct("<I")


class LogFull(StoreUnavailable):
    """More than ``max_bytes`` of the log are not loaded yet; retry after ``retry_after`` s.
    A StoreUnavailable, so the receivers answer it as they answer a full disk: HTTP 503 /
    gRPC UNAVAILABLE with Retry-After."""

    def __init__(self, retry_after: int, unloaded: int, limit: int) -> None:
        super().__init__(
            f"the write-ahead log holds {unloaded} bytes not yet loaded (limit {limit});"
            f" retry after {retry_after}s",
            retry_after,
        )


class LogCorrupt(Exception):
    """A record inside the log (not at its end) failed its checksum."""


@dataclass(frozen=True, order=True)
class Position:
    """Where a record ends: (segment number, byte offset in it). Loading up to a position
    means every record ending at or before it is in the store."""

    segment: int
    offset: int


@dataclass(frozen=True)
class Record:
    end: Position
    appended_ns: int
    tables: dict[str, pa.Table]
    #: payload bytes (what a loader's group bound counts)
    size: int


def encode(tables: Mapping[str, pa.Table | pa.RecordBatch]) -> bytes:
    parts: list[bytes] = []
    for name, table in tables.items():
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write(table)
        ipc = sink.getvalue()
        raw = name.encode()
        parts += [_NAME.pack(len(raw)), raw, _LEN.pack(ipc.size), ipc.to_pybytes()]
    return b"".join(parts)


def decode(payload: bytes) -> dict[str, pa.Table]:
    out: dict[str, pa.Table] = {}
    view = memoryview(payload)
    pos = 0
    while pos < len(view):
        (n,) = _NAME.unpack_from(view, pos)
        name = bytes(view[pos + 2 : pos + 2 + n]).decode()
        pos += 2 + n
        (size,) = _LEN.unpack_from(view, pos)
        pos += 4
        out[name] = pa.ipc.open_stream(pa.py_buffer(view[pos : pos + size])).read_all()
        pos += size
    return out


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _segment_path(directory: Path, n: int) -> Path:
    return directory / f"seg-{n:012d}.wal"


def segments(directory: Path) -> list[int]:
    return sorted(int(p.name[4:16]) for p in directory.glob("seg-*.wal"))


def _scan(data: bytes, start: int, last: bool) -> Iterator[tuple[int, int, int, bytes]]:
    """(record start, record end, append ns, payload) of each whole record from ``start``.
    A short or failing record ends the scan; inside a segment that is not the last one,
    a failing checksum is corruption, not a torn write."""
    pos = start
    while pos + HEADER.size <= len(data):
        magic, size, crc, appended = HEADER.unpack_from(data, pos)
        end = pos + HEADER.size + size
        if magic != MAGIC or end > len(data):
            break
        payload = data[pos + HEADER.size : end]
        if zlib.crc32(payload) != crc:
            if end < len(data) or not last:
                raise LogCorrupt(f"record at byte {pos} fails its checksum")
            break
        yield pos, end, appended, payload
        pos = end


def _read_records(
    path: Path, start: int, last: bool, payloads: bool = True
) -> Iterator[tuple[int, int, bytes]]:
    """(record end, append ns, payload) of each whole record of segment ``path`` from byte
    ``start``, read one record at a time (a loader taking a bounded group reads only that
    group, not the rest of a 64 MiB segment). ``payloads=False`` reads headers only and
    yields empty payloads (no checksum). Same torn-tail / corruption rules as ``_scan``."""
    with open(path, "rb") as f:
        length = os.fstat(f.fileno()).st_size
        pos = f.seek(start)
        while pos + HEADER.size <= length:
            magic, size, crc, appended = HEADER.unpack(f.read(HEADER.size))
            end = pos + HEADER.size + size
            if magic != MAGIC or end > length:
                return
            if not payloads:
                f.seek(end)
                yield end, appended, b""
                pos = end
                continue
            payload = f.read(size)
            if len(payload) < size:  # the file was cut meanwhile
                return
            if zlib.crc32(payload) != crc:
                if end < length or not last:
                    raise LogCorrupt(f"record at byte {pos} of {path.name} fails its checksum")
                return
            yield end, appended, payload
            pos = end


def read(directory: Path, after: Position | None = None) -> Iterator[Record]:
    """Every whole record after ``after`` (all of them for None), in log order."""
    segs = segments(directory)
    for i, n in enumerate(segs):
        if after is not None and n < after.segment:
            continue
        start = after.offset if after is not None and n == after.segment else 0
        try:
            # only what is past the position, a record at a time: a loader reads each byte once
            path, last = _segment_path(directory, n), i == len(segs) - 1
            for end, appended, payload in _read_records(path, start, last):
                yield Record(Position(n, end), appended, decode(payload), len(payload))
        except FileNotFoundError:  # loaded and deleted meanwhile
            continue


class WriteAheadLog:
    """Appends with group commit on one writer thread; ``append`` returns a Future that is
    done once the record is durable (its group's fdatasync returned)."""

    def __init__(
        self,
        directory: str | Path,
        *,
        segment_bytes: int = 64 * 1024 * 1024,
        max_bytes: int = 1024 * 1024 * 1024,
        retry_after: int = 5,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.segment_bytes = segment_bytes
        self.max_bytes = max_bytes
        self.retry_after = retry_after
        #: fdatasync calls so far (one per group of appends).
        self.syncs = 0
        self._cond = threading.Condition()
        self._pending: list[tuple[bytes, Future[Position]]] = []
        self._closed = False
        self._loaded = Position(-1, 0)
        #: (end, append ns) of records not known to be loaded yet (found at start or appended
        #: since), oldest first: the loader lag is the age of the first.
        self._unloaded: deque[tuple[Position, int]] = deque()
        #: set after each group commit (wakes a loader thread)
        self.appended = threading.Event()
        segs = segments(self.directory)
        self._segment = segs[-1] if segs else 0
        path = _segment_path(self.directory, self._segment)
        data = path.read_bytes() if path.exists() else b""
        good = 0
        for _, end, _, _ in _scan(data, 0, last=True):
            good = end
        # Unbuffered: a failed write leaves nothing behind in a buffer to reach the file later.
        self._file = open(path, "ab", buffering=0)  # noqa: SIM115 (held open for the log's life)
        if good < len(data):  # a record cut short by a crash: never acknowledged
            self._file.truncate(good)
            os.fsync(self._file.fileno())
        self._offset = good
        # The records found (a restart's replay): the lag counts from the oldest of them, not
        # from the first append of this process. Headers only; the first load pops the ones
        # loaded before the restart.
        for i, n in enumerate(segs):
            for end, appended, _ in _read_records(
                _segment_path(self.directory, n), 0, last=i == len(segs) - 1, payloads=False
            ):
                self._unloaded.append((Position(n, end), appended))
        # Running count of the bytes not loaded (what the bound and admission check read per
        # request): writes add to it; each ``loaded`` recounts from the files. Both hold the
        # lock, so a recount never misses or doubles a write.
        self._count_lock = threading.Lock()
        self._pending_bytes = self.unloaded_bytes()
        # End of the newest durable record (what ``wait_loaded`` waits for): from the log as
        # found, so reads after a restart wait for the replay too.
        self._durable: Position | None = Position(self._segment, good) if good else None
        self._loaded_cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="wal-writer", daemon=True)
        self._thread.start()

    def unloaded_bytes(self) -> int:
        """Bytes of the log not loaded yet (what the bound counts)."""
        total = 0
        for n in segments(self.directory):
            try:
                total += _segment_path(self.directory, n).stat().st_size
            except FileNotFoundError:  # deleted by a loader meanwhile
                continue
            if n == self._loaded.segment:
                total -= self._loaded.offset
        return total

    def pending_bytes(self) -> int:
        """``unloaded_bytes()`` from a running count: cheap enough to read per request."""
        return self._pending_bytes

    def check_room(self) -> None:
        """LogFull while more than ``max_bytes`` are not loaded yet."""
        if (unloaded := self._pending_bytes) > self.max_bytes:
            raise LogFull(self.retry_after, unloaded, self.max_bytes)

    def append(self, tables: Mapping[str, pa.Table | pa.RecordBatch]) -> Future[Position]:
        """Queue one request's tables; LogFull while the log is over its bound,
        ShuttingDown once it is closed."""
        self.check_room()
        payload = encode(tables)
        fut: Future[Position] = Future()
        with self._cond:
            if self._closed:
                raise ShuttingDown("service is shutting down (the write-ahead log is closed)")
            self._pending.append((payload, fut))
            self._cond.notify()
        return fut

    def unloaded_records(self) -> int:
        """Records not loaded yet (those found at start included, until a load passes them)."""
        return len(self._unloaded)

    def lag_seconds(self) -> float:
        """Age of the oldest record not loaded yet (0: none), a restart's replay included."""
        try:
            oldest = self._unloaded[0][1]
        except IndexError:
            return 0.0
        return max(0.0, (time.time_ns() - oldest) / 1e9)

    @property
    def loaded_position(self) -> Position:
        return self._loaded

    def all_loaded(self) -> bool:
        """Whether every record durable now is loaded."""
        target = self._durable
        return target is None or self._loaded >= target

    def wait_loaded(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` s) until every record durable now is loaded: a reader
        then sees every request acknowledged before it asked. False on timeout."""
        target = self._durable
        if target is None:
            return True
        with self._loaded_cond:
            return self._loaded_cond.wait_for(lambda: self._loaded >= target, timeout)

    def loaded(self, upto: Position) -> None:
        """A loader has everything up to ``upto`` in the store: older segments can go."""
        with self._loaded_cond:
            self._loaded = max(self._loaded, upto)
            self._loaded_cond.notify_all()
        while self._unloaded and self._unloaded[0][0] <= upto:
            self._unloaded.popleft()
        for n in segments(self.directory):
            if n < upto.segment:
                _segment_path(self.directory, n).unlink(missing_ok=True)
        with self._count_lock:
            self._pending_bytes = self.unloaded_bytes()

    def _roll_locked(self) -> None:
        self._file.close()
        self._segment += 1
        self._file = open(_segment_path(self.directory, self._segment), "ab", buffering=0)  # noqa: SIM115
        self._offset = 0

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                group, self._pending = self._pending, []
                if not group and self._closed:
                    return
            done: list[tuple[Future[Position], Position, int]] = []
            start = Position(self._segment, self._offset)
            try:
                for payload, fut in group:
                    if self._offset >= self.segment_bytes:
                        os.fdatasync(self._file.fileno())
                        with self._count_lock:
                            self._roll_locked()
                    now = time.time_ns()
                    with self._count_lock:
                        _write_all(
                            self._file.fileno(), HEADER.pack(MAGIC, len(payload), zlib.crc32(payload), now)
                        )
                        _write_all(self._file.fileno(), payload)
                        self._offset += HEADER.size + len(payload)
                        self._pending_bytes += HEADER.size + len(payload)
                    done.append((fut, Position(self._segment, self._offset), now))
                os.fdatasync(self._file.fileno())
                self.syncs += 1
            except OSError as exc:  # disk full, I/O error: none of the group is acknowledged
                self._rewind(start)
                for _, fut in group:
                    if fut.set_running_or_notify_cancel():
                        fut.set_exception(exc)
                continue
            if done:
                self._durable = done[-1][1]
            for fut, pos, appended_ns in done:
                self._unloaded.append((pos, appended_ns))
                if fut.set_running_or_notify_cancel():  # False: cancelled, nobody waits
                    fut.set_result(pos)
            self.appended.set()

    def _rewind(self, to: Position) -> None:
        """Cut the log back to ``to`` after a failed group: what a full disk let through
        (a partial record) must not sit before the records appended once space returns."""
        try:
            with self._count_lock:
                if self._segment != to.segment:
                    self._file.close()
                    for n in segments(self.directory):
                        if n > to.segment:
                            _segment_path(self.directory, n).unlink(missing_ok=True)
                    self._segment = to.segment
                    self._file = open(_segment_path(self.directory, to.segment), "ab", buffering=0)  # noqa: SIM115
                os.ftruncate(self._file.fileno(), to.offset)
                self._offset = to.offset
                self._pending_bytes = self.unloaded_bytes()
        except OSError:
            logger.exception("cannot cut the write-ahead log back after a failed write")

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()
        self._file.close()


class Loader(Protocol):
    """Where the log is loaded into (DuckDB by default; a shared store next)."""

    def log_position(self, log: str) -> Position | None: ...

    def load(self, log: str, tables: Mapping[str, pa.Table], upto: Position) -> None:
        """Store ``tables`` and ``upto`` as ``log``'s position, in one transaction."""


def load_once(
    wal: WriteAheadLog,
    target: Loader,
    log: str = "ingest",
    max_records: int = 256,
    max_bytes: int = 64 * 1024 * 1024,
    on_loaded: Callable[[Mapping[str, pa.Table]], None] | None = None,
) -> tuple[int, float]:
    """Load what the log holds past ``target``'s position, as one group: up to
    ``max_records`` records or ``max_bytes`` of payload, one insert per table, in one
    transaction; (records loaded, lag in seconds of the newest one loaded: load time minus
    append time, 0 when nothing was pending)."""
    after = target.log_position(log)
    batch: dict[str, list[pa.Table]] = {}
    n, size, newest, upto = 0, 0, 0, after
    for rec in read(wal.directory, after):
        for name, table in rec.tables.items():
            batch.setdefault(name, []).append(table)
        n, size, newest, upto = n + 1, size + rec.size, rec.appended_ns, rec.end
        if n >= max_records or size >= max_bytes:
            break
    if not n or upto is None:
        if after is not None and after > wal.loaded_position:  # loaded before a restart
            wal.loaded(after)
        return 0, 0.0
    tables = {name: pa.concat_tables(ts) for name, ts in batch.items()}
    target.load(log, tables, upto)
    wal.loaded(upto)
    if on_loaded is not None:
        on_loaded(tables)
    return n, (time.time_ns() - newest) / 1e9


class DuckDBLoader:
    """The default loader: the DuckDB store."""

    def __init__(self, store: DuckDBStore) -> None:
        self.store = store

    def log_position(self, log: str) -> Position | None:
        pos = self.store.log_position(log)
        return Position(*pos) if pos else None

    def load(self, log: str, tables: Mapping[str, pa.Table], upto: Position) -> None:
        self.store.load_log(log, dict(tables), upto.segment, upto.offset)


def loader_for(store: Store) -> DuckDBLoader | None:
    """The loader for ``store``, or None for a store that takes records directly (PostgreSQL:
    its replicas share no local log)."""
    return DuckDBLoader(store) if isinstance(store, DuckDBStore) else None


class LoaderThread:
    """Drains the log into ``target`` on a background thread, in bounded groups (at most
    ``max_records`` records / ``max_bytes`` of payload per transaction, one insert per
    table), woken by each group commit. Exports its lag on ``registry``:

    - ``mlvigil_wal_loader_lag_seconds``: age of the oldest appended record not loaded yet;
    - ``mlvigil_wal_unloaded_bytes``: bytes of the log not loaded yet (what the bound counts);
    - ``mlvigil_wal_loaded_records_total`` / ``mlvigil_wal_loader_errors_total``.

    A failing load (the store down) is retried after ``retry_seconds``; the log keeps
    taking appends until its bound, then answers LogFull."""

    def __init__(
        self,
        wal: WriteAheadLog,
        target: Loader,
        *,
        log_name: str = "ingest",
        max_records: int = 32,
        max_bytes: int = 16 * 1024 * 1024,
        retry_seconds: float = 1.0,
        registry: CollectorRegistry | None = None,
        on_loaded: Callable[[Mapping[str, pa.Table]], None] | None = None,
    ) -> None:
        self.wal, self.target, self.log_name = wal, target, log_name
        #: called on the loader thread with each group's tables once they are in the store
        self.on_loaded = on_loaded
        self.max_records, self.max_bytes, self.retry_seconds = max_records, max_bytes, retry_seconds
        #: per group loaded: (records, seconds from the append of its newest record to its load)
        self.groups: deque[tuple[int, float]] = deque(maxlen=100_000)
        self._stop = threading.Event()
        # Set by a pass that found nothing to load (and so counted everything before it).
        self._caught_up = threading.Event()
        registry = registry if registry is not None else CollectorRegistry()
        self.lag = Gauge(
            "mlvigil_wal_loader_lag_seconds",
            "Age of the oldest record in the write-ahead log not loaded into the store yet.",
            registry=registry,
        )
        self.lag.set_function(wal.lag_seconds)
        self.unloaded = Gauge(
            "mlvigil_wal_unloaded_bytes",
            "Bytes of the write-ahead log not loaded into the store yet.",
            registry=registry,
        )
        self.unloaded.set_function(lambda: float(wal.pending_bytes()))
        self.loaded_records = Counter(
            "mlvigil_wal_loaded_records", "Log records loaded into the store.", registry=registry
        )
        self.errors = Counter(
            "mlvigil_wal_loader_errors", "Failed loads of the log (retried).", registry=registry
        )
        self._thread = threading.Thread(target=self._run, name="wal-loader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.wal.appended.clear()
            self._caught_up.clear()
            try:
                n, lag = load_once(
                    self.wal, self.target, self.log_name, self.max_records, self.max_bytes, self.on_loaded
                )
            except Exception:
                logger.exception("loading the write-ahead log failed; retrying in %ss", self.retry_seconds)
                self.errors.inc()
                self._stop.wait(self.retry_seconds)
                continue
            if n:
                self.loaded_records.inc(n)
                self.groups.append((n, lag))
                continue  # more may be waiting: load until caught up
            # Caught up: sleep until the next group commit (or stop).
            self._caught_up.set()
            self.wal.appended.wait(0.5)

    def drain(self, timeout: float) -> bool:
        """Wait (bounded) until everything appended so far is loaded."""
        deadline = time.monotonic() + timeout
        while self.wal.unloaded_records() or not self._caught_up.is_set():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self.wal.appended.set()
        self._thread.join(timeout)


class IngestLog:
    """The service component around the log: the loader thread starts before the receivers
    (it replays what a crash left unloaded in its first passes); on stop, after the
    receivers, ``before_close`` (the ingest workers finishing their appends), then the log
    closes, the loader drains what is left (bounded by ``drain_seconds``) and stops."""

    name = "ingest-log"

    def __init__(
        self,
        wal: WriteAheadLog,
        make_loader: Callable[[], LoaderThread],
        before_close: Callable[[], None],
        drain_seconds: float = 20.0,
    ) -> None:
        self.wal = wal
        self._make_loader = make_loader
        self._before_close = before_close
        self._drain_seconds = drain_seconds
        self.loader: LoaderThread | None = None

    async def start(self) -> None:
        self.loader = self._make_loader()

    async def stop(self) -> None:
        await asyncio.to_thread(self._stop)

    def _stop(self) -> None:
        self._before_close()
        self.wal.close()
        if self.loader is not None:
            if not self.loader.drain(self._drain_seconds):
                logger.warning(
                    "stopping with %d bytes of the write-ahead log not loaded: they load at the next start",
                    self.wal.pending_bytes(),
                )
            self.loader.stop()
