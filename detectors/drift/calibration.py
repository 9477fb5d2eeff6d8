"""min-P calibrations computed off the detector loop, once, and kept in the store.

A calibration (``detectors.drift.min_p``) resamples hundreds of no-drift windows from a
reference: seconds per monitor. Computed inside an evaluation it blinded every other detector
for as long; recomputed after each restart it blinded them again. Here it runs in a worker
process (its Python work cannot take the GIL from ingest), one calibration at a time, and
the result is stored as a document keyed by the reference's content, the window-size bucket
and the resampling settings, so a restart (or a replica on the same store) finds it instead
of computing it again. Until a monitor's calibration is ready its verdicts use Bonferroni,
which controls the same family-wise error without knowing how the features move together
(more conservative, never less), and say so.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import multiprocessing
import os
import threading
import time
from multiprocessing.pool import AsyncResult, ThreadPool
from typing import Any

import numpy as np

from detectors.drift.min_p import FAILED, PENDING, READY, Member, calibration_size, min_p_null_rows
from detectors.drift.profile import ReferenceProfile
from mlvigil.core.store import Store, StoreUnavailable

log = logging.getLogger(__name__)

CALIBRATION_DOCS = "drift_calibrations"
#: Calibrations kept in memory (each is ``null_windows`` floats: 4 KB at the default 500).
MAX_CACHED = 4096
#: Stored calibrations kept per monitor; older ones (superseded references) are deleted.
MAX_STORED_PER_MONITOR = 8
#: Niceness of worker processes (statistics, and calibrations where the idle scheduling class
#: is not available) above the service's.
WORKER_NICE = 10
#: A failed calibration is tried again after this many seconds (Bonferroni meanwhile).
RETRY_FAILED_S = 600.0
#: Calibrations waiting for the worker; beyond it a monitor waits (Bonferroni) for a slot.
MAX_QUEUED = 1024


def profile_digest(profile: ReferenceProfile) -> str:
    """SHA-256 of what a calibration reads from a profile: the kept rows and feature kinds.
    Computed once per profile (cached on it)."""
    cached = profile.null_cache.get(("digest",))
    if cached is not None:
        return str(cached)
    h = hashlib.sha256()
    for name in sorted(profile.sample_rows or {}):
        col = (profile.sample_rows or {})[name]
        kind = profile.features[name].kind if name in profile.features else "?"
        h.update(f"\x1e{name}\x1f{kind}\x1f{col.dtype.kind}\x1f".encode())
        if col.dtype.kind in "fiub":
            h.update(np.ascontiguousarray(col).tobytes())
        else:
            h.update("\x1f".join("\x00" if v is None else repr(v) for v in col.tolist()).encode())
    digest = h.hexdigest()
    profile.null_cache[("digest",)] = digest  # type: ignore[assignment]
    return digest


def calibration_key(digest: str, family: list[Member], size: int, windows: int, seed: int) -> str:
    fam = hashlib.sha256("\x1f".join(f"{m.feature}\x1e{m.test}" for m in family).encode()).hexdigest()
    return f"{digest[:32]}:{fam[:16]}:n{size}:w{windows}:s{seed}"


def _compute(
    rows: dict[str, np.ndarray],
    kinds: dict[str, str],
    family: list[Member],
    size: int,
    windows: int,
    seed: int,
) -> list[float]:
    return [float(x) for x in min_p_null_rows(rows, kinds, family, size, windows, seed)]


def worker_init(parent: int, nice: int, background: bool = False) -> None:
    """In a worker process: run at niceness ``nice`` (``worker_nice``), yielding the CPU to
    the service, and exit once the service that started it is gone (killed, not stopped), so
    no orphan goes on computing what nobody will read. A ``background`` worker (calibrations)
    runs in the idle scheduling class, below every niceness: it takes the CPU nobody else
    wants, so ingest and the statistics of steady verdicts never wait for it (at the same
    niceness, a calibration's seconds of CPU made each window's 0.03 s of statistics answer in
    0.4-1.5 s on two cores)."""
    with contextlib.suppress(OSError):
        # Absolute: a spawned process starts at the niceness of the thread that spawned it
        # (a detector thread is itself niced), so adding to it would depend on that thread.
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    if background:
        with contextlib.suppress(OSError, AttributeError):  # Linux only; else just the niceness
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def worker_nice() -> int:
    """In the service: the niceness of its worker processes, ``WORKER_NICE`` above the
    service's own (its main thread's), at most the lowest there is (19)."""
    try:
        base = os.getpriority(os.PRIO_PROCESS, os.getpid())
    except OSError:
        base = 0
    return min(19, base + WORKER_NICE)


class Calibrations:
    """The calibrations of one service's monitors: in memory, in the store, or being computed.

    ``null`` never computes: it answers at once with the null distribution and ``ready``, or
    with None and ``pending`` (the work is queued) or ``failed``. ``workers`` processes
    compute (0: one thread in this process).
    """

    name = "drift-calibrations"

    def __init__(self, store: Store, workers: int = 1) -> None:
        self._store = store
        self._workers = workers
        self._lock = threading.Lock()
        self._ready: dict[str, np.ndarray] = {}
        self._pending: dict[str, AsyncResult[list[float]]] = {}
        self._failed: dict[str, float] = {}  # key -> when it failed
        self._pool: Any = None
        self._closed = False
        #: Calibrations computed by this process and read from the store (for status and tests).
        self.computed = 0
        self.loaded = 0
        self._preloaded = False

    def _executor(self) -> Any:
        if self._pool is None:
            if self._workers <= 0:
                self._pool = ThreadPool(1)
            else:
                # spawn, not fork: the service runs threads (DuckDB, the event loop) that a
                # forked child would inherit in whatever state they were.
                ctx = multiprocessing.get_context("spawn")
                self._pool = ctx.Pool(
                    self._workers,
                    initializer=worker_init,
                    initargs=(os.getpid(), worker_nice(), True),
                )
        return self._pool

    def null(
        self,
        profile: ReferenceProfile,
        family: list[Member],
        n_current: int,
        windows: int,
        seed: int,
        monitor: str = "",
    ) -> tuple[np.ndarray | None, str]:
        size = calibration_size(n_current)
        key = calibration_key(profile_digest(profile), family, size, windows, seed)
        with self._lock:
            if key in self._ready:
                return self._ready[key], READY
            if key in self._pending:
                return None, PENDING
            if key in self._failed:
                if time.time() - self._failed[key] < RETRY_FAILED_S:
                    return None, FAILED
                del self._failed[key]
        if not self._preloaded:
            self._preload()
            with self._lock:
                if key in self._ready:
                    return self._ready[key], READY
        try:
            # Found by another replica since the preload (a miss costs one narrow scan).
            doc = self._store.get_doc(CALIBRATION_DOCS, key)
        except StoreUnavailable:
            doc = None
        if doc is not None and isinstance(doc.get("null"), list):
            null = np.asarray(doc["null"], dtype=np.float64)
            with self._lock:
                self._remember(key, null)
                self.loaded += 1
            return null, READY
        with self._lock:
            if self._closed or len(self._pending) >= MAX_QUEUED:
                return None, PENDING
            kinds = {name: f.kind for name, f in profile.features.items()}
            started = time.time()
            self._pending[key] = self._executor().apply_async(
                _compute,
                (dict(profile.sample_rows or {}), kinds, list(family), size, windows, seed),
                callback=lambda values: self._done(key, values, monitor, size, windows, seed, started),
                error_callback=lambda exc: self._failed_with(key, monitor, exc),
            )
        return None, PENDING

    def _preload(self) -> None:
        """Every stored calibration, read at once by the first monitor that needs one: a DuckDB
        point lookup that finds a document reads the body of every document beside it (the
        stored reference profiles: ~0.5 s per lookup with fifty of them), so fifty lookups
        one by one cost a pass after a restart ~25 s."""
        try:
            docs = self._store.list_docs(CALIBRATION_DOCS)
        except StoreUnavailable:
            return  # looked up one by one meanwhile; tried again by the next monitor
        with self._lock:
            self._preloaded = True
            for key, doc in docs.items():
                if key not in self._ready and isinstance(doc.get("null"), list):
                    self._remember(key, np.asarray(doc["null"], dtype=np.float64))
                    self.loaded += 1

    def _failed_with(self, key: str, monitor: str, exc: BaseException) -> None:
        with self._lock:
            self._pending.pop(key, None)
            self._failed[key] = time.time()
        log.warning("min-P calibration for monitor %s failed (Bonferroni is used): %s", monitor, exc)

    def _remember(self, key: str, null: np.ndarray) -> None:
        if len(self._ready) >= MAX_CACHED:
            self._ready.pop(next(iter(self._ready)))
        self._ready[key] = null

    def _done(
        self,
        key: str,
        values: list[float],
        monitor: str,
        size: int,
        windows: int,
        seed: int,
        started: float,
    ) -> None:
        """In the pool's result thread: keep the calibration, in memory and in the store."""
        null = np.asarray(values, dtype=np.float64)
        doc = {
            "monitor": monitor,
            "size": size,
            "windows": windows,
            "seed": seed,
            "computed_at": time.time(),
            "seconds": time.time() - started,
            "null": values,
        }
        try:
            self._store.put_doc(CALIBRATION_DOCS, key, doc)
            self._prune(monitor)
        except Exception as exc:
            # Kept in memory: only a restart before the store takes it again computes it anew.
            log.warning("min-P calibration of monitor %s not stored: %s", monitor, exc)
        with self._lock:
            self._remember(key, null)
            self._pending.pop(key, None)
            self.computed += 1
        log.info("min-P calibration of monitor %s ready (%.1f s)", monitor, doc["seconds"])

    def _prune(self, monitor: str) -> None:
        docs = self._store.list_docs(CALIBRATION_DOCS)
        mine = sorted(
            ((d.get("computed_at", 0.0), k) for k, d in docs.items() if d.get("monitor") == monitor),
            reverse=True,
        )
        for _, key in mine[MAX_STORED_PER_MONITOR:]:
            self._store.delete_doc(CALIBRATION_DOCS, key)

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self.close()

    def close(self) -> None:
        """Stop the workers, a calibration in progress included (it is computed again, by
        whichever process next needs it)."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.terminate()
            pool.join()
