"""The alert pipeline: Findings become alerts, and each alert passes small stages, as in
Alertmanager's notify pipeline, before the durable outbox sends it.

* routing (``alerts.routing``): which receivers an alert's labels go to;
* Alertmanager receivers (``alerts.resend``): each alert recorded as it fires and resolves,
  on the detector thread, and the firing set re-sent every ``resend_interval``;
* grouped receivers (webhook, Slack): grouping (``alerts.grouping``: ``group_wait``,
  ``group_interval``), mutes (``alerts.mutes``), and the notify decision
  (``alerts.notify``: new, resolved, ``repeat_interval``) checked against the notification
  log (``alerts.nflog``: one document per group, so nothing already sent is sent again after a
  restart and nothing that resolved meanwhile is forgotten);
* delivery and retry: the outbox (``mlvigil.core.outbox``) and one module per integration
  (``alerts.receivers``).

``AlertService`` only wires these stages together and runs the lifecycle loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from alerts.config import AlertsConfig
from alerts.grouping import Group, Groups, group_key, group_labels
from alerts.metrics import DeliveryMetrics
from alerts.mutes import Mute, Mutes
from alerts.nflog import NotificationLog, stable_hash
from alerts.notify import GroupNotifier
from alerts.payloads import Alert, alert_from_finding
from alerts.receivers import Receiver, build_receiver
from alerts.receivers.alertmanager import AlertmanagerIntegration
from alerts.resend import AlertmanagerStage
from alerts.routing import Route, Router
from mlvigil.core.coordination import message_claims
from mlvigil.core.finding_book import FindingBook
from mlvigil.core.findings import Finding
from mlvigil.core.outbox_service import OutboxService
from mlvigil.core.store import Store

log = logging.getLogger(__name__)

OUTBOX = "alerts_outbox"
#: Seconds a replica holds a group's claim while it decides and records one notification.
GROUP_CLAIM_TTL = 30.0
#: Seconds a group another replica is flushing right now waits before this one looks again.
GROUP_BUSY_RETRY = 0.2
#: Most firing Findings read back per pass to complete shared groups.
MAX_SHARED_FIRING = 100_000

__all__ = ["OUTBOX", "AlertService", "Group", "Mute"]


class AlertService(OutboxService):
    """The ``alerts`` component: Finding listener, lifecycle loop and outbox dispatcher."""

    name = "alerts"

    def __init__(
        self,
        cfg: AlertsConfig,
        store: Store,
        book: FindingBook,
        *,
        external_url: str = "http://localhost:9710",
        grafana_url: str | None = None,
        registry: Any = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(store, OUTBOX, clock=clock)
        self.cfg = cfg
        self.book = book
        self.external_url = external_url.rstrip("/")
        self.grafana_url = grafana_url
        self.receivers: dict[str, Receiver] = {r.name: build_receiver(r, self.session) for r in cfg.receivers}
        for receiver in self.receivers.values():
            for target, sender in receiver.senders().items():
                self.dispatcher.add_target(target, sender, receiver.retry)
        self.router = Router(cfg.effective_routes(), self.receivers)
        self.nflog = NotificationLog(store)
        self.mute_list = Mutes(store, clock, cfg.default_mute_duration)
        self.grouping = Groups(self.nflog)
        self.notifier = GroupNotifier(self.dispatcher, self.nflog, self.mute_list.muted, self.external_url)
        self.alertmanagers = AlertmanagerStage(
            self.dispatcher,
            [r for r in self.receivers.values() if isinstance(r, AlertmanagerIntegration)],
            clock,
        )
        self._inbox_lock = threading.Lock()
        self._inbox: list[tuple[Alert, str]] = []
        # Replicas on a shared store: one group across replicas. A group is flushed under a
        # claim, from the stored notification log and every firing Finding in the store (the
        # detectors feeding it may run on other replicas), so a burst through several
        # replicas is one notification and a group is never notified twice.
        claims = message_claims(store)
        self._group_leases = claims.leases if claims is not None else None
        if registry is not None:
            metrics = DeliveryMetrics(registry)
            self.dispatcher.on_result(metrics.observe)
        book.subscribe(self.on_finding)

    @property
    def groups(self) -> dict[str, Group]:
        return self.grouping.groups

    def _alert(self, finding: Finding) -> Alert:
        return alert_from_finding(finding, self.external_url, self.cfg.dashboard_url, self.grafana_url)

    @staticmethod
    def _alertmanagers(routes: list[Route]) -> list[str]:
        return [r.receiver.name for r in routes if not r.receiver.grouped]

    # -- the Finding listener (detector thread) ------------------------------------------
    def on_finding(self, finding: Finding, transition: str) -> None:
        """Record what Alertmanagers must hear now, durably; hand the rest to the loop."""
        alert = self._alert(finding)
        names = self._alertmanagers(self.router.match(alert.labels))
        with self.alertmanagers.lock:
            self.alertmanagers.record(alert, transition, names)
            self.alertmanagers.track(alert, names)
            with self._inbox_lock:
                self._inbox.append((alert, transition))
        self.wake()

    # -- lifecycle -----------------------------------------------------------------------
    def restore(self) -> None:
        """Rebuild groups from the FindingBook and the notification log after a restart."""
        now = self._clock()
        self.nflog.restore()
        self.mute_list.restore()
        firing = self.book.firing()
        for f in firing:
            alert = self._alert(f)
            routes = self.router.match(alert.labels)
            self.grouping.add(alert, routes, now)
            with self.alertmanagers.lock:
                self.alertmanagers.track(alert, self._alertmanagers(routes))
        # Groups that said an alert was firing which is no longer: it resolved meanwhile.
        firing_now = {f.id for f in firing}
        gone = [
            (fp, entry.at)
            for entry in self.nflog.entries.values()
            for fp in entry.firing
            if fp not in firing_now
        ]
        if gone:
            oldest = min([now, *(at for _, at in gone)])
            resolved = {
                f.id: f for f in self.store.findings(state="resolved", since=oldest - 1, limit=100_000)
            }
            for fp, _ in gone:
                if fp in resolved:
                    alert = self._alert(resolved[fp])
                    self.grouping.add(alert, self.router.match(alert.labels), now)

    def next_wait(self) -> float:
        now = self._clock()
        times = [t for t in (self.grouping.next_flush(), self.alertmanagers.next_resend()) if t is not None]
        nxt = min(times, default=now + self.cfg.tick)
        return max(0.001, min(self.cfg.tick, nxt - now))

    async def step(self) -> None:
        await asyncio.to_thread(self.tick)

    def tick(self) -> None:
        """Take in new transitions, flush the groups that are due, re-send to Alertmanagers."""
        now = self._clock()
        with self._inbox_lock:
            inbox, self._inbox = self._inbox, []
        for alert, transition in inbox:
            if transition == "updated":
                self.grouping.refresh(alert)
            else:
                self.grouping.add(alert, self.router.match(alert.labels), now)
        due = self.grouping.due(now)
        if self._group_leases is None:
            for group in due:
                self.notifier.flush(group, now)
        elif due:
            self._flush_shared(due, now)
        self.grouping.drop_empty()
        self.alertmanagers.resend(now)

    def _flush_shared(self, due: list[Group], now: float) -> None:
        """Flush due groups, each under its claim and completed from the shared store."""
        leases = self._group_leases
        assert leases is not None
        try:
            firing = self.store.findings(state="firing", limit=MAX_SHARED_FIRING)
        except Exception as exc:
            log.warning("alerts: cannot read the shared findings now (%s); will retry", exc)
            for group in due:
                group.next_flush = now + 1.0
            return
        # Each firing Finding's alert under the grouped routes it matches, by group key.
        members: dict[str, dict[str, Alert]] = {}
        for f in firing:
            alert = self._alert(f)
            for route in self.router.match(alert.labels):
                if route.receiver.grouped:
                    key = group_key(route, group_labels(route.cfg, alert.labels))
                    members.setdefault(key, {})[f.id] = alert
        firing_ids = {f.id for f in firing}
        for group in due:
            claim = f"alertgroup:{stable_hash(group.key)}"
            try:
                if not leases.acquire([claim], GROUP_CLAIM_TTL):
                    group.next_flush = now + GROUP_BUSY_RETRY  # another replica is flushing it
                    continue
            except Exception as exc:
                log.warning("alerts: cannot claim group %s now (%s); will retry", group.key, exc)
                group.next_flush = now + 1.0
                continue
            try:
                prev = self.nflog.reload(group.key)
                group.alerts.update(members.get(group.key, {}))  # the store is the latest word
                # What was firing and is no longer (resolved, maybe on another replica).
                stale = {*prev.firing, *(fp for fp, a in group.alerts.items() if not a.resolved)}
                for fp in stale - firing_ids:
                    found = self.store.finding(fp)
                    if found is not None and str(found.state) == "resolved":
                        group.alerts[fp] = self._alert(found)
                self.notifier.flush(group, now)
            finally:
                with contextlib.suppress(Exception):  # an unreleased claim expires by itself
                    leases.release([claim])

    def muted(self, labels: dict[str, str], now: float) -> bool:
        return self.mute_list.muted(labels, now)

    # -- mutes ---------------------------------------------------------------------------
    def add_mute(self, matchers: list[Any], **kw: Any) -> Mute:
        """A new mute (see :meth:`alerts.mutes.Mutes.add`); the next pass applies it."""
        mute = self.mute_list.add(matchers, **kw)
        self.wake()
        return mute

    def delete_mute(self, mute_id: str) -> bool:
        found = self.mute_list.delete(mute_id)
        self.wake()
        return found

    def mutes(self, include_expired: bool = False) -> list[dict[str, Any]]:
        return self.mute_list.listing(include_expired)

    # -- views ---------------------------------------------------------------------------
    def current_alerts(self) -> list[dict[str, Any]]:
        now = self._clock()
        out = []
        for f in self.book.firing():
            alert = self._alert(f)
            receivers = [r.receiver.name for r in self.router.match(alert.labels)]
            out.append({**alert.to_dict(), "receivers": receivers, "muted": self.muted(alert.labels, now)})
        return out
