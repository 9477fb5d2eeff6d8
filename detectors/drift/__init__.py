"""Drift detection: data, prediction, performance and LLM traffic drift.

Layers, bottom up: ``stats`` (one two-sample test per module), ``profile`` (reference
statistics computed once), ``multiple`` (correction across features), ``compare`` (one
window against a profile), ``streaming`` (sequential detectors behind one base class, and
the streams a monitor feeds them), ``monitors`` (a monitor's parts: row sources per kind,
reference lifecycle, windowed / performance / streaming evaluators, the registry),
``monitor`` (a monitor as a Detector, assembling those parts), ``api``
(``/api/v1/monitors``) and ``cli`` (``mlvigil drift``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

# Nothing heavy at import: ``mlvigil drift --help`` imports this package (its config pulls
# in pydantic and the service's config).
if TYPE_CHECKING:
    from detectors.base import Detector
    from detectors.drift.calibration import Calibrations
    from detectors.drift.config import DriftConfig
    from mlvigil.context import ServiceContext


def build(config: DriftConfig, ctx: ServiceContext) -> list[Detector | Calibrations]:
    """Monitors from the config and from the store; routes for ``/api/v1/monitors``; the
    calibration worker (a component: stopped with the service)."""
    from detectors.drift.api import MonitorRoutes
    from detectors.drift.calibration import Calibrations
    from detectors.drift.metrics import DriftMetrics
    from detectors.drift.monitors.registry import MonitorRegistry

    if not config.enabled:
        return []
    calibrations = Calibrations(ctx.store, workers=config.calibration_workers)
    registry = MonitorRegistry(config, ctx, DriftMetrics(ctx.telemetry.registry), calibrations)
    detectors = registry.load()
    ctx.routes.extend(MonitorRoutes(registry).routes())
    ctx.services["drift"] = registry
    return [*detectors, calibrations]


__all__ = ["build"]
