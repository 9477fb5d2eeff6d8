"""The detector loop: evaluates every detector on its schedule, off the event loop, and hands
what each reports to the ``FindingBook``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from mlvigil.core.aio import stop_task
from mlvigil.core.detector import Detector
from mlvigil.core.finding_book import FindingBook
from mlvigil.core.findings import Finding
from mlvigil.core.metrics import Telemetry
from mlvigil.core.store import Store, StoreUnavailable

if TYPE_CHECKING:
    from mlvigil.core.coordination import Coordinator

log = logging.getLogger(__name__)

#: Niceness added to the detector threads (Linux schedules threads, so only they yield):
#: ingest threads keep their CPU share while detectors evaluate; detectors take what is left.
DETECTOR_NICE = 10


def _lower_priority() -> None:
    """In a detector thread: lower this thread's CPU priority (where the OS allows)."""
    with contextlib.suppress(OSError, AttributeError):
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + DETECTOR_NICE)


class _Slot:
    """One detector's schedule: when it is due next (monotonic) and whether it runs now."""

    def __init__(self, detector: Detector, due: float) -> None:
        self.detector = detector
        self.due = due
        self.running = False
        # Held while the detector evaluates: one evaluation of a detector at a time (the
        # scheduler's and the API's "evaluate now" never overlap on one detector's state).
        self.lock = threading.Lock()


