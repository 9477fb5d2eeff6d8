"""Silent training degradation: step-time regressions, stragglers, throughput drops,
data-loader stalls and loss anomalies, with GPU cause attribution.

Wiring: ``detectors.training.plugin.PLUGIN`` (section ``detectors.training``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlvigil.core.lazy import lazy_exports

if TYPE_CHECKING:
    from detectors.training.config import TrainingConfig
    from detectors.training.detectors import (
        DataloaderStallDetector,
        LossAnomalyDetector,
        SlowdownDetector,
        StragglerDetector,
        ThroughputDropDetector,
    )
    from detectors.training.metrics import TrainingMetrics
    from mlvigil.core.detector import Detector

__all__ = [
    "DataloaderStallDetector",
    "LossAnomalyDetector",
    "SlowdownDetector",
    "StragglerDetector",
    "ThroughputDropDetector",
    "TrainingConfig",
    "TrainingMetrics",
    "build_detectors",
]


def build_detectors(cfg: TrainingConfig, metrics: TrainingMetrics | None = None) -> list[Detector]:
    """The enabled detectors of ``cfg``, sharing ``metrics`` (None: no Prometheus gauges)."""
    from detectors.training.detectors import (
        DataloaderStallDetector,
        LossAnomalyDetector,
        SlowdownDetector,
        StragglerDetector,
        ThroughputDropDetector,
        _RunDetector,
        step_feed,
    )
    from mlvigil.core.shard import shards

    if not cfg.enabled:
        return []
    # One feed for all: a pass reads and deduplicates the new rows once, not once per detector.
    feed = step_feed(cfg)
    out: list[Detector] = []
    kinds: list[tuple[bool, type[_RunDetector[Any]]]] = [
        (cfg.slowdown.enabled, SlowdownDetector),
        (cfg.straggler.enabled, StragglerDetector),
        (cfg.throughput.enabled, ThroughputDropDetector),
        (cfg.dataloader.enabled, DataloaderStallDetector),
        (cfg.loss.enabled, LossAnomalyDetector),
    ]
    for enabled, cls in kinds:
        if enabled:
            out.extend(cls(cfg, metrics, feed=feed, shard=shard) for shard in shards(cfg.shards))
    return out


# Imported on first use: the package's plugin descriptor stays light for ``mlvigil --help``.
__getattr__ = lazy_exports(
    __name__,
    {
        "DataloaderStallDetector": "detectors.training.detectors",
        "LossAnomalyDetector": "detectors.training.detectors",
        "SlowdownDetector": "detectors.training.detectors",
        "StragglerDetector": "detectors.training.detectors",
        "ThroughputDropDetector": "detectors.training.detectors",
        "TrainingConfig": "detectors.training.config",
        "TrainingMetrics": "detectors.training.metrics",
    },
)
