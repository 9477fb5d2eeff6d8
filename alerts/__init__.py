"""Alerts: the Finding -> alert lifecycle, routing, receivers and the durable outbox.

``alerts.plugin.PLUGIN`` joins it to the service (section ``alerts``).
"""

from __future__ import annotations

from alerts.config import AlertsConfig

__all__ = ["AlertsConfig"]
