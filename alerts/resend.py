"""Alertmanager stage: each alert recorded as it fires and resolves, and the firing set
re-sent every ``resend_interval`` with ``endsAt`` four intervals ahead (so an Alertmanager
that stops hearing from mlvigil resolves them on its own). Grouping, silences and inhibition
are Alertmanager's job there.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from alerts.nflog import stable_hash
from alerts.payloads import Alert
from alerts.receivers.alertmanager import AlertmanagerIntegration
from mlvigil.core.outbox import Dispatcher, NewMessage


class AlertmanagerStage:
    def __init__(
        self, dispatcher: Dispatcher, receivers: list[AlertmanagerIntegration], clock: Callable[[], float]
    ) -> None:
        self.dispatcher = dispatcher
        self.receivers = {r.name: r for r in receivers}
        self._clock = clock
        # One lock over recording and the firing set, shared with the re-send: a re-send can
        # then never carry an alert as firing after its resolution was recorded.
        self.lock = threading.Lock()
        self._firing: dict[str, Alert] = {}  # fingerprint -> alert
        self._routes: dict[str, list[str]] = {}  # fingerprint -> Alertmanager receivers
        self._next_resend: dict[str, float] = {}

    def record(self, alert: Alert, transition: str, names: list[str]) -> None:
        """Record what Alertmanagers must hear now (call with ``lock`` held)."""
        if not names or transition not in ("fired", "resolved"):
            return
        messages = []
        for name in names:
            receiver = self.receivers[name]
            for target in receiver.targets:
                messages.append(
                    NewMessage(
                        id=stable_hash(target, alert.fingerprint, alert.starts_at, transition),
                        target=target,
                        payload={
                            "alerts": [alert.postable(ends_at=self._clock() + 4 * receiver.resend_interval)]
                        },
                        # One order per Alertmanager: a resolve never overtakes a re-send.
                        order_key=target,
                        meta={"kind": "alert", "transition": transition, "fingerprint": alert.fingerprint},
                    )
                )
        self.dispatcher.record(messages)

    def track(self, alert: Alert, names: list[str]) -> None:
        """Keep the firing set current (call with ``lock`` held)."""
        if not names:
            return
        if alert.resolved:
            self._firing.pop(alert.fingerprint, None)
            self._routes.pop(alert.fingerprint, None)
        else:
            self._firing[alert.fingerprint] = alert
            self._routes[alert.fingerprint] = names

    def next_resend(self) -> float | None:
        return min(self._next_resend.values(), default=None)

    def resend(self, now: float) -> None:
        for name, receiver in self.receivers.items():
            interval = receiver.resend_interval
            due = self._next_resend.get(name)
            if due is None:
                self._next_resend[name] = now + interval
                continue
            if now < due:
                continue
            self._next_resend[name] = now + interval
            with self.lock:
                alerts = [a for fp, a in self._firing.items() if name in self._routes.get(fp, [])]
                if not alerts:
                    continue
                epoch = int(now // interval)
                payload = {"alerts": [a.postable(ends_at=now + 4 * interval) for a in alerts]}
                self.dispatcher.record(
                    [
                        NewMessage(
                            id=stable_hash(target, "resend", epoch),
                            target=target,
                            payload=payload,
                            order_key=target,
                            meta={"kind": "resend", "alerts": len(alerts)},
                            ttl=interval,
                        )
                        for target in receiver.targets
                    ]
                )
