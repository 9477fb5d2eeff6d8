"""The alert lifecycle: Findings become alerts, alerts are routed, grouped, muted, notified,
repeated and resolved, and every notification goes through the durable outbox.

Two paths, like Prometheus and Alertmanager:

* Alertmanager receivers get each alert as it fires and resolves (recorded in the outbox by
  the Finding listener itself, on the detector thread), and every firing alert again each
  ``resend_interval`` with ``endsAt`` a few intervals ahead. Grouping, silences and
  inhibition are Alertmanager's job there.
* Webhook and Slack receivers get grouped notifications, built here as Alertmanager would:
  a new group waits ``group_wait``, changes wait for the next ``group_interval``, a group
  still firing is repeated every ``repeat_interval``, and alerts that match an active mute
  are left out. A notification log (``alert_nflog``, one document per group, as
  Alertmanager's nflog) remembers what each group last said, so after a restart nothing
  already sent is sent again and nothing that resolved meanwhile is forgotten: the firing
  set comes back from the FindingBook, the resolved ones from the store's Findings.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from alerts.config import AlertsConfig, ReceiverConfig, RouteConfig
from alerts.matchers import Matcher, all_match, matcher_from_obj, parse_matcher
from alerts.payloads import Alert, alert_from_finding, slack_message, webhook_payload
from alerts.receivers import alertmanager_sender, slack_sender, webhook_sender
from mlvigil.aio import stop_task, wait_event
from mlvigil.finding_book import FindingBook
from mlvigil.findings import Finding
from mlvigil.outbox import Dispatcher, NewMessage, Outbox
from mlvigil.store import Store

log = logging.getLogger(__name__)

OUTBOX = "alerts_outbox"
NFLOG = "alert_nflog"
MUTES = "alert_mutes"


def _hash(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


@dataclass
class _Route:
    index: int
    cfg: RouteConfig
    matchers: list[Matcher]
    receiver: ReceiverConfig


@dataclass
class Group:
    key: str
    route: _Route
    labels: dict[str, str]
    alerts: dict[str, Alert] = field(default_factory=dict)
    next_flush: float = 0.0

    @property
    def receiver(self) -> str:
        return self.route.receiver.name


@dataclass
class Mute:
    id: str
    matchers: list[Matcher]
    starts_at: float
    ends_at: float
    comment: str = ""
    created_by: str = ""

    def active(self, now: float) -> bool:
        return self.starts_at <= now < self.ends_at

    def to_dict(self, now: float | None = None) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id,
            "matchers": [str(m) for m in self.matchers],
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
            "comment": self.comment,
            "created_by": self.created_by,
        }
        if now is not None:
            d["active"] = self.active(now)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Mute:
        return cls(
            id=d["id"],
            matchers=[parse_matcher(m) for m in d["matchers"]],
            starts_at=float(d["starts_at"]),
            ends_at=float(d["ends_at"]),
            comment=d.get("comment", ""),
            created_by=d.get("created_by", ""),
        )


class AlertService:
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
        self.cfg = cfg
        self.store = store
        self.book = book
        self.external_url = external_url.rstrip("/")
        self.grafana_url = grafana_url
        self._clock = clock
        self.outbox = Outbox(store, OUTBOX, clock=clock)
        self.dispatcher = Dispatcher(self.outbox, name="alerts")
        self._session: aiohttp.ClientSession | None = None
        self._receivers = {r.name: r for r in cfg.receivers}
        self._routes = [
            _Route(i, rc, [parse_matcher(m) for m in rc.matchers], self._receivers[rc.receiver])
            for i, rc in enumerate(cfg.effective_routes())
        ]
        self._am_targets: dict[str, list[str]] = {}
        for r in cfg.receivers:
            self._add_targets(r)
        self._lock = threading.Lock()
        self._inbox: list[tuple[Alert, str]] = []
        self.groups: dict[str, Group] = {}
        self._nflog: dict[str, dict[str, Any]] = {}
        self._mutes: dict[str, Mute] = {}
        self._am_firing: dict[str, Alert] = {}  # fingerprint -> alert, for Alertmanager re-sends
        self._am_routes: dict[str, list[str]] = {}  # fingerprint -> Alertmanager receivers
        self._next_resend: dict[str, float] = {}
        self._event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._metrics = _Metrics(registry) if registry is not None else None
        if self._metrics:
            self.dispatcher.on_result(self._metrics.observe)
        book.subscribe(self.on_finding)

    # -- wiring --------------------------------------------------------------------------
    def _session_of(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("alerts service is not started")
        return self._session

    def _add_targets(self, r: ReceiverConfig) -> None:
        if r.alertmanager:
            targets = []
            for i, url in enumerate(r.alertmanager.urls):
                target = f"{r.name}#{i}"
                self.dispatcher.add_target(
                    target, alertmanager_sender(self._session_of, url, r.alertmanager.bearer_token), r.retry
                )
                targets.append(target)
            self._am_targets[r.name] = targets
        elif r.webhook:
            self.dispatcher.add_target(
                r.name, webhook_sender(self._session_of, r.webhook.url, r.webhook.secret), r.retry
            )
        elif r.slack:
            self.dispatcher.add_target(r.name, slack_sender(self._session_of, r.slack.webhook_url), r.retry)

    def _matching_routes(self, labels: dict[str, str]) -> list[_Route]:
        out = []
        for route in self._routes:
            if all_match(route.matchers, labels):
                out.append(route)
                if not route.cfg.continue_:
                    break
        return out

    # -- the Finding listener (detector thread) ------------------------------------------
    def on_finding(self, finding: Finding, transition: str) -> None:
        """Record what Alertmanagers must hear now, durably; hand the rest to the loop."""
        alert = alert_from_finding(finding, self.external_url, self.cfg.dashboard_url, self.grafana_url)
        routes = self._matching_routes(alert.labels)
        am_receivers = [r.receiver.name for r in routes if r.receiver.alertmanager]
        # One lock over recording and the firing set, shared with the re-send: a re-send can
        # then never carry an alert as firing after its resolution was recorded.
        with self._lock:
            if am_receivers and transition in ("fired", "resolved"):
                messages = []
                for name in am_receivers:
                    resend = self._receivers[name].alertmanager.resend_interval  # type: ignore[union-attr]
                    for target in self._am_targets[name]:
                        messages.append(
                            NewMessage(
                                id=_hash(target, alert.fingerprint, alert.starts_at, transition),
                                target=target,
                                payload={"alerts": [alert.postable(ends_at=self._clock() + 4 * resend)]},
                                # One order per Alertmanager: a resolve never overtakes a re-send.
                                order_key=target,
                                meta={
                                    "kind": "alert",
                                    "transition": transition,
                                    "fingerprint": alert.fingerprint,
                                },
                            )
                        )
                self.dispatcher.record(messages)
            self._track_am(alert, am_receivers)
            self._inbox.append((alert, transition))
        self._wake()

    def _track_am(self, alert: Alert, am_receivers: list[str]) -> None:
        if not am_receivers:
            return
        if alert.resolved:
            self._am_firing.pop(alert.fingerprint, None)
            self._am_routes.pop(alert.fingerprint, None)
        else:
            self._am_firing[alert.fingerprint] = alert
            self._am_routes[alert.fingerprint] = am_receivers

    def _wake(self) -> None:
        loop, event = self._loop, self._event
        if loop is not None and event is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(event.set)

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        self._stopping = False
        self._session = aiohttp.ClientSession()
        await asyncio.to_thread(self._restore)
        await self.dispatcher.start()
        self._task = asyncio.create_task(self._run(), name="alerts-lifecycle")

    async def stop(self) -> None:
        # The flag ends the loop at its next wake even if a cancellation were lost.
        self._stopping = True
        self._wake()
        await stop_task(self._task)
        self._task = None
        await self.dispatcher.stop()
        if self._session:
            await self._session.close()
            self._session = None

    def _restore(self) -> None:
        """Rebuild groups from the FindingBook and the notification log after a restart."""
        now = self._clock()
        self._nflog = {doc["key"]: doc for doc in self.store.list_docs(NFLOG).values() if "key" in doc}
        self._mutes = {}
        for doc in self.store.list_docs(MUTES).values():
            try:
                self._mutes[doc["id"]] = Mute.from_dict(doc)
            except (KeyError, ValueError):
                log.warning("ignoring unreadable mute %s", doc.get("id"))
        for f in self.book.firing():
            alert = alert_from_finding(f, self.external_url, self.cfg.dashboard_url, self.grafana_url)
            self._apply(alert, "restored", now)
            routes = self._matching_routes(alert.labels)
            with self._lock:
                self._track_am(alert, [r.receiver.name for r in routes if r.receiver.alertmanager])
        pending: dict[str, list[str]] = {}
        firing_now = {f.id for f in self.book.firing()}
        oldest = now
        for key, entry in self._nflog.items():
            gone = [fp for fp in entry.get("firing", []) if fp not in firing_now]
            if gone:
                pending[key] = gone
                oldest = min(oldest, float(entry["at"]))
        if pending:
            resolved = {
                f.id: f for f in self.store.findings(state="resolved", since=oldest - 1, limit=100_000)
            }
            for gone in pending.values():
                for fp in gone:
                    if fp in resolved:
                        alert = alert_from_finding(
                            resolved[fp], self.external_url, self.cfg.dashboard_url, self.grafana_url
                        )
                        self._apply(alert, "resolved", now)

    def _apply(self, alert: Alert, transition: str, now: float) -> None:
        """Put one alert transition into its groups (loop side)."""
        for route in self._matching_routes(alert.labels):
            receiver = route.receiver
            if receiver.alertmanager:
                continue  # tracked by the listener, under the lock
            labels = self._group_labels(route.cfg, alert.labels)
            key = f"{route.index}:{receiver.name}:" + json.dumps(
                labels, sort_keys=True, separators=(",", ":")
            )
            group = self.groups.get(key)
            if group is None:
                if alert.resolved and key not in self._nflog:
                    continue  # resolved before anyone heard of it
                group = Group(key, route, labels, next_flush=now + route.cfg.group_wait)
                self.groups[key] = group
            group.alerts[alert.fingerprint] = alert

    @staticmethod
    def _group_labels(route: RouteConfig, labels: dict[str, str]) -> dict[str, str]:
        if "..." in route.group_by:
            return dict(labels)
        return {k: labels[k] for k in route.group_by if k in labels}

    async def _run(self) -> None:
        assert self._event is not None
        while not self._stopping:
            self._event.clear()
            try:
                await asyncio.to_thread(self.tick)
            except Exception:
                log.exception("alerts lifecycle tick failed")
            await wait_event(self._event, self._sleep_for())

    def _sleep_for(self) -> float:
        now = self._clock()
        times = [g.next_flush for g in self.groups.values()] + list(self._next_resend.values())
        nxt = min(times, default=now + self.cfg.tick)
        return max(0.001, min(self.cfg.tick, nxt - now))

    def tick(self) -> None:
        """Take in new transitions, flush the groups that are due, re-send to Alertmanagers."""
        now = self._clock()
        with self._lock:
            inbox, self._inbox = self._inbox, []
        for alert, transition in inbox:
            if transition == "updated":
                # Fresh evidence for the next notification; no notification by itself.
                for group in self.groups.values():
                    if alert.fingerprint in group.alerts:
                        group.alerts[alert.fingerprint] = alert
                continue
            self._apply(alert, transition, now)
        for key, group in list(self.groups.items()):
            if now >= group.next_flush:
                self._flush(group, now)
                if not group.alerts:
                    del self.groups[key]
        self._resend(now)

    def muted(self, labels: dict[str, str], now: float) -> bool:
        return any(m.active(now) and all_match(m.matchers, labels) for m in list(self._mutes.values()))

    def _flush(self, group: Group, now: float) -> None:
        """One Alertmanager-style notification decision for a group."""
        receiver = group.route.receiver
        prev = self._nflog.get(group.key, {"firing": [], "at": 0.0, "seq": 0})
        prev_firing = set(prev["firing"])
        firing = {fp for fp, a in group.alerts.items() if not a.resolved and not self.muted(a.labels, now)}
        resolved = {fp for fp, a in group.alerts.items() if a.resolved and fp in prev_firing}
        send_resolved = (receiver.webhook or receiver.slack).send_resolved  # type: ignore[union-attr]
        notify = bool(firing - prev_firing) or bool(resolved and send_resolved)
        notify = notify or bool(firing and now >= float(prev["at"]) + group.route.cfg.repeat_interval)
        if not firing and resolved and not send_resolved:
            notify = False
        if notify:
            shown = [group.alerts[fp] for fp in sorted(firing)]
            if send_resolved:
                shown += [group.alerts[fp] for fp in sorted(resolved)]
            seq = int(prev.get("seq", 0)) + 1
            msg_id = _hash(receiver.name, group.key, seq)
            payload = webhook_payload(
                receiver.name,
                group.key,
                group.labels,
                shown,
                self.external_url,
                receiver.webhook.max_alerts if receiver.webhook else 0,
            )
            body = slack_message(payload, shown) if receiver.slack else payload
            self.dispatcher.record(
                [
                    NewMessage(
                        id=msg_id,
                        target=receiver.name,
                        payload=body,
                        order_key=f"{receiver.name}:{group.key}",
                        meta={
                            "kind": "group",
                            "group_key": group.key,
                            "status": payload["status"],
                            "firing": sorted(firing),
                            "resolved": sorted(resolved),
                        },
                    )
                ]
            )
            entry = {"firing": sorted(firing), "at": now, "seq": seq, "receiver": receiver.name}
            self._nflog[group.key] = entry
            self.store.put_doc(NFLOG, _hash(group.key), {**entry, "key": group.key})
        elif resolved or (not firing and prev_firing):
            # Everything it had said firing is gone: forget it, so it does not repeat.
            entry = {
                "firing": sorted(firing),
                "at": float(prev["at"]),
                "seq": int(prev.get("seq", 0)),
                "receiver": receiver.name,
            }
            self._nflog[group.key] = entry
            self.store.put_doc(NFLOG, _hash(group.key), {**entry, "key": group.key})
        for fp in [fp for fp, a in group.alerts.items() if a.resolved]:
            del group.alerts[fp]
        group.next_flush = now + group.route.cfg.group_interval

    def _resend(self, now: float) -> None:
        for name, targets in self._am_targets.items():
            cfg = self._receivers[name].alertmanager
            assert cfg is not None
            due = self._next_resend.get(name)
            if due is None:
                self._next_resend[name] = now + cfg.resend_interval
                continue
            if now < due:
                continue
            self._next_resend[name] = now + cfg.resend_interval
            with self._lock:
                alerts = [a for fp, a in self._am_firing.items() if name in self._am_routes.get(fp, [])]
                if not alerts:
                    continue
                epoch = int(now // cfg.resend_interval)
                payload = {"alerts": [a.postable(ends_at=now + 4 * cfg.resend_interval) for a in alerts]}
                self.dispatcher.record(
                    [
                        NewMessage(
                            id=_hash(target, "resend", epoch),
                            target=target,
                            payload=payload,
                            order_key=target,
                            meta={"kind": "resend", "alerts": len(alerts)},
                            ttl=cfg.resend_interval,
                        )
                        for target in targets
                    ]
                )

    # -- mutes ---------------------------------------------------------------------------
    def add_mute(
        self,
        matchers: list[Any],
        *,
        duration: float | None = None,
        ends_at: float | None = None,
        starts_at: float | None = None,
        comment: str = "",
        created_by: str = "",
    ) -> Mute:
        parsed = [matcher_from_obj(m) for m in matchers]
        if not parsed:
            raise ValueError("a mute needs at least one matcher")
        now = self._clock()
        start = now if starts_at is None else starts_at
        end = ends_at if ends_at is not None else start + (duration or self.cfg.default_mute_duration)
        if end <= start:
            raise ValueError("a mute must end after it starts")
        mute = Mute(uuid.uuid4().hex, parsed, start, end, comment, created_by)
        self.store.put_doc(MUTES, mute.id, mute.to_dict())
        self._mutes[mute.id] = mute
        self._wake()
        return mute

    def delete_mute(self, mute_id: str) -> bool:
        found = self._mutes.pop(mute_id, None) is not None
        self.store.delete_doc(MUTES, mute_id)
        self._wake()
        return found

    def mutes(self, include_expired: bool = False) -> list[dict[str, Any]]:
        now = self._clock()
        return [
            m.to_dict(now)
            for m in sorted(self._mutes.values(), key=lambda m: m.starts_at)
            if include_expired or m.ends_at > now
        ]

    # -- views ---------------------------------------------------------------------------
    def current_alerts(self) -> list[dict[str, Any]]:
        now = self._clock()
        out = []
        for f in self.book.firing():
            alert = alert_from_finding(f, self.external_url, self.cfg.dashboard_url, self.grafana_url)
            receivers = [r.receiver.name for r in self._matching_routes(alert.labels)]
            out.append({**alert.to_dict(), "receivers": receivers, "muted": self.muted(alert.labels, now)})
        return out


class _Metrics:
    def __init__(self, registry: Any) -> None:
        from prometheus_client import Counter, Histogram

        self.attempts = Counter(
            "mlvigil_alerts_delivery_attempts",
            "Notification delivery attempts by target and outcome.",
            ["target", "outcome"],
            registry=registry,
        )
        self.latency = Histogram(
            "mlvigil_alerts_delivery_latency_seconds",
            "From recording a notification to its delivery.",
            ["target"],
            registry=registry,
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 30, 60, 300, 3600),
        )

    def observe(self, doc: dict[str, Any]) -> None:
        last = doc["attempts"][-1] if doc["attempts"] else {"outcome": "none"}
        self.attempts.labels(target=doc["target"], outcome=last["outcome"]).inc()
        if doc["state"] == "delivered" and doc.get("delivered_at"):
            self.latency.labels(target=doc["target"]).observe(
                max(0.0, doc["delivered_at"] - doc["created_at"])
            )
