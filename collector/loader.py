"""The loaders of the write-ahead log (collector/wal.py): ``load_once`` loads one bounded
group of records into a ``Loader`` (DuckDB by default) and moves that loader's stored
position in the same transaction, so every acknowledged record is loaded exactly once, also
after a crash; ``LoaderThread`` drains the log in the background and exports its lag;
``IngestLog`` is the service component around the log and its loader thread.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Protocol

import pyarrow as pa
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from collector.wal import PASSES, Position, TableFilter, WriteAheadLog, read
from mlvigil.core.os_thread import name_os_thread
from mlvigil.core.store import Store
from mlvigil.core.store.duckdb import DuckDBStore

logger = logging.getLogger(__name__)


class Loader(Protocol):
    """Where the log is loaded into (DuckDB by default; a shared store next)."""

    def log_position(self, log: str) -> Position | None: ...

    def load(self, log: str, tables: Mapping[str, pa.Table], upto: Position) -> None:
        """Store ``tables`` and ``upto`` as ``log``'s position, in one transaction."""

    def maintain(self, log: str) -> None:
        """Housekeeping the loads leave to a thread that can wait (DuckDB: checkpoint its
        WAL), called by the loader's lowest-priority pass ``log`` between its loads."""


def load_once(
    wal: WriteAheadLog,
    target: Loader,
    log: str = "ingest",
    max_records: int = 256,
    max_bytes: int = 64 * 1024 * 1024,
    on_loaded: Callable[[Mapping[str, pa.Table]], None] | None = None,
    wanted: TableFilter | None = None,
) -> tuple[int, float]:
    """Load what the log holds past ``target``'s position for ``log`` (a consumer of
    ``wal``), as one group: up to ``max_records`` records or ``max_bytes`` of payload, one
    insert per table (those ``wanted`` selects; None: all), in one transaction; (records
    loaded, lag in seconds of the newest one loaded: load time minus append time, 0 when
    nothing was pending)."""
    after = target.log_position(log)
    batch: dict[str, list[pa.Table]] = {}
    n, size, newest, upto = 0, 0, 0, after
    for rec in read(wal.directory, after, wanted):
        for name, table in rec.tables.items():
            batch.setdefault(name, []).append(table)
        n, size, newest, upto = n + 1, size + rec.size, rec.appended_ns, rec.end
        if n >= max_records or size >= max_bytes:
            break
    if not n or upto is None:
        if after is not None and after > wal.position(log):  # loaded before a restart
            wal.loaded(after, log)
        return 0, 0.0
    tables = {name: pa.concat_tables(ts) for name, ts in batch.items()}
    target.load(log, tables, upto)
    wal.loaded(upto, log)
    if on_loaded is not None:
        on_loaded(tables)
    return n, (time.time_ns() - newest) / 1e9


class DuckDBLoader:
    """The default loader: the DuckDB store. Each log's position is read from the store once
    and then remembered as this loader stores it (only a load moves it, in the same
    transaction as its rows): a query per load saved (~1 ms of CPU). After a failed load the
    store is asked again, whatever that load left."""

    def __init__(self, store: DuckDBStore) -> None:
        self.store = store
        self._positions: dict[str, Position | None] = {}

    def log_position(self, log: str) -> Position | None:
        if log not in self._positions:
            pos = self.store.log_position(log)
            self._positions[log] = Position(*pos) if pos else None
        return self._positions[log]

    def load(self, log: str, tables: Mapping[str, pa.Table], upto: Position) -> None:
        self._positions.pop(log, None)  # unknown until the commit returns
        self.store.load_log(log, dict(tables), upto.segment, upto.offset)
        self._positions[log] = upto

    def maintain(self, log: str) -> None:
        self.store.checkpoint_loads(log)


def loader_for(store: Store) -> DuckDBLoader | None:
    """The loader for ``store``, or None for a store that takes records directly (PostgreSQL:
    its replicas share no local log)."""
    return DuckDBLoader(store) if isinstance(store, DuckDBStore) else None


