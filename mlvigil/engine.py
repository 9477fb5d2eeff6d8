"""Detector engine: evaluates detectors on a schedule and keeps the Finding lifecycle.

``FindingBook`` owns the firing/resolved state: a Finding fires when a detector first reports
its fingerprint, stays firing (evidence updated, ``started_at`` kept) while reported, and
resolves when its detector stops reporting it. The firing set is reloaded from the store on
start, so a restart neither re-fires nor forgets anything.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from detectors.base import Detector
from mlvigil.aio import stop_task
from mlvigil.findings import Finding, State
from mlvigil.metrics import Telemetry
from mlvigil.store import Store, StoreUnavailable

if TYPE_CHECKING:
    from mlvigil.coordination import Coordinator

log = logging.getLogger(__name__)

# Called for every fired, updated or resolved Finding, with the transition's name.
FindingListener = Callable[[Finding, str], None]


class FindingBook:
    def __init__(self, store: Store, telemetry: Telemetry | None = None) -> None:
        self._store = store
        self._telemetry = telemetry
        self._listeners: list[FindingListener] = []
        self._lock = threading.Lock()
        self._firing: dict[str, Finding] = {
            f.id: f for f in store.findings(state=State.FIRING, limit=1_000_000)
        }
        self._publish_gauge()

    def subscribe(self, listener: FindingListener) -> None:
        self._listeners.append(listener)

    def firing(self) -> list[Finding]:
        with self._lock:
            return list(self._firing.values())

    def record(self, detector: str, reported: Sequence[Finding], now: float) -> list[tuple[Finding, str]]:
        """Apply one evaluation of ``detector``; returns the transitions it caused."""
        transitions: list[tuple[Finding, str]] = []
        with self._lock:
            # Worked out on a copy and kept only once stored: if the store refuses the write
            # (disk full) nothing changes, and the next evaluation reports the same transitions.
            firing = dict(self._firing)
            seen: set[str] = set()
            for f in reported:
                f.detector = detector
                fid = f.id
                seen.add(fid)
                prev = firing.get(fid)
                if prev is None:
                    f = replace(f, state=State.FIRING, started_at=now, updated_at=now, resolved_at=None)
                    transitions.append((f, "fired"))
                else:
                    f = replace(
                        f, state=State.FIRING, started_at=prev.started_at, updated_at=now, resolved_at=None
                    )
                    transitions.append((f, "updated"))
                firing[fid] = f
            for fid, prev in list(firing.items()):
                if prev.detector == detector and fid not in seen:
                    done = replace(prev, state=State.RESOLVED, resolved_at=now, updated_at=now)
                    del firing[fid]
                    transitions.append((done, "resolved"))
            if transitions:
                self._store.upsert_findings(f for f, _ in transitions)
            self._firing = firing
        if self._telemetry:
            for f, what in transitions:
                if what != "updated":
                    self._telemetry.findings_transitions.labels(kind=f.kind, transition=what).inc()
            self._publish_gauge()
        for f, what in transitions:
            for listener in self._listeners:
                try:
                    listener(f, what)
                except Exception:
                    log.exception("finding listener failed on %s %s", what, f.id)
        return transitions

    def reload(self, detector: str) -> None:
        """Re-read ``detector``'s firing Findings from the store: another replica ran it until
        now (its lease moved here), so what this process remembers of it may be stale. Each is
        handed to the listeners as "restored", so alert groups and retrain policies here pick
        up what the other replica may not have finished (their message ids are deterministic:
        what it did send is not sent again)."""
        stored = {
            f.id: f
            for f in self._store.findings(state=State.FIRING, limit=1_000_000)
            if f.detector == detector
        }
        with self._lock:
            firing = {i: f for i, f in self._firing.items() if f.detector != detector or i in stored}
            firing.update(stored)
            self._firing = firing
        self._publish_gauge()
        for f in stored.values():
            for listener in self._listeners:
                try:
                    listener(f, "restored")
                except Exception:
                    log.exception("finding listener failed on restored %s", f.id)

    def _publish_gauge(self) -> None:
        if not self._telemetry:
            return
        counts: dict[tuple[str, str], int] = {}
        for f in self._firing.values():
            key = (f.kind, str(f.severity))
            counts[key] = counts.get(key, 0) + 1
        self._telemetry.set_firing(counts)


class DetectorLoop:
    """Evaluates every detector every ``interval`` seconds, off the event loop."""

    name = "detectors"

    def __init__(
        self, store: Store, book: FindingBook, detectors: Sequence[Detector], interval: float
    ) -> None:
        self._store = store
        self._book = book
        self.detectors = list(detectors)
        self._interval = interval
        self._task: asyncio.Task[None] | None = None
        self._run_lock = threading.Lock()
        #: With replicas on a shared store: which detectors this one runs (leases).
        self.coordinator: Coordinator | None = None

    # -- replicas: each detector runs where its lease is (mlvigil.coordination) -------------
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
        self.detectors.append(detector)
        self._share_keys()

    def remove(self, name: str) -> None:
        """Drop a detector and resolve what it had firing."""
        with self._run_lock:
            self.detectors = [d for d in self.detectors if d.name != name]
            self._share_keys()
            self._book.record(name, [], time.time())

    def evaluate_all(self, now: float | None = None) -> list[tuple[Finding, str]]:
        """One pass over all detectors (also the API's synchronous 'evaluate now')."""
        now = time.time() if now is None else now
        out: list[tuple[Finding, str]] = []
        with self._run_lock:
            for det in list(self.detectors):
                if not self._runs_here(det.name):
                    continue
                try:
                    reported = det.evaluate(self._store, now)
                except Exception:
                    log.exception("detector %s failed; its findings are kept as they were", det.name)
                    continue
                if not self._runs_here(det.name):
                    continue  # the lease lapsed while evaluating: its new holder writes
                try:
                    out.extend(self._book.record(det.name, reported, now))
                except StoreUnavailable as exc:
                    # Nothing recorded: the next pass reports the same transitions again.
                    log.warning("findings of %s not recorded (will retry next pass): %s", det.name, exc)
        return out

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await asyncio.to_thread(self.evaluate_all)
            except Exception:
                # A failed pass must not end the loop: detectors run again at the next interval.
                log.exception("detector pass failed")

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="detector-loop")

    async def stop(self) -> None:
        await stop_task(self._task)
        self._task = None
        for det in self.detectors:
            det.close()
