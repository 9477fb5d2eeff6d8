"""The write-ahead log: the durability point of ingest (issue 15); its loaders are in collector/loader.py.

A request is acknowledged once its record batches are in the log: appended to the current
segment and covered by an ``fdatasync`` that serves every request of its group (group
commit). Loaders copy the log into the query store asynchronously, each recording how far
it got in the same transaction as the rows it loaded, so after a crash the log is replayed
from exactly there: every acknowledged record is loaded once, none twice.

Segment files ``seg-<n>.wal`` hold records back to back::

    magic b"MVW1" | payload length u32 | CRC-32 of payload u32 | append time ns u64 | payload

and a payload is a sequence of tables: name length u16, name, Arrow IPC stream length u32,
Arrow IPC stream (uncompressed). The CRC is zlib's CRC-32 (IEEE). On the OTLP path the
native normaliser makes the payload and its CRC itself (``mlvigil_native.normalise_*(...,
log_record=True)``, Rust crate native/wal-record), without the GIL and without pyarrow;
``encode_parts`` makes the same format from pyarrow tables (the Python fallback, tests).
A record cut short by a crash, or whose CRC does not match, ends its segment: reopening
the log truncates the cut record away (it was never acknowledged). The log is bounded:
while more than ``max_bytes`` are not yet loaded, appends are refused (``LogFull``; the
receivers answer 503 with Retry-After).

The OTLP receivers append here (collector/otlp_ingest.py) and acknowledge at the group's
fdatasync; collector/loader.py loads the log into the query store.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from collector.pipeline import ShuttingDown
from mlvigil.core.os_thread import name_os_thread
from mlvigil.core.store import StoreUnavailable

try:  # the checksum on read: 6-7x zlib's speed (carry-less multiplication), same value
    from mlvigil_native import crc32 as payload_crc32
except ImportError:  # not built (or an older build): zlib computes the same CRC-32
    payload_crc32 = zlib.crc32

MAGIC = b"MVW1"
logger = logging.getLogger(__name__)

HEADER = struct.Struct("<4sIIQ")
#: the readiness probe's write after a failed group: room for a typical group of exports
PROBE_BYTES = 4 * 1024 * 1024
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
class TableFilter:
    """Which tables of each record a loader pass loads: ``only`` these (None: all) but not
    ``without``."""

    only: frozenset[str] | None = None
    without: frozenset[str] = frozenset()

    def selects(self, name: str) -> bool:
        return (self.only is None or name in self.only) and name not in self.without


#: The passes of the service's loader (``LoaderThread``), each with its own position in the
#: store: the record tables the detectors and queries read first (the hot pass), then the raw
#: ``spans`` table in its own, lower-priority pass (it was ~40% of the loader's cost).
HOT = "ingest"
RAW_SPANS = "ingest-spans"
PASSES: dict[str, TableFilter] = {
    HOT: TableFilter(without=frozenset({"spans"})),
    RAW_SPANS: TableFilter(only=frozenset({"spans"})),
}


@dataclass(frozen=True)
class Record:
    end: Position
    appended_ns: int
    tables: dict[str, pa.Table]
    #: payload bytes (what a loader's group bound counts)
    size: int


@dataclass(frozen=True)
class Payload:
    """One record's payload as the parts written back to back (never joined: the Arrow IPC
    buffers go to the file as they are), with its length and CRC-32."""

    parts: list[bytes | pa.Buffer]
    size: int
    crc: int


def encode_parts(tables: Mapping[str, pa.Table | pa.RecordBatch]) -> Payload:
    parts: list[bytes | pa.Buffer] = []
    size = crc = 0
    for name, table in tables.items():
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write(table)
        ipc = sink.getvalue()
        raw = name.encode()
        for part in (_NAME.pack(len(raw)) + raw + _LEN.pack(ipc.size), ipc):
            parts.append(part)
            size += part.size if isinstance(part, pa.Buffer) else len(part)
            crc = zlib.crc32(part, crc)  # releases the GIL for large buffers
    return Payload(parts, size, crc)


def payload_of(data: bytes, crc: int) -> Payload:
    """A payload made elsewhere (the native normaliser's ``log_record=True``) with its CRC-32."""
    return Payload([data], len(data), crc)


def encode(tables: Mapping[str, pa.Table | pa.RecordBatch]) -> bytes:
    """The payload of ``tables`` as one bytes object (what ``decode`` reads)."""
    return b"".join(bytes(part) for part in encode_parts(tables).parts)


def decode(payload: bytes, wanted: TableFilter | None = None) -> dict[str, pa.Table]:
    """The tables of ``payload``; with ``wanted``, only those it selects (the others are
    skipped unread)."""
    out: dict[str, pa.Table] = {}
    view = memoryview(payload)
    pos = 0
    while pos < len(view):
        (n,) = _NAME.unpack_from(view, pos)
        name = bytes(view[pos + 2 : pos + 2 + n]).decode()
        pos += 2 + n
        (size,) = _LEN.unpack_from(view, pos)
        pos += 4
        if wanted is None or wanted.selects(name):
            out[name] = pa.ipc.open_stream(pa.py_buffer(view[pos : pos + size])).read_all()
        pos += size
    return out


def _write_all(fd: int, parts: list[bytes | pa.Buffer]) -> None:
    """Write ``parts`` back to back (one writev, looping over what a short write left)."""
    views = [memoryview(p) for p in parts]
    while views:
        written = os.writev(fd, views)
        while views and written >= views[0].nbytes:
            written -= views[0].nbytes
            views.pop(0)
        if views and written:
            views[0] = views[0][written:]


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
        if payload_crc32(payload) != crc:
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
            if payload_crc32(payload) != crc:
                if end < length or not last:
                    raise LogCorrupt(f"record at byte {pos} of {path.name} fails its checksum")
                return
            yield end, appended, payload
            pos = end


def read(
    directory: Path, after: Position | None = None, wanted: TableFilter | None = None
) -> Iterator[Record]:
    """Every whole record after ``after`` (all of them for None), in log order; with
    ``wanted``, each record's tables it selects only."""
    segs = segments(directory)
    for i, n in enumerate(segs):
        if after is not None and n < after.segment:
            continue
        start = after.offset if after is not None and n == after.segment else 0
        try:
            # only what is past the position, a record at a time: a loader reads each byte once
            path, last = _segment_path(directory, n), i == len(segs) - 1
            for end, appended, payload in _read_records(path, start, last):
                yield Record(Position(n, end), appended, decode(payload, wanted), len(payload))
        except FileNotFoundError:  # loaded and deleted meanwhile
            continue


class WriteAheadLog:
    """Appends with group commit on one writer thread; ``append`` returns a Future that is
    done once the record is durable (its group's fdatasync returned).

    ``consumers`` names the loader passes that each load the whole log, each at its own
    position (the first is the primary one: the default of ``lag_seconds``, ``wait_loaded``,
    ``loaded``); a segment is deleted, and the bound freed, once every consumer is past it."""

    def __init__(
        self,
        directory: str | Path,
        *,
        segment_bytes: int = 64 * 1024 * 1024,
        max_bytes: int = 1024 * 1024 * 1024,
        retry_after: int = 5,
        consumers: Sequence[str] = (HOT,),
    ) -> None:
        if not consumers:
            raise ValueError("a write-ahead log needs at least one consumer")
        self.directory = Path(directory)
        self.consumers = tuple(consumers)
        self.primary = self.consumers[0]
        self.directory.mkdir(parents=True, exist_ok=True)
        self.segment_bytes = segment_bytes
        self.max_bytes = max_bytes
        self.retry_after = retry_after
        #: fdatasync calls so far (one per group of appends).
        self.syncs = 0
        self._cond = threading.Condition()
        self._pending: list[tuple[Payload, Future[Position]]] = []
        self._closed = False
        #: how far each consumer has loaded
        self._loaded = {c: Position(-1, 0) for c in self.consumers}
        #: per consumer, (end, append ns) of records it is not known to have loaded yet
        #: (found at start or appended since), oldest first: its lag is the age of the first.
        self._unloaded: dict[str, deque[tuple[Position, int]]] = {c: deque() for c in self.consumers}
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
                for pending in self._unloaded.values():
                    pending.append((Position(n, end), appended))
        # Running count of the bytes not loaded (what the bound and admission check read per
        # request): writes add to it; each ``loaded`` recounts from the files. Both hold the
        # lock, so a recount never misses or doubles a write.
        self._count_lock = threading.Lock()
        self._pending_bytes = self.unloaded_bytes()
        # End of the newest durable record (what ``wait_loaded`` waits for): from the log as
        # found, so reads after a restart wait for the replay too.
        self._durable: Position | None = Position(self._segment, good) if good else None
        self._loaded_cond = threading.Condition()
        # Readers waiting in ``wait_loaded``: a loader lingering for a larger group loads now.
        self._readers_waiting = {c: 0 for c in self.consumers}
        #: why the last group could not be written (disk full, I/O error); None once one is
        #: written or the readiness probe's write succeeds (``unavailable_reason``)
        self._write_failed: str | None = None
        self._next_probe = 0.0
        self._thread = threading.Thread(target=self._run, name="wal-writer", daemon=True)
        self._thread.start()

    def _oldest_position(self) -> Position:
        """How far every consumer has loaded."""
        return min(self._loaded.values())

    def unloaded_bytes(self) -> int:
        """Bytes of the log not loaded yet by every consumer (what the bound counts)."""
        total = 0
        oldest = self._oldest_position()
        for n in segments(self.directory):
            try:
                total += _segment_path(self.directory, n).stat().st_size
            except FileNotFoundError:  # deleted by a loader meanwhile
                continue
            if n == oldest.segment:
                total -= oldest.offset
        return total

    def pending_bytes(self) -> int:
        """``unloaded_bytes()`` from a running count: cheap enough to read per request."""
        return self._pending_bytes

    def check_room(self) -> None:
        """LogFull while more than ``max_bytes`` are not loaded yet."""
        if (unloaded := self._pending_bytes) > self.max_bytes:
            raise LogFull(self.retry_after, unloaded, self.max_bytes)

    def unavailable_reason(self) -> str | None:
        """Why appends fail now (readiness), or None. After a failed group the log is not
        ready until a group is written again; since clients back off meanwhile, a probe (a
        file of ``PROBE_BYTES`` allocated and synced beside the segments, at most once per
        ``retry_after`` s) finds out when space has returned."""
        if self._write_failed is not None and time.monotonic() >= self._next_probe:
            self._next_probe = time.monotonic() + self.retry_after
            probe = self.directory / "write-probe.tmp"
            try:
                fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                try:
                    os.posix_fallocate(fd, 0, PROBE_BYTES)
                    os.fdatasync(fd)
                finally:
                    os.close(fd)
                    probe.unlink(missing_ok=True)
                self._write_failed = None
            except OSError as exc:
                self._write_failed = f"the write-ahead log cannot be written: {exc}"
        return self._write_failed

    def append(self, tables: Mapping[str, pa.Table | pa.RecordBatch] | Payload) -> Future[Position]:
        """Queue one request's tables (or their payload, made natively: ``payload_of``);
        LogFull while the log is over its bound, ShuttingDown once it is closed."""
        self.check_room()
        # IPC and CRC here, on the caller's thread (unless the native side made them)
        payload = tables if isinstance(tables, Payload) else encode_parts(tables)
        fut: Future[Position] = Future()
        with self._cond:
            if self._closed:
                raise ShuttingDown("service is shutting down (the write-ahead log is closed)")
            self._pending.append((payload, fut))
            self._cond.notify()
        return fut

    def unloaded_records(self, consumer: str | None = None) -> int:
        """Records ``consumer`` has not loaded yet (None: not loaded by every consumer), those
        found at start included until a load passes them."""
        if consumer is None:
            return max(len(pending) for pending in self._unloaded.values())
        return len(self._unloaded[consumer])

    def lag_seconds(self, consumer: str | None = None) -> float:
        """Age of the oldest record ``consumer`` (default: the primary) has not loaded yet
        (0: none), a restart's replay included."""
        try:
            oldest = self._unloaded[consumer or self.primary][0][1]
        except IndexError:
            return 0.0
        return max(0.0, (time.time_ns() - oldest) / 1e9)

    @property
    def loaded_position(self) -> Position:
        """How far the primary consumer has loaded."""
        return self._loaded[self.primary]

    def position(self, consumer: str) -> Position:
        return self._loaded[consumer]

    def all_loaded(self, consumers: Sequence[str] | None = None) -> bool:
        """Whether every record durable now is loaded by ``consumers`` (None: all of them)."""
        target = self._durable
        return target is None or all(self._loaded[c] >= target for c in consumers or self.consumers)

    def wait_loaded(self, timeout: float, consumers: Sequence[str] | None = None) -> bool:
        """Wait (at most ``timeout`` s) until every record durable now is loaded by
        ``consumers`` (None: all of them): a reader then sees every request acknowledged
        before it asked. False on timeout."""
        target = self._durable
        if target is None:
            return True
        names = consumers or self.consumers
        with self._loaded_cond:
            if all(self._loaded[c] >= target for c in names):
                return True
            for c in names:
                self._readers_waiting[c] += 1
            self.appended.set()  # a lingering loader loads now (``readers_waiting``)
            try:
                return self._loaded_cond.wait_for(
                    lambda: all(self._loaded[c] >= target for c in names), timeout
                )
            finally:
                for c in names:
                    self._readers_waiting[c] -= 1

    def readers_waiting(self, consumer: str) -> bool:
        """Whether a reader waits in ``wait_loaded`` for ``consumer`` to load records."""
        return self._readers_waiting[consumer] > 0

    def loaded(self, upto: Position, consumer: str | None = None) -> None:
        """``consumer`` (default: the primary) has everything up to ``upto`` in the store:
        segments every consumer is past can go."""
        consumer = consumer or self.primary
        with self._loaded_cond:
            before = self._oldest_position()
            self._loaded[consumer] = max(self._loaded[consumer], upto)
            oldest = self._oldest_position()
            self._loaded_cond.notify_all()
        pending = self._unloaded[consumer]
        while pending and pending[0][0] <= upto:
            pending.popleft()
        if oldest == before:
            return  # another consumer holds the log back: nothing to delete or recount
        for n in segments(self.directory):
            if n < oldest.segment:
                _segment_path(self.directory, n).unlink(missing_ok=True)
        with self._count_lock:
            self._pending_bytes = self.unloaded_bytes()

    def _roll_locked(self) -> None:
        self._file.close()
        self._segment += 1
        self._file = open(_segment_path(self.directory, self._segment), "ab", buffering=0)  # noqa: SIM115
        self._offset = 0

    def _run(self) -> None:
        name_os_thread()
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
                        header = HEADER.pack(MAGIC, payload.size, payload.crc, now)
                        _write_all(self._file.fileno(), [header, *payload.parts])
                        self._offset += HEADER.size + payload.size
                        self._pending_bytes += HEADER.size + payload.size
                    done.append((fut, Position(self._segment, self._offset), now))
                os.fdatasync(self._file.fileno())
                self.syncs += 1
            except OSError as exc:  # disk full, I/O error: none of the group is acknowledged
                self._write_failed = f"the write-ahead log cannot be written: {exc}"
                self._rewind(start)
                for _, fut in group:
                    if fut.set_running_or_notify_cancel():
                        fut.set_exception(exc)
                continue
            self._write_failed = None
            if done:
                self._durable = done[-1][1]
            for fut, pos, appended_ns in done:
                for pending in self._unloaded.values():
                    pending.append((pos, appended_ns))
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
