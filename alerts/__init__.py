"""Alerts: the Finding -> alert lifecycle, routing, receivers and the durable outbox.

``build(cfg, ctx)`` returns the component to run and appends its API routes to ``ctx.routes``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from alerts.config import AlertsConfig

if TYPE_CHECKING:
    from alerts.pipeline import AlertService
    from mlvigil.context import ServiceContext

__all__ = ["AlertsConfig", "build"]


def build(cfg: AlertsConfig | dict[str, Any], ctx: ServiceContext) -> list[AlertService]:
    """The alerts component, subscribed to the FindingBook, with its routes on ``ctx.routes``."""
    from alerts.api import routes
    from alerts.pipeline import AlertService

    config = cfg if isinstance(cfg, AlertsConfig) else AlertsConfig.model_validate(cfg)
    service = AlertService(
        config,
        ctx.store,
        ctx.book,
        external_url=ctx.config.server.external_url,
        grafana_url=ctx.config.server.grafana_url,
        registry=ctx.telemetry.registry,
    )
    ctx.routes.extend(routes(service))
    ctx.services["alerts"] = service
    return [service]
