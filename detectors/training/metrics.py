"""Prometheus gauges of the training detectors, per run and rank."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge

from mlvigil.core.metrics import OwnedSeries


class TrainingMetrics:
    """Gauges on the service registry; a forgotten run's series are removed with it."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.step_time = Gauge(
            "mlvigil_training_step_time_seconds",
            "Rolling median step time per rank.",
            ["run_id", "rank"],
            registry=r,
        )
        self.ideal_step_time = Gauge(
            "mlvigil_training_ideal_step_time_seconds",
            "Post-warm-up baseline (median) of the run's step time.",
            ["run_id"],
            registry=r,
        )
        self.slowdown = Gauge(
            "mlvigil_training_slowdown_ratio",
            "Rolling median step time over the ideal step time (1 = no slowdown).",
            ["run_id"],
            registry=r,
        )
        self.straggler = Gauge(
            "mlvigil_training_straggler_score",
            "Rank compute time over the median rank (relative) or over its own best (individual).",
            ["run_id", "rank", "score"],
            registry=r,
        )
        self.goodput = Gauge(
            "mlvigil_training_goodput_ratio",
            "Productive step time over wall time (rest: data wait, checkpointing, idle).",
            ["run_id"],
            registry=r,
        )
        self.badput = Gauge(
            "mlvigil_training_time_seconds",
            "Accumulated rank time by category.",
            ["run_id", "category"],
            registry=r,
        )
        self.throughput = Gauge(
            "mlvigil_training_throughput_per_second",
            "Run throughput (rolling median), in the unit named.",
            ["run_id", "unit"],
            registry=r,
        )
        self.data_wait = Gauge(
            "mlvigil_training_data_wait_ratio",
            "Rolling median share of step time waiting for data.",
            ["run_id", "rank"],
            registry=r,
        )
        self.loss = Gauge(
            "mlvigil_training_loss",
            "Latest finite loss of the run's reference rank (the lowest rank reporting one).",
            ["run_id"],
            registry=r,
        )
        self._series = OwnedSeries()

    def set(self, gauge: Gauge, labels: tuple[str, ...], value: float) -> None:
        self._series.set(labels[0], gauge, labels, value)

    def forget(self, run_id: str) -> None:
        self._series.forget(run_id)
