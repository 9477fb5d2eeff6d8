"""Retraining hooks: policies that turn Findings into Kubeflow Pipelines runs, Argo Workflows
or signed webhooks, at most one in flight per model, through the durable outbox.

``build(cfg, ctx)`` returns the component to run and appends its API routes to ``ctx.routes``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from retrain_hooks.config import RetrainConfig

if TYPE_CHECKING:
    from mlvigil.context import ServiceContext
    from retrain_hooks.service import RetrainService

__all__ = ["RetrainConfig", "build"]


def build(cfg: RetrainConfig | dict[str, Any], ctx: ServiceContext) -> list[RetrainService]:
    from retrain_hooks.api import routes
    from retrain_hooks.service import RetrainService

    config = cfg if isinstance(cfg, RetrainConfig) else RetrainConfig.model_validate(cfg)
    service = RetrainService(config, ctx.store, ctx.book)
    ctx.routes.extend(routes(service))
    ctx.services["retrain"] = service
    return [service]
