"""The Finding: what every detector emits and alerts, retrain hooks, the API and metrics consume."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class State(StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


KINDS = (
    "data_drift",
    "prediction_drift",
    "performance_drift",
    "llm_drift",
    "training_slowdown",
    "straggler",
    "throughput_drop",
    "dataloader_stall",
    "loss_anomaly",
    "gpu_fault",
    "gpu_degraded",
    "carbon_overrun",
    "carbon_forecast_overrun",
)


def fingerprint(kind: str, subject: dict[str, str], key: str = "") -> str:
    """Stable identity of a condition: same kind, subject and detector key -> same fingerprint."""
    canon = json.dumps([kind, sorted(subject.items()), key], separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()[:16]


@dataclass
class Finding:
    """A condition found by a detector.

    ``id`` is the fingerprint: stable across evaluations so alerts and retrain triggers
    de-duplicate on it. ``key`` distinguishes two conditions of one kind on one subject
    (for example two drift monitors on the same model).
    """

    kind: str
    severity: Severity
    subject: dict[str, str]
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)
    window_start: float | None = None
    window_end: float | None = None
    key: str = ""
    state: State = State.FIRING
    started_at: float = field(default_factory=time.time)
    resolved_at: float | None = None
    updated_at: float = field(default_factory=time.time)
    detector: str = ""

    @property
    def id(self) -> str:
        return fingerprint(self.kind, self.subject, self.key)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["id"] = self.id
        d["severity"] = str(self.severity)
        d["state"] = str(self.state)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Finding:
        d = dict(d)
        d.pop("id", None)
        d["severity"] = Severity(d["severity"])
        d["state"] = State(d["state"])
        return cls(**d)
