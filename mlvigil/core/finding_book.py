"""The Finding lifecycle: which Findings are firing, and every fire, update and resolve.

``FindingBook`` owns the firing/resolved state: a Finding fires when a detector first reports
its fingerprint, stays firing (evidence updated, ``started_at`` kept) while reported, and
resolves when its detector stops reporting it. The firing set is reloaded from the store on
start, so a restart neither re-fires nor forgets anything. Alerts and retrain hooks subscribe.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from mlvigil.core.findings import Finding, State
from mlvigil.core.metrics import Telemetry
from mlvigil.core.store import Store

if TYPE_CHECKING:
    pass

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
