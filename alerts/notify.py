"""Notify stage: one Alertmanager-style decision per due group (new firing alerts, resolved
ones, or a repeat), recorded in the outbox and in the notification log."""

from __future__ import annotations

from collections.abc import Callable

from alerts.grouping import Group
from alerts.nflog import NflogEntry, NotificationLog, stable_hash
from alerts.payloads import webhook_payload
from mlvigil.core.outbox import Dispatcher, NewMessage


class GroupNotifier:
    def __init__(
        self,
        dispatcher: Dispatcher,
        nflog: NotificationLog,
        muted: Callable[[dict[str, str], float], bool],
        external_url: str,
    ) -> None:
        self.dispatcher = dispatcher
        self.nflog = nflog
        self.muted = muted
        self.external_url = external_url

    def flush(self, group: Group, now: float) -> None:
        receiver = group.route.receiver
        prev = self.nflog.get(group.key)
        prev_firing = set(prev.firing)
        firing = {fp for fp, a in group.alerts.items() if not a.resolved and not self.muted(a.labels, now)}
        resolved = {fp for fp, a in group.alerts.items() if a.resolved and fp in prev_firing}
        send_resolved = receiver.send_resolved
        notify = bool(firing - prev_firing) or bool(resolved and send_resolved)
        notify = notify or bool(firing and now >= prev.at + group.route.cfg.repeat_interval)
        if not firing and resolved and not send_resolved:
            notify = False
        if notify:
            shown = [group.alerts[fp] for fp in sorted(firing)]
            if send_resolved:
                shown += [group.alerts[fp] for fp in sorted(resolved)]
            seq = prev.seq + 1
            payload = webhook_payload(
                receiver.name, group.key, group.labels, shown, self.external_url, receiver.max_alerts
            )
            self.dispatcher.record(
                [
                    NewMessage(
                        id=stable_hash(receiver.name, group.key, seq),
                        target=receiver.name,
                        payload=receiver.encode(payload, shown),
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
            self.nflog.put(NflogEntry(group.key, sorted(firing), now, seq, receiver.name))
        elif resolved or (not firing and prev_firing):
            # Everything it had said firing is gone: forget it, so it does not repeat.
            self.nflog.put(NflogEntry(group.key, sorted(firing), prev.at, prev.seq, receiver.name))
        for fp in [fp for fp, a in group.alerts.items() if a.resolved]:
            del group.alerts[fp]
        group.next_flush = now + group.route.cfg.group_interval
