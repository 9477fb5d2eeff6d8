"""Stale Prometheus series: an owner's series go with it; firing counts drop to 0, not away."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from detectors.drift.metrics import DriftMetrics
from detectors.training.metrics import TrainingMetrics
from mlvigil.core.metrics import Telemetry


def test_findings_firing_reads_zero_once_nothing_fires() -> None:
    t = Telemetry()
    t.set_firing({("data_drift", "warning"): 2, ("gpu_lost", "critical"): 1})
    t.set_firing({("gpu_lost", "critical"): 3})
    value = t.registry.get_sample_value
    assert value("mlvigil_findings_firing", {"kind": "data_drift", "severity": "warning"}) == 0
    assert value("mlvigil_findings_firing", {"kind": "gpu_lost", "severity": "critical"}) == 3
    t.set_firing({})
    assert value("mlvigil_findings_firing", {"kind": "gpu_lost", "severity": "critical"}) == 0


def test_a_forgotten_monitor_or_run_takes_its_series_with_it() -> None:
    r = CollectorRegistry()
    drift = DriftMetrics(r)
    drift.publish("m1", True, 100, 50, [{"feature": "age", "test": "ks", "distance": 0.4, "p_value": 0.01}])
    drift.publish_estimates("m1", {"accuracy": {"estimate": 0.9, "lower": None}})
    drift.calibration("m1", "ready")
    drift.publish("m2", False, 100, 50, [])
    assert r.get_sample_value("mlvigil_drift_score", {"monitor": "m1", "feature": "age", "test": "ks"}) == 0.4
    assert (
        r.get_sample_value(
            "mlvigil_performance_estimate", {"monitor": "m1", "metric": "accuracy", "value": "estimate"}
        )
        == 0.9
    )
    drift.forget("m1")
    names = {s.labels.get("monitor") for m in r.collect() for s in m.samples if m.type == "gauge"}
    assert "m1" not in names and "m2" in names

    training = TrainingMetrics(r)
    training.set(training.loss, ("run-1",), 0.5)
    training.set(training.loss, ("run-2",), 0.7)
    training.forget("run-1")
    assert r.get_sample_value("mlvigil_training_loss", {"run_id": "run-1"}) is None
    assert r.get_sample_value("mlvigil_training_loss", {"run_id": "run-2"}) == 0.7
