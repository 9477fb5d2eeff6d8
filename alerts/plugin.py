"""The ``alerts`` section's plugin: the alert service, subscribed to the FindingBook, and its routes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlvigil.core.plugin import Plugin

if TYPE_CHECKING:
    from alerts.config import AlertsConfig
    from alerts.pipeline import AlertService
    from mlvigil.core.context import ServiceContext


def build(config: AlertsConfig, ctx: ServiceContext) -> list[AlertService]:
    from alerts.api import routes
    from alerts.pipeline import AlertService

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


PLUGIN = Plugin(name="alerts", section=("alerts",), config="alerts.config:AlertsConfig", build=build)
