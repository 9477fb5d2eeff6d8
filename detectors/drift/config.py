"""Configuration of drift monitoring: section ``detectors.drift``.

```yaml
detectors:
  drift:
    defaults: {alpha: 0.05, correction: minp}
    monitors:
      - name: fraud-features
        kind: data                      # data | prediction | performance | estimated_performance | llm
        service: fraud-api
        model: fraud
        features: [amount, country]     # default: every feature of the reference
        reference: {file: ref.parquet}  # or {start: ..., end: ...}, {last: 7d, offset: 1d}, {dataset: true}
        window: {size: 1000, mode: sliding}   # or {duration: 1h, mode: tumbling}
        test: auto
        severity: warning
```
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from detectors.estimation.config import EstimationConfig, check_installed, resolved_method
from mlvigil.core.config import Duration, Strict
from mlvigil.core.findings import Severity

MonitorKind = Literal["data", "prediction", "performance", "estimated_performance", "llm"]
FINDING_KINDS = {
    "data": "data_drift",
    "prediction": "prediction_drift",
    "performance": "performance_drift",
    # Estimated (label-free) performance drops are performance drift too: same routing,
    # evidence["estimated"] tells them apart.
    "estimated_performance": "performance_drift",
    "llm": "llm_drift",
}
LLM_SIGNALS = (
    "input_tokens",
    "output_tokens",
    "latency_s",
    "ttft_s",
    "finish_reason",
    "error",
    "model",
    "prompt_chars",
    "prompt_words",
    "completion_chars",
    "embedding",
)
PERFORMANCE_METRICS = ("accuracy", "error_rate", "f1", "precision", "recall", "auc", "mae", "rmse")


def _epoch(value: Any) -> float | None:
    if value is None or isinstance(value, int | float):
        return None if value is None else float(value)
    if isinstance(value, datetime):
        return value.timestamp()
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


class ReferenceConfig(Strict):
    """Where the reference comes from: exactly one of a file, a time range, a rolling range
    of past traffic, or a dataset posted to ``POST /api/v1/monitors/{name}/reference``."""

    #: CSV or Parquet file (columns as the monitor's features / signals).
    file: Path | None = None
    #: Fixed past time range of traffic (epoch seconds or ISO 8601).
    start: float | None = None
    end: float | None = None
    #: Rolling range: the ``last`` seconds of traffic ending ``offset`` before now.
    last: Duration | None = None
    offset: Duration = 0.0
    #: Dataset posted to the API (kept in the store, survives restarts).
    dataset: bool = False
    #: Rolling references are rebuilt at most this often.
    refresh: Duration = 3600.0
    #: Most reference rows read from traffic.
    max_rows: int = Field(default=100_000, gt=0)

    @field_validator("start", "end", mode="before")
    @classmethod
    def _time(cls, value: Any) -> float | None:
        return _epoch(value)

    @model_validator(mode="after")
    def _exactly_one(self) -> ReferenceConfig:
        chosen = [
            self.file is not None,
            self.start is not None or self.end is not None,
            self.last is not None,
            self.dataset,
        ]
        if sum(chosen) != 1:
            raise ValueError("set exactly one of file, start/end, last, dataset")
        if (self.start is None) != (self.end is None):
            raise ValueError("start and end go together")
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class WindowConfig(Strict):
    """The current window: the last ``size`` rows or the last ``duration`` seconds."""

    size: int | None = Field(default=None, gt=0)
    duration: Duration | None = None
    #: sliding: the latest rows/period up to now; tumbling: the last complete block/period.
    mode: Literal["sliding", "tumbling"] = "sliding"
    #: Fewer rows than this: no decision for the window.
    min_size: int = Field(default=50, ge=2)

    @model_validator(mode="after")
    def _one(self) -> WindowConfig:
        if (self.size is None) == (self.duration is None):
            raise ValueError("set exactly one of size (rows) or duration")
        return self


StreamingDetector = Literal["auto", "cvm", "mmd", "adwin", "page_hinkley"]


class StreamingConfig(Strict):
    """Continuous monitoring: every new row goes through a sequential detector instead of
    testing whole windows.

    Data, prediction and LLM monitors use detectors calibrated to an expected run time
    between false alarms (``cvm``: one online Cramér-von Mises detector per numeric feature;
    ``mmd``: one online MMD detector over all features; ``auto``: cvm for a single numeric
    feature, else mmd). Performance monitors run ``adwin`` (classification: the 0/1 error
    stream) or ``page_hinkley`` (regression: absolute errors) and alarm on degradation only.
    """

    detector: StreamingDetector = "auto"
    #: Rows compared with the reference at each step (cvm / mmd).
    window_size: int = Field(default=200, ge=10, le=5000)
    #: Rows between steps; a step per row is ``1``.
    stride: int = Field(default=50, ge=1)
    #: Expected rows between false alarms of the whole monitor when nothing drifts.
    ert: int = Field(default=50_000, gt=0)
    #: Simulated null streams that set the thresholds (at least 10 x ert / stride).
    n_bootstraps: int = Field(default=10_000, ge=100, le=200_000)
    #: An alarm keeps a distribution monitor's Finding open for this many further rows
    #: without alarm (default: two windows). A performance monitor's stays open while its
    #: errors are worse than the reference by more than the monitor's ``max_drop``.
    hold: int | None = Field(default=None, gt=0)
    #: Rows younger than this are not read yet, so that late exports are not skipped.
    lag: Duration = 10.0
    #: ADWIN confidence (adwin) / Page-Hinkley allowance and threshold in units of the
    #: reference's mean absolute error (page_hinkley).
    delta: float = Field(default=0.002, gt=0, lt=1)
    ph_allowance: float = Field(default=0.1, gt=0)
    ph_threshold: float = Field(default=25.0, gt=0)

    @model_validator(mode="after")
    def _calibratable(self) -> StreamingConfig:
        if self.detector in ("adwin", "page_hinkley"):
            return self
        steps = self.ert / self.stride
        if steps <= 1:
            raise ValueError(f"ert ({self.ert} rows) must exceed stride ({self.stride} rows)")
        if self.stride > self.window_size:
            raise ValueError(f"stride ({self.stride}) must not exceed window_size ({self.window_size})")
        from detectors.drift.streaming.online import BOOTSTRAPS_PER_ERT

        if self.n_bootstraps < BOOTSTRAPS_PER_ERT * steps:
            raise ValueError(
                f"n_bootstraps={self.n_bootstraps} cannot calibrate ert={self.ert} rows at stride "
                f"{self.stride} ({steps:g} steps): need at least {BOOTSTRAPS_PER_ERT * steps:.0f}; "
                "raise n_bootstraps or stride, or lower ert"
            )
        return self

    @property
    def hold_rows(self) -> int:
        return self.hold if self.hold is not None else 2 * self.window_size


class MonitorDefaults(Strict):
    """Values a monitor takes when it does not set them."""

    alpha: float = Field(default=0.05, gt=0, lt=1)
    #: ``minp`` (Westfall-Young min-P, calibrated on the reference to how features move
    #: together), ``bh`` (Benjamini-Hochberg), ``bonferroni`` or ``none``.
    correction: Literal["minp", "bh", "bonferroni", "none"] = "minp"
    test: str = "auto"
    severity: Severity = Severity.WARNING
    window: WindowConfig = Field(default_factory=lambda: WindowConfig(size=1000))


class MonitorConfig(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
    kind: MonitorKind = "data"
    service: str | None = None
    model: str | None = None
    model_version: str | None = None
    #: Features (data), or output columns ``prediction`` / ``score`` (prediction); default all.
    features: list[str] | None = None
    #: LLM signals watched (default: all numeric and categorical ones; text ones need kept prompts).
    signals: list[str] | None = None
    #: Performance metrics (performance monitors).
    metrics: list[str] = Field(default_factory=lambda: ["accuracy"])
    reference: ReferenceConfig
    window: WindowConfig | None = None
    #: Continuous monitoring with sequential detectors instead of windowed tests.
    streaming: StreamingConfig | None = None
    #: ``auto``, ks, cvm, anderson, wasserstein, psi, js, hellinger, chi2, mmd, classifier.
    test: str | None = None
    feature_tests: dict[str, str] = Field(default_factory=dict)
    alpha: float | None = Field(default=None, gt=0, lt=1)
    correction: Literal["minp", "bh", "bonferroni", "none"] | None = None
    #: No-drift windows resampled from the reference to calibrate ``correction: minp``.
    null_windows: int = Field(default=500, ge=100, le=100_000)
    #: Distance threshold instead of a significance level (e.g. PSI 0.2).
    threshold: float | None = Field(default=None, gt=0)
    min_drifted_features: int = Field(default=1, ge=1)
    severity: Severity | None = None
    #: ``native`` or ``alibi`` (needs the ``alibi`` extra).
    backend: Literal["native", "alibi"] = "native"
    #: alibi-detect detector class for ``backend: alibi`` (KSDrift, CVMDrift, ChiSquareDrift,
    #: TabularDrift, MMDDrift, LSDDDrift, ClassifierDrift).
    alibi_detector: str = "TabularDrift"
    #: Performance monitors: labels arrive this late; the window ends this long before now.
    label_delay: Duration = 0.0
    #: Performance monitors: a metric drifts when it worsens by more than this (and significantly).
    #: Estimated performance monitors: when the estimate is beyond the reference range by more.
    max_drop: float = Field(default=0.05, ge=0)
    #: Estimated performance monitors: how to estimate without labels (docs/estimation.md).
    estimation: EstimationConfig = Field(default_factory=EstimationConfig)
    #: Data / prediction monitors: estimate ``metrics`` on each drifted window and add them to
    #: the Finding (annotate), or raise a Finding only when the estimate drops (require).
    #: Needs a labelled file or dataset reference (columns label, prediction / score).
    performance_impact: Literal["off", "annotate", "require"] = "off"

    @field_validator("test")
    @classmethod
    def _known_test(cls, value: str | None) -> str | None:
        from detectors.drift.stats import TEST_NAMES

        if value is not None and value not in TEST_NAMES:
            raise ValueError(f"unknown test {value!r}; known: {', '.join(TEST_NAMES)}")
        return value

    @field_validator("alibi_detector")
    @classmethod
    def _known_alibi(cls, value: str) -> str:
        known = (
            "KSDrift",
            "CVMDrift",
            "ChiSquareDrift",
            "TabularDrift",
            "MMDDrift",
            "LSDDDrift",
            "ClassifierDrift",
        )
        if value not in known:
            raise ValueError(f"unknown alibi-detect detector {value!r}; known: {', '.join(known)}")
        return value

    @field_validator("signals")
    @classmethod
    def _known_signals(cls, value: list[str] | None) -> list[str] | None:
        unknown = sorted(set(value or []) - set(LLM_SIGNALS))
        if unknown:
            raise ValueError(f"unknown LLM signal(s) {unknown}; known: {', '.join(LLM_SIGNALS)}")
        return value

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(PERFORMANCE_METRICS))
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; known: {', '.join(PERFORMANCE_METRICS)}")
        return value

    def resolved(self, defaults: MonitorDefaults) -> MonitorConfig:
        """This monitor with every unset value taken from ``defaults``."""
        return self.model_copy(
            update={
                "window": self.window or defaults.window,
                "test": self.test or defaults.test,
                "alpha": self.alpha or defaults.alpha,
                "correction": self.correction or defaults.correction,
                "severity": self.severity or defaults.severity,
            }
        )

    @model_validator(mode="after")
    def _estimation_fits(self) -> MonitorConfig:
        if self.kind == "estimated_performance":
            if self.streaming is not None:
                raise ValueError("kind estimated_performance evaluates windows; remove streaming")
            resolved_method(self.estimation.method, self.metrics)
            check_installed()
        if self.performance_impact != "off":
            if self.kind not in ("data", "prediction") or self.streaming is not None:
                raise ValueError("performance_impact applies to windowed data and prediction monitors")
            if self.reference.file is None and not self.reference.dataset:
                raise ValueError(
                    "performance_impact needs a labelled reference: reference {file: ...} or {dataset: true}"
                    " with a label column and the model's prediction / score"
                )
            resolved_method(self.estimation.method, self.metrics)
            check_installed()
        return self

    @model_validator(mode="after")
    def _streaming_fits_kind(self) -> MonitorConfig:
        det = self.streaming.detector if self.streaming else "auto"
        if self.kind == "performance" and det in ("cvm", "mmd"):
            raise ValueError(f"streaming.detector {det!r} watches distributions; use adwin or page_hinkley")
        if self.kind != "performance" and det in ("adwin", "page_hinkley"):
            raise ValueError(f"streaming.detector {det!r} watches error streams; use cvm or mmd")
        if self.streaming and self.backend == "alibi" and self.kind != "performance":
            from detectors.drift.streaming.online import BOOTSTRAPS_PER_ERT

            # alibi-detect's online detectors step at every row: no stride to lean on.
            need = BOOTSTRAPS_PER_ERT * self.streaming.ert
            if self.streaming.n_bootstraps < need:
                raise ValueError(
                    f"streaming.n_bootstraps={self.streaming.n_bootstraps} cannot calibrate alibi-detect's "
                    f"online detectors to ert={self.streaming.ert} rows (a step per row): need at least "
                    f"{need}; lower streaming.ert or use backend: native"
                )
        return self

    @property
    def finding_kind(self) -> str:
        return FINDING_KINDS[self.kind]


class DriftConfig(Strict):
    enabled: bool = True
    #: Worker processes computing min-P calibrations off the detector loop (0: one thread in
    #: the service process instead).
    calibration_workers: int = Field(default=1, ge=0, le=8)
    #: Worker processes computing monitors' window statistics, so that evaluation never
    #: takes ingest's GIL or CPU share (0: in the detector threads of the service process).
    statistics_workers: int = Field(default=1, ge=0, le=32)
    #: Seconds one window's statistics may take in a worker; a worker taking longer is
    #: stopped and the evaluation is tried again at the next interval.
    statistics_timeout: float = Field(default=120.0, gt=0, le=3600)
    defaults: MonitorDefaults = Field(default_factory=MonitorDefaults)
    monitors: list[MonitorConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> DriftConfig:
        names = [m.name for m in self.monitors]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate monitor name(s) {dup}")
        return self