class DetectorLoop:
    """Evaluates each detector every ``interval`` seconds, off the event loop, in a pool of
    ``workers`` threads.

    Each detector keeps its own schedule, so a slow one (a drift monitor over a large window)
    delays no other: it runs again at its next due time, and how late each evaluation starts
    is exported (``mlvigil_detector_lag_seconds``), as are evaluation times and intervals a
    detector missed because its previous evaluation was still running.
    """

    name = "detectors"

    def __init__(
        self,
        store: Store,
        book: FindingBook,
        detectors: Sequence[Detector],
        interval: float,
        *,
        workers: int = 2,
        telemetry: Telemetry | None = None,
    ) -> None:
        self._store = store
        self._book = book
        self._interval = interval
        self._workers = max(1, workers)
        self._telemetry = telemetry
        self._slots: dict[str, _Slot] = {}
        self._slots_lock = threading.Lock()
        #: With replicas on a shared store: which detectors this one runs (leases).
        self.coordinator: Coordinator | None = None
        for det in detectors:
            self.add(det)
        self._task: asyncio.Task[None] | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._wake = asyncio.Event()

    @property
    def detectors(self) -> list[Detector]:
        with self._slots_lock:
            return [s.detector for s in self._slots.values()]

    # -- replicas: each detector runs where its lease is (mlvigil.core.coordination) -------------
    def share(self, coordinator: Coordinator) -> None:
        self.coordinator = coordinator
        coordinator.on_acquired(lambda key: self._book.reload(key.removeprefix("detector:")))
        self._share_keys()

    def _share_keys(self) -> None:
        if self.coordinator is not None:
            self.coordinator.set_keys(f"detector:{d.name}" for d in self.detectors)

    def _runs_here(self, name: str) -> bool:
        return self.coordinator is None or self.coordinator.holds(f"detector:{name}")

    def add(self, detector: Detector) -> None:
        with self._slots_lock:
            self._slots[detector.name] = _Slot(detector, time.monotonic() + self._interval)
        self._share_keys()

    def remove(self, name: str, *, resolve: bool = True) -> None:
        """Drop a detector and resolve what it had firing (not with ``resolve=False``: a
        replica following another's removal, which resolved them, only stops running it)."""
        with self._slots_lock:
            slot = self._slots.pop(name, None)
        self._share_keys()
        if not resolve:
            if slot is not None:
                self._forget_metrics(name)
            return
        if slot is None:
            self._book.record(name, [], time.time())
            return
        with slot.lock:
            self._book.record(name, [], time.time())
        self._forget_metrics(name)

    def _evaluate(self, slot: _Slot, now: float | None) -> list[tuple[Finding, str]]:
        det = slot.detector
        with slot.lock:
            with self._slots_lock:
                if self._slots.get(det.name) is not slot:
                    return []  # removed meanwhile
            if not self._runs_here(det.name):
                return []  # another replica holds its lease
            now = time.time() if now is None else now
            started = time.perf_counter()
            try:
                reported = det.evaluate(self._store, now)
            except Exception:
                log.exception("detector %s failed; its findings are kept as they were", det.name)
                return []
            finally:
                if self._telemetry:
                    self._telemetry.detector_seconds.labels(det.name).observe(time.perf_counter() - started)
            if not self._runs_here(det.name):
                return []  # the lease lapsed while evaluating: its new holder writes
            try:
                return self._book.record(det.name, reported, now)
            except StoreUnavailable as exc:
                # Nothing recorded: the next evaluation reports the same transitions again.
                log.warning("findings of %s not recorded (will retry next pass): %s", det.name, exc)
                return []

    def evaluate_all(self, now: float | None = None) -> list[tuple[Finding, str]]:
        """One pass over all detectors (the API's synchronous 'evaluate now'), ``workers`` at a
        time in detector threads, as the schedule runs them: one detector's store read overlaps
        another's statistics in a worker process, so a pass of fifty drift monitors takes about
        the statistics' time rather than the sum of reads and statistics. Transitions come back
        in the detectors' order."""
        now = time.time() if now is None else now
        with self._slots_lock:
            slots = list(self._slots.values())
        if self._workers == 1 or len(slots) < 2:
            return [t for slot in slots for t in self._evaluate(slot, now)]
        with ThreadPoolExecutor(
            max_workers=min(self._workers, len(slots)),
            thread_name_prefix="detector-pass",
            initializer=_lower_priority,
        ) as pool:
            reported = list(pool.map(lambda slot: self._evaluate(slot, now), slots))
        return [t for transitions in reported for t in transitions]

    def _scheduled(self, slot: _Slot) -> None:
        """A scheduled evaluation (pool thread); then the slot's next due time."""
        try:
            self._evaluate(slot, None)
        finally:
            now = time.monotonic()
            due = slot.due + self._interval
            if due <= now:
                # Still running when it was due again: those intervals are missed, and the
                # next evaluation starts now (its lag says how late).
                missed = int((now - due) // self._interval) + 1
                if self._telemetry:
                    self._telemetry.detector_missed.labels(slot.detector.name).inc(missed)
                due += (missed - 1) * self._interval
            slot.due = due
            slot.running = False

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._pool is not None
        while True:
            now = time.monotonic()
            with self._slots_lock:
                slots = list(self._slots.values())
            next_due = now + self._interval
            for slot in slots:
                if slot.running:
                    continue
                if slot.due <= now:
                    slot.running = True
                    if self._telemetry:
                        self._telemetry.detector_lag.labels(slot.detector.name).set(now - slot.due)
                    fut = loop.run_in_executor(self._pool, self._scheduled, slot)
                    fut.add_done_callback(lambda _f: self._wake.set())
                else:
                    next_due = min(next_due, slot.due)
            self._wake.clear()
            # Woken early when an evaluation ends (its next due time may be sooner) and at
            # least every second (detectors added meanwhile).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=min(max(next_due - now, 0.0), 1.0))

    def _forget_metrics(self, name: str) -> None:
        if not self._telemetry:
            return
        for metric in (
            self._telemetry.detector_seconds,
            self._telemetry.detector_lag,
            self._telemetry.detector_missed,
        ):
            with contextlib.suppress(KeyError):
                metric.remove(name)

    async def start(self) -> None:
        self._pool = ThreadPoolExecutor(
            max_workers=self._workers, thread_name_prefix="detector", initializer=_lower_priority
        )
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="detector-loop")

    async def stop(self) -> None:
        await stop_task(self._task)
        self._task = None
        if self._pool is not None:
            # Evaluations in progress finish (they hold store reads); none starts.
            await asyncio.to_thread(self._pool.shutdown, wait=True, cancel_futures=True)
            self._pool = None
        for det in self.detectors:
            det.close()
