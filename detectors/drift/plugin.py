"""The ``detectors.drift`` section's plugin: monitors from the config and from the store,
routes for ``/api/v1/monitors`` and the calibration worker (a component: stopped with the service)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from detectors.drift.api import MonitorRoutes
from detectors.drift.calibration import Calibrations
from detectors.drift.config import DriftConfig
from detectors.drift.metrics import DriftMetrics
from detectors.drift.monitors.registry import MonitorRegistry, MonitorSync
from mlvigil.core.plugin import Plugin

if TYPE_CHECKING:
    from mlvigil.core.context import ServiceContext


def build(config: DriftConfig, ctx: ServiceContext) -> list[Any]:
    if not config.enabled:
        return []
    calibrations = Calibrations(ctx.store, workers=config.calibration_workers)
    registry = MonitorRegistry(config, ctx, DriftMetrics(ctx.telemetry.registry), calibrations)
    detectors = registry.load()
    ctx.routes.extend(MonitorRoutes(registry).routes())
    ctx.services["drift"] = registry
    # Replicas on a shared store follow the monitors added through the others' APIs.
    shared = getattr(ctx.store, "coordinator", None) is not None
    return [*detectors, calibrations, *([MonitorSync(registry)] if shared else [])]


PLUGIN = Plugin(name="drift", section=("detectors", "drift"), config=DriftConfig, build=build)
