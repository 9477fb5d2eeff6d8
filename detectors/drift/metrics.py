"""Prometheus metrics of drift monitors, per monitor and feature."""

from __future__ import annotations

import contextlib
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge


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
        self._labels: dict[str, list[tuple[Gauge, tuple[str, ...]]]] = {}

    def publish(
        self, monitor: str, drifted: bool, n_reference: int, n_current: int, features: list[dict[str, Any]]
    ) -> None:
        self.forget(monitor)
        keep: list[tuple[Gauge, tuple[str, ...]]] = []
        for f in features:
            labels = (monitor, str(f["feature"]), str(f.get("test", "")))
            self.score.labels(*labels).set(float(f.get("distance") or 0.0))
            keep.append((self.score, labels))
            p = f.get("adjusted_p_value", f.get("p_value"))
            if p is not None:
                self.p_value.labels(*labels).set(float(p))
                keep.append((self.p_value, labels))
            self.drifted.labels(monitor, str(f["feature"])).set(1.0 if f.get("drifted") else 0.0)
            keep.append((self.drifted, (monitor, str(f["feature"]))))
        self.drifted.labels(monitor, "").set(1.0 if drifted else 0.0)
        self.window_rows.labels(monitor, "reference").set(n_reference)
        self.window_rows.labels(monitor, "current").set(n_current)
        keep += [
            (self.drifted, (monitor, "")),
            (self.window_rows, (monitor, "reference")),
            (self.window_rows, (monitor, "current")),
        ]
        self._labels[monitor] = keep
        self.evaluations.labels(monitor, "drift" if drifted else "no_drift").inc()

    def publish_estimates(self, monitor: str, values: dict[str, dict[str, float | None]]) -> None:
        """After ``publish``: {metric: {estimate, lower, upper, ...}}; None values are left out."""
        keep = self._labels.setdefault(monitor, [])
        for metric, named in values.items():
            for name, value in named.items():
                if value is None or value != value:
                    continue
                self.estimate.labels(monitor, metric, name).set(float(value))
                keep.append((self.estimate, (monitor, metric, name)))

    def calibration(self, monitor: str, state: str) -> None:
        """After ``publish``: the monitor's min-P calibration state (``ready`` or not)."""
        self.calibration_state.labels(monitor).set(0.0 if state == "ready" else 1.0)
        self._labels.setdefault(monitor, []).append((self.calibration_state, (monitor,)))

    def skipped(self, monitor: str, reason: str) -> None:
        self.evaluations.labels(monitor, reason).inc()

    def forget(self, monitor: str) -> None:
        for gauge, labels in self._labels.pop(monitor, []):
            with contextlib.suppress(KeyError):
                gauge.remove(*labels)
