"""Grouping stage: alerts of a route split into groups by ``group_by`` labels, each with its
own timer (``group_wait`` for a new group, then ``group_interval``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from alerts.config import RouteConfig
from alerts.nflog import NotificationLog
from alerts.payloads import Alert
from alerts.routing import Route


@dataclass
class Group:
    key: str
    route: Route
    labels: dict[str, str]
    alerts: dict[str, Alert] = field(default_factory=dict)
    next_flush: float = 0.0

    @property
    def receiver(self) -> str:
        return self.route.receiver.name


def group_labels(route: RouteConfig, labels: dict[str, str]) -> dict[str, str]:
    """The labels that name an alert's group on ``route``.

    >>> route = RouteConfig.model_validate({"receiver": "r", "group_by": ["model"]})
    >>> group_labels(route, {"model": "fraud", "severity": "critical"})
    {'model': 'fraud'}
    """
    if "..." in route.group_by:
        return dict(labels)
    return {k: labels[k] for k in route.group_by if k in labels}


def group_key(route: Route, labels: dict[str, str]) -> str:
    """The key of the group on ``route`` named by ``labels`` (its ``group_labels``)."""
    return f"{route.index}:{route.receiver.name}:" + json.dumps(labels, sort_keys=True, separators=(",", ":"))


class Groups:
    """The open groups of the grouped receivers."""

    def __init__(self, nflog: NotificationLog) -> None:
        self.nflog = nflog
        self.groups: dict[str, Group] = {}

    def add(self, alert: Alert, routes: list[Route], now: float) -> None:
        """Put one alert transition into its groups."""
        for route in routes:
            if not route.receiver.grouped:
                continue  # tracked by the Alertmanager stage
            labels = group_labels(route.cfg, alert.labels)
            key = group_key(route, labels)
            group = self.groups.get(key)
            if group is None:
                if alert.resolved and key not in self.nflog:
                    continue  # resolved before anyone heard of it
                group = Group(key, route, labels, next_flush=now + route.cfg.group_wait)
                self.groups[key] = group
            group.alerts[alert.fingerprint] = alert

    def refresh(self, alert: Alert) -> None:
        """Fresh evidence for the next notification; no notification by itself."""
        for group in self.groups.values():
            if alert.fingerprint in group.alerts:
                group.alerts[alert.fingerprint] = alert

    def due(self, now: float) -> list[Group]:
        return [g for g in self.groups.values() if now >= g.next_flush]

    def drop_empty(self) -> None:
        for key in [k for k, g in self.groups.items() if not g.alerts]:
            del self.groups[key]

    def next_flush(self) -> float | None:
        return min((g.next_flush for g in self.groups.values()), default=None)
