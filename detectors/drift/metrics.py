"""Prometheus metrics of drift monitors, per monitor and feature."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from mlvigil.core.metrics import OwnedSeries


class DriftMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.score = Gauge(
            "mlvigil_drift_score",
            "Drift distance of a feature in the last window (test's scale).",
            ["monitor", "feature", "test"],
            registry=registry,
        )
        self.p_value = Gauge(
            "mlvigil_drift_p_value",
            "Corrected p-value of a feature in the last window.",
            ["monitor", "feature", "test"],
            registry=registry,
        )
        self.drifted = Gauge(
            "mlvigil_drift_drifted",
            "1 when the feature (or, for feature '', the monitor) drifted.",
            ["monitor", "feature"],
            registry=registry,
        )
        self.window_rows = Gauge(
            "mlvigil_drift_window_rows",
            "Rows in the last reference and current window.",
            ["monitor", "sample"],
            registry=registry,
        )
        self.evaluations = Counter(
            "mlvigil_drift_evaluations",
            "Monitor evaluations by outcome.",
            ["monitor", "outcome"],
            registry=registry,
        )
        self.estimate = Gauge(
            "mlvigil_performance_estimate",
            "Estimated performance in the last window (value: estimate, lower, upper, "
            "reference_lower, reference_upper, realised once labels arrived).",
            ["monitor", "metric", "value"],
            registry=registry,
        )
        self.calibration_state = Gauge(
            "mlvigil_drift_calibration_pending",
            "1 while a minp monitor's calibration is being computed (or failed) and its verdicts "
            "use Bonferroni; 0 once calibrated.",
            ["monitor"],
            registry=registry,
        )
        self._series = OwnedSeries()

    def publish(
        self, monitor: str, drifted: bool, n_reference: int, n_current: int, features: list[dict[str, Any]]
    ) -> None:
        self.forget(monitor)
        series = self._series
        for f in features:
            labels = (monitor, str(f["feature"]), str(f.get("test", "")))
            series.set(monitor, self.score, labels, float(f.get("distance") or 0.0))
            p = f.get("adjusted_p_value", f.get("p_value"))
            if p is not None:
                series.set(monitor, self.p_value, labels, float(p))
            series.set(monitor, self.drifted, (monitor, str(f["feature"])), 1.0 if f.get("drifted") else 0.0)
        series.set(monitor, self.drifted, (monitor, ""), 1.0 if drifted else 0.0)
        series.set(monitor, self.window_rows, (monitor, "reference"), n_reference)
        series.set(monitor, self.window_rows, (monitor, "current"), n_current)
        self.evaluations.labels(monitor, "drift" if drifted else "no_drift").inc()

    def publish_estimates(self, monitor: str, values: dict[str, dict[str, float | None]]) -> None:
        """After ``publish``: {metric: {estimate, lower, upper, ...}}; None values are left out."""
        for metric, named in values.items():
            for name, value in named.items():
                if value is None or value != value:
                    continue
                self._series.set(monitor, self.estimate, (monitor, metric, name), float(value))

    def calibration(self, monitor: str, state: str) -> None:
        """After ``publish``: the monitor's min-P calibration state (``ready`` or not)."""
        self._series.set(monitor, self.calibration_state, (monitor,), 0.0 if state == "ready" else 1.0)

    def skipped(self, monitor: str, reason: str) -> None:
        self.evaluations.labels(monitor, reason).inc()

    def forget(self, monitor: str) -> None:
        self._series.forget(monitor)
