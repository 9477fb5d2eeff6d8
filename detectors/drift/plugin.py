"""The ``detectors.drift`` section's plugin: monitors from the config and from the store,
routes for ``/api/v1/monitors``, the calibration and statistics workers (components: stopped
with the service)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlvigil.core.plugin import Command, Plugin

if TYPE_CHECKING:
    from detectors.drift.config import DriftConfig
    from mlvigil.core.context import ServiceContext


def build(config: DriftConfig, ctx: ServiceContext) -> list[Any]:
    from detectors.drift.api import MonitorRoutes
    from detectors.drift.calibration import Calibrations
    from detectors.drift.metrics import DriftMetrics
    from detectors.drift.monitors.registry import MonitorRegistry, MonitorSync
    from detectors.drift.workers import StatisticsWorkers

    if not config.enabled:
        return []
    calibrations = Calibrations(ctx.store, workers=config.calibration_workers)
    workers = (
        StatisticsWorkers(config.statistics_workers, config.statistics_timeout)
        if config.statistics_workers
        else None
    )
    registry = MonitorRegistry(config, ctx, DriftMetrics(ctx.telemetry.registry), calibrations, workers)
    detectors = registry.load()
    ctx.routes.extend(MonitorRoutes(registry).routes())
    ctx.services["drift"] = registry
    # Replicas on a shared store follow the monitors added through the others' APIs.
    shared = getattr(ctx.store, "coordinator", None) is not None
    return [
        *detectors,
        calibrations,
        *([workers] if workers else []),
        *([MonitorSync(registry)] if shared else []),
    ]


DRIFT = Command(
    "drift",
    "offline drift report for two CSV/Parquet files (exit 1 when drift is found)",
    "detectors.drift.cli:add_cli",
)

PLUGIN = Plugin(
    name="drift",
    section=("detectors", "drift"),
    config="detectors.drift.config:DriftConfig",
    build=build,
    commands=(DRIFT,),
)
