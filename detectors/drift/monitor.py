"""A drift monitor as a Detector: a thin orchestrator over the parts of ``monitors/``.

Each evaluation makes sure the reference is ready (``monitors.reference``), then either
tests the current window (``monitors.windowed`` / ``monitors.performance``) or feeds the
rows that arrived since the last one to a sequential detector (``monitors.streaming``).
Rows come from the monitor kind's ``RowSource`` (``monitors.rows``). The monitor reports
one Finding (key = monitor name) while it drifts; the engine fires, updates and resolves it.

Examples
--------
>>> import json, tempfile
>>> import numpy as np
>>> from detectors.drift.config import DriftConfig, MonitorConfig
>>> from mlvigil.core.records import RecordBatch
>>> from mlvigil.core.store.duckdb import DuckDBStore
>>> cfg = MonitorConfig.model_validate(
...     {"name": "fraud", "model": "m", "reference": {"dataset": True}, "window": {"size": 300}}
... )
>>> det = MonitorDetector(cfg.resolved(DriftConfig().defaults))
>>> store = DuckDBStore(tempfile.mkdtemp())
>>> det.evaluate(store, now=1000.0), det.last["status"]
([], 'waiting for reference')
>>> rng = np.random.default_rng(0)
>>> det.set_dataset({"amount": rng.normal(50, 10, 2000).tolist()})
>>> batch = RecordBatch()
>>> for i, amount in enumerate(rng.normal(65, 10, 300)):  # a shifted window
...     batch.add("inferences", ts=900.0 + i / 10, model="m", features=json.dumps({"amount": amount}))
>>> store.append(batch)
>>> [f.evidence["drifted_features"] for f in det.evaluate(store, now=1000.0)]
[['amount']]
>>> store.close()

References
----------
The windowed tests: ``detectors.drift.stats`` (each module names its paper); the min-P
correction across features: P. H. Westfall and S. S. Young, "Resampling-based multiple
testing", Wiley 1993; the sequential detectors: ``detectors.drift.streaming``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from detectors.drift.calibration import Calibrations
from detectors.drift.config import MonitorConfig
from detectors.drift.metrics import DriftMetrics
from detectors.drift.monitors.context import MonitorContext
from detectors.drift.monitors.performance import EstimatedPerformanceEvaluator, PerformanceEvaluator
from detectors.drift.monitors.reference import REFERENCE_DOCS, Reference
from detectors.drift.monitors.rows import is_columnar, source_for
from detectors.drift.monitors.streaming import DistributionStreaming, ErrorStreaming, StreamingEvaluator
from detectors.drift.monitors.windowed import DistributionEvaluator, WindowEvaluator
from detectors.drift.sources import Columns
from detectors.drift.workers import StatisticsWorkers
from detectors.estimation import EstimationError
from mlvigil.core.detector import Detector
from mlvigil.core.findings import Finding
from mlvigil.core.store import Store


@dataclass(frozen=True)
class MonitorKind:
    """How monitors of one kind evaluate: by window, and (when they may) streaming."""

    window: type[WindowEvaluator]
    streaming: type[StreamingEvaluator] | None = None


#: The evaluators of each monitor kind (its rows: ``monitors.rows.SOURCES``).
KINDS: Mapping[str, MonitorKind] = {
    "data": MonitorKind(DistributionEvaluator, DistributionStreaming),
    "prediction": MonitorKind(DistributionEvaluator, DistributionStreaming),
    "llm": MonitorKind(DistributionEvaluator, DistributionStreaming),
    "performance": MonitorKind(PerformanceEvaluator, ErrorStreaming),
    "estimated_performance": MonitorKind(EstimatedPerformanceEvaluator),
}


class MonitorDetector(Detector):
    """One configured monitor.

    Parameters
    ----------
    config
        The monitor, with defaults already applied (``MonitorConfig.resolved``).
    metrics
        Prometheus metrics to publish each evaluation to (optional).
    calibrations
        Where min-P calibrations come from; None computes them inside the evaluation.
    workers
        Worker processes that compute the windows' statistics; None computes them in the
        evaluating thread.
    """

    def __init__(
        self,
        config: MonitorConfig,
        metrics: DriftMetrics | None = None,
        calibrations: Calibrations | None = None,
        workers: StatisticsWorkers | None = None,
    ) -> None:
        assert config.window is not None, "resolve the monitor's defaults first"
        self.config = config
        self.calibrations = calibrations
        self.name = f"drift:{config.name}"
        self.metrics = metrics
        kind = KINDS[config.kind]
        # Columnar monitors need only the profile of a reference: it is kept in the store.
        reference = Reference(
            config, fit=lambda columns: self.windowed.fit(columns), persist=is_columnar(config)
        )
        self.ctx = MonitorContext(
            config, metrics, calibrations, reference, source_for(config, reference), workers=workers
        )
        self.windowed = kind.window(self.ctx)
        self.streaming: StreamingEvaluator | None = None
        if config.streaming is not None:
            assert kind.streaming is not None, f"kind {config.kind} evaluates windows only"
            self.streaming = kind.streaming(self.ctx)

    @property
    def reference(self) -> Reference:
        return self.ctx.reference

    @property
    def last(self) -> dict[str, Any]:
        """The last evaluation, as ``GET /api/v1/monitors/{name}`` shows it."""
        return self.ctx.last

    @last.setter
    def last(self, value: dict[str, Any]) -> None:
        self.ctx.last = value

    def set_dataset(self, columns: Columns) -> None:
        """A reference dataset posted through the API; it replaces the current reference."""
        self.ctx.reference.set_dataset(columns)

    def evaluate(self, store: Store, now: float) -> list[Finding]:
        ctx = self.ctx
        try:
            ready = ctx.reference.ensure(store, now, ctx.source)
        except EstimationError as exc:
            # A traffic reference the estimator cannot use: say why, try again next time.
            ctx.error(f"reference: {exc}", now)
            return []
        if not ready:
            error = ctx.reference.error
            ctx.last = (
                {"status": "error", "error": error, "at": now}
                if error
                else {"status": "waiting for reference", "at": now}
            )
            ctx.skipped("no_reference")
            return []
        if self.streaming is not None:
            return self.streaming.evaluate(store, now)
        return self.windowed.evaluate(store, now)

    def status(self) -> dict[str, Any]:
        ref = self.ctx.reference
        return {
            "reference_rows": ref.rows,
            "reference_built_at": ref.built_at,
            "reference_profile": ref.origin,
            **self.ctx.last,
        }


__all__ = ["KINDS", "REFERENCE_DOCS", "MonitorDetector", "MonitorKind"]