class LoaderThread:
    """Drains the log into ``target`` in the background, in bounded groups (at most
    ``max_records`` records / ``max_bytes`` of payload per transaction, one insert per
    table).

    A log with one consumer is loaded in one pass, every table. A log whose consumers are
    ``PASSES`` (the service's) is loaded in one pass per consumer, each on a thread of its own
    with its own position in the store (exactly once each) and its own store connection: the
    primary (hot) pass, woken by each group commit, never waits for another pass's group;
    the others (the raw ``spans``) are woken by each hot load and run at a lower CPU priority
    (``secondary_nice``) in larger groups: each waits until ``secondary_linger_records``
    records are pending, the oldest of them is ``secondary_linger_seconds`` old, or a reader
    waits for them (``WriteAheadLog.readers_waiting``), and loads up to ``secondary_max_records``
    / ``secondary_max_bytes`` at once. A raw spans load writes one file (DuckDB's span files):
    fewer, larger files cost less to write and to query (a 5-request group 2.6 ms of CPU per
    request, a 32-request group 1.6 ms). The last pass also does the store's housekeeping between its loads
    (``Loader.maintain``: DuckDB's checkpoints), off the hot pass's path. Exports on ``registry``:

    - ``mlvigil_wal_loader_lag_seconds``: age of the oldest appended record the primary pass
      has not loaded yet; ``mlvigil_wal_loader_pass_lag_seconds{pass}`` the same per pass;
    - ``mlvigil_wal_unloaded_bytes``: bytes of the log not loaded by every pass (what the
      bound counts);
    - ``mlvigil_wal_loaded_records_total`` (primary pass) / ``mlvigil_wal_loader_errors_total``;
    - ``mlvigil_wal_loader_group_records{pass}``: records per load (a histogram).

    A failing load (the store down) is retried after ``retry_seconds``; the log keeps
    taking appends until its bound, then answers LogFull."""

    def __init__(
        self,
        wal: WriteAheadLog,
        target: Loader,
        *,
        max_records: int = 32,
        max_bytes: int = 16 * 1024 * 1024,
        retry_seconds: float = 1.0,
        secondary_nice: int = 5,
        secondary_linger_records: int = 32,
        secondary_linger_seconds: float = 0.5,
        secondary_max_records: int = 64,
        secondary_max_bytes: int = 64 * 1024 * 1024,
        registry: CollectorRegistry | None = None,
        on_loaded: Callable[[Mapping[str, pa.Table]], None] | None = None,
    ) -> None:
        self.wal, self.target = wal, target
        #: each pass: (its consumer name = its position in the store, the tables it loads)
        self.passes: list[tuple[str, TableFilter | None]] = (
            [(wal.primary, None)] if len(wal.consumers) == 1 else [(c, PASSES[c]) for c in wal.consumers]
        )
        #: called on the pass's thread with each group's tables once they are in the store
        self.on_loaded = on_loaded
        self.max_records, self.max_bytes, self.retry_seconds = max_records, max_bytes, retry_seconds
        self.secondary_nice = secondary_nice
        self.secondary_linger_records = min(secondary_linger_records, secondary_max_records)
        self.secondary_linger_seconds = secondary_linger_seconds
        self.secondary_max_records, self.secondary_max_bytes = secondary_max_records, secondary_max_bytes
        #: per group the primary pass loaded: (records, seconds from the append of its newest
        #: record to its load)
        self.groups: deque[tuple[int, float]] = deque(maxlen=100_000)
        self._stop = threading.Event()
        # Per pass: set when it found nothing to load (and so loaded everything before it).
        self._caught_up = {name: threading.Event() for name, _ in self.passes}
        # Wakes the secondary passes: set after each load of the primary pass.
        self._primary_loaded = threading.Event()
        # The secondary passes start once every pass has a stored position (``_seed``).
        self._seeded = threading.Event()
        registry = registry if registry is not None else CollectorRegistry()
        self.lag = Gauge(
            "mlvigil_wal_loader_lag_seconds",
            "Age of the oldest record in the write-ahead log not loaded into the store yet.",
            registry=registry,
        )
        self.lag.set_function(wal.lag_seconds)
        pass_lag = Gauge(
            "mlvigil_wal_loader_pass_lag_seconds",
            "Age of the oldest record in the write-ahead log a loader pass has not loaded yet.",
            ["pass"],
            registry=registry,
        )
        for name, _ in self.passes:
            pass_lag.labels(name).set_function(functools.partial(wal.lag_seconds, name))
        self.unloaded = Gauge(
            "mlvigil_wal_unloaded_bytes",
            "Bytes of the write-ahead log not loaded into the store yet.",
            registry=registry,
        )
        self.unloaded.set_function(lambda: float(wal.pending_bytes()))
        self.loaded_records = Counter(
            "mlvigil_wal_loaded_records", "Log records loaded into the store.", registry=registry
        )
        self.group_records = Histogram(
            "mlvigil_wal_loader_group_records",
            "Log records (requests) per load, by pass: a load has a fixed cost, shared by its group.",
            ["pass"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=registry,
        )
        self.errors = Counter(
            "mlvigil_wal_loader_errors", "Failed loads of the log (retried).", registry=registry
        )
        self._threads = [
            threading.Thread(target=self._run, args=(i,), name=f"wal-loader-{name}", daemon=True)
            for i, (name, _) in enumerate(self.passes)
        ]
        for thread in self._threads:
            thread.start()

    def _seed(self) -> None:
        """Give each secondary pass a stored position before the primary loads anything: a
        store loaded before the passes were split (one pass, every table, up to the primary's
        position) continues from there; a new one from the start of the log. Without a row a
        secondary pass could not tell these apart after a crash."""
        primary = self.target.log_position(self.wal.primary)
        for name, _ in self.passes[1:]:
            if self.target.log_position(name) is None:
                self.target.load(name, {}, primary or Position(-1, 0))
        self._seeded.set()

    def _lower_priority(self) -> None:
        """This thread's CPU priority lowered by ``secondary_nice`` (Linux: per thread)."""
        try:
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + self.secondary_nice)
        except (AttributeError, OSError) as exc:
            logger.debug("loader pass keeps its CPU priority: %s", exc)

    def _run(self, index: int) -> None:
        name, wanted = self.passes[index]
        name_os_thread(f"load-{name}")  # 15 bytes kept: "load-ingest", "load-ingest-spa"
        primary, last = index == 0, index == len(self.passes) - 1
        # Woken by group commits (the primary) or by the primary's loads (the others).
        wake = self.wal.appended if primary else self._primary_loaded
        if not primary:
            self._lower_priority()
        caught_up = self._caught_up[name]
        while not self._stop.is_set():
            wake.clear()
            caught_up.clear()
            try:
                if primary and not self._seeded.is_set():
                    self._seed()
                elif not self._seeded.is_set():
                    self._seeded.wait(0.5)
                    continue
                if primary:
                    limits = (self.max_records, self.max_bytes)
                else:
                    self._linger(name)
                    limits = (self.secondary_max_records, self.secondary_max_bytes)
                n, lag = load_once(self.wal, self.target, name, *limits, self.on_loaded, wanted)
                if last:
                    self.target.maintain(name)
            except Exception:
                logger.exception(
                    "loading the write-ahead log (pass %s) failed; retrying in %ss", name, self.retry_seconds
                )
                self.errors.inc()
                self._stop.wait(self.retry_seconds)
                continue
            if n:
                self.group_records.labels(name).observe(n)
                if primary:
                    self.loaded_records.inc(n)
                    self.groups.append((n, lag))
                    self._primary_loaded.set()
                continue  # more may be waiting: load until caught up
            # Caught up: sleep until woken (or stop). A reader waiting for the other passes
            # woke this one (``wait_loaded`` sets ``appended``): they stop lingering.
            caught_up.set()
            if primary and any(self.wal.readers_waiting(other) for other, _ in self.passes[1:]):
                self._primary_loaded.set()
            wake.wait(0.5)

    def _linger(self, name: str) -> None:
        """Wait (woken by the primary's loads) until ``secondary_linger_records`` records are
        pending for pass ``name``, the oldest is ``secondary_linger_seconds`` old, a reader
        waits for them, or the loader stops."""
        wal = self.wal
        while not self._stop.is_set():
            pending = wal.unloaded_records(name)
            if not pending or pending >= self.secondary_linger_records or wal.readers_waiting(name):
                return
            remaining = self.secondary_linger_seconds - wal.lag_seconds(name)
            if remaining <= 0:
                return
            self._primary_loaded.clear()
            # Checked again after the clear: a load or a reader in between set it.
            if wal.unloaded_records(name) >= self.secondary_linger_records or wal.readers_waiting(name):
                return
            self._primary_loaded.wait(remaining)

    def drain(self, timeout: float) -> bool:
        """Wait (bounded) until everything appended so far is loaded by every pass."""
        deadline = time.monotonic() + timeout
        while self.wal.unloaded_records() or not all(e.is_set() for e in self._caught_up.values()):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self.wal.appended.set()
        self._primary_loaded.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))


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
