"""Delivery metrics of the alerts outbox (``mlvigil_alerts_delivery_*``)."""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Histogram

from mlvigil.core.outbox import DELIVERED, Message


class DeliveryMetrics:
    """Observes every attempt's result (a dispatcher result hook)."""

    def __init__(self, registry: Any) -> None:
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

    def observe(self, msg: Message) -> None:
        last = msg.last_attempt
        self.attempts.labels(target=msg.target, outcome=last.outcome if last else "none").inc()
        if msg.state == DELIVERED and msg.delivered_at:
            self.latency.labels(target=msg.target).observe(max(0.0, msg.delivered_at - msg.created_at))
