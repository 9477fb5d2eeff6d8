"""The ``retrain`` section's plugin: the retrain service and its routes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlvigil.core.plugin import Plugin

if TYPE_CHECKING:
    from mlvigil.core.context import ServiceContext
    from retrain_hooks.config import RetrainConfig
    from retrain_hooks.service import RetrainService


def build(config: RetrainConfig, ctx: ServiceContext) -> list[RetrainService]:
    from retrain_hooks.api import routes
    from retrain_hooks.service import RetrainService

    service = RetrainService(config, ctx.store, ctx.book)
    ctx.routes.extend(routes(service))
    ctx.services["retrain"] = service
    return [service]


PLUGIN = Plugin(
    name="retrain", section=("retrain",), config="retrain_hooks.config:RetrainConfig", build=build
)
