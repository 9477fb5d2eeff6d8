"""The streaming half of a monitor: every new row goes through a sequential detector.

A monitor with a ``streaming`` block does not test whole windows. Each evaluation reads the
rows that arrived since the previous one (up to ``lag`` seconds ago, so late exports are
not skipped) and feeds them, in time order, to one detector:

* data, prediction and LLM monitors: ``OnlineCVM`` (every feature, calibrated jointly) or
  ``OnlineMMD`` (all features as one vector), both calibrated so that false alarms come on
  average ``ert`` rows apart when nothing drifts; or, with ``backend: alibi``, alibi-detect's
  ``CVMDriftOnline`` / ``MMDDriftOnline``;
* performance monitors: ``ADWIN`` on the 0/1 error stream of classifiers, ``PageHinkley``
  on absolute errors of regressors; only a worsening counts.

An alarm opens the monitor's Finding; it stays open until ``hold`` rows have passed without
another alarm. The evidence names the drifting features by comparing the rows of the
alarming window with the reference profile (the batch engine, for its explanation only).

Every stream reads its detector through ``DriftDetector`` (``streaming.base``); the error
stream of a performance monitor is picked from ``ERROR_STREAMS`` by detector name.

Examples
--------
>>> import numpy as np
>>> from detectors.drift.config import StreamingConfig
>>> from detectors.drift.performance import Evaluation
>>> reference = Evaluation([0, 1] * 500, [0, 1] * 490 + [1, 0] * 10)  # 2% errors
>>> stream = error_stream(StreamingConfig(), reference, ["accuracy"])
>>> stream.detector_name, round(stream.reference_error, 3)
('adwin', 0.02)
>>> rng = np.random.default_rng(0)
>>> labels = [int(rng.random() < 0.5) for _ in range(3000)]
>>> worse = [1 - y if i > 1000 and rng.random() < 0.3 else y for i, y in enumerate(labels)]
>>> alarms = stream.feed({"prediction": worse, "label": labels}, list(range(3000)))
>>> 1000 < alarms[0].ts < 1400, stream.still_open(0, 0, max_drop=0.05)
(True, True)

References
----------
A. Bifet and R. Gavaldà, "Learning from time-changing data with adaptive windowing", SDM
2007 (ADWIN); E. S. Page, "Continuous inspection schemes", Biometrika 1954 (Page-Hinkley);
O. Cobb, A. Van Looveren and J. Klaise, "Sequential multivariate change detection with
calibrated and memoryless false detection rates", AISTATS 2022 (OnlineCVM / OnlineMMD).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from detectors.drift.compare import CompareOptions, DriftReport, compare
from detectors.drift.config import StreamingConfig
from detectors.drift.performance import Evaluation
from detectors.drift.profile import CategoricalProfile, NumericProfile, ReferenceProfile, _canon
from detectors.drift.sources import Columns
from detectors.drift.streaming.adwin import ADWIN
from detectors.drift.streaming.base import DriftDetector
from detectors.drift.streaming.online import OnlineCVM, OnlineMMD
from detectors.drift.streaming.page_hinkley import PageHinkley

#: Most categories of one feature given their own one-hot column in the MMD encoding.
MAX_ONE_HOT = 20


@dataclass
class Alarm:
    ts: float
    statistic: float
    threshold: float
    #: Raw columns of the rows in the window that alarmed (for the explanation).
    window: Columns
    #: Per-feature statistics at the alarm, when the detector has them.
    feature_statistics: dict[str, float] = field(default_factory=dict)


class Encoder:
    """Rows of a monitor's columns as the float matrix its detector reads.

    ``ordinal``: numbers as they are, categories as their reference index (unseen: one past
    the last), missing as NaN (OnlineCVM treats NaN as its own value). ``one_hot``:
    standardised numbers (missing: the reference centre) and one-hot categories, for MMD.
    """

    def __init__(self, profile: ReferenceProfile, one_hot: bool) -> None:
        self.profile, self.one_hot = profile, one_hot
        self.features = list(profile.features)

    def encode(self, columns: Columns, n: int) -> np.ndarray:
        blocks: list[np.ndarray] = []
        for name in self.features:
            prof = self.profile.features[name]
            raw = list(columns.get(name, [None] * n))
            if isinstance(prof, NumericProfile):
                col = np.array([_number(v) for v in raw], dtype=np.float64)
                if self.one_hot:
                    col = (col - float(np.median(prof.sorted)) if prof.n else col) / prof.scale
                    col = np.where(np.isnan(col), 0.0, col)
                blocks.append(col[:, None])
            else:
                assert isinstance(prof, CategoricalProfile)
                index = {c: i for i, c in enumerate(prof.categories)}
                codes = np.array(
                    [np.nan if (c := _canon(v)) is None else index.get(c, len(index)) for v in raw],
                    dtype=np.float64,
                )
                if self.one_hot:
                    k = min(len(index), MAX_ONE_HOT)
                    # Categories past the first k, unseen ones and missing share a last column.
                    codes = np.where(np.isnan(codes) | (codes >= k), k, codes).astype(int)
                    blocks.append(np.eye(k + 1)[codes])
                else:
                    blocks.append(codes[:, None])
        return np.hstack(blocks) if blocks else np.empty((n, 0))


def _number(v: Any) -> float:
    try:
        return float(v) if v is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


class DistributionDetector(NamedTuple):
    """A distribution monitor's detector: native, alibi-detect's, and how rows are encoded."""

    native: type[OnlineCVM] | type[OnlineMMD]
    alibi: str
    #: One-hot categories and standardised numbers (a kernel's input) instead of ordinal codes.
    one_hot: bool


#: The detector of each ``streaming.detector`` a data, prediction or LLM monitor may name.
DISTRIBUTION_DETECTORS: Mapping[str, DistributionDetector] = {
    "cvm": DistributionDetector(OnlineCVM, "CVMDriftOnline", one_hot=False),
    "mmd": DistributionDetector(OnlineMMD, "MMDDriftOnline", one_hot=True),
}


class MonitorStream(ABC):
    """One monitor's rows fed to one ``DriftDetector``; what a streaming evaluation reads."""

    detector: DriftDetector
    detector_name: str

    @abstractmethod
    def feed(self, columns: Columns, ts: Sequence[float]) -> list[Alarm]:
        """Feed a batch of rows in time order; the alarms it raised."""

    @abstractmethod
    def still_open(self, rows_since_alarm: int, hold_rows: int, max_drop: float) -> bool:
        """Whether an open alarm's Finding stays open after this batch."""

    @property
    def statistic(self) -> float:
        return float(self.detector.statistic)

    @property
    def threshold(self) -> float:
        return float(self.detector.threshold)

    def feature_statistics(self) -> dict[str, float]:
        """The latest step's statistic per feature (detectors that score features)."""
        return {}


class DistributionStream(MonitorStream):
    """Sequential drift detection on a data, prediction or LLM monitor's columns."""

    def __init__(
        self, config: StreamingConfig, profile: ReferenceProfile, reference: Columns, backend: str
    ) -> None:
        self.config, self.profile = config, profile
        kind = "cvm" if config.detector == "auto" else config.detector
        choice = DISTRIBUTION_DETECTORS[kind]
        self.detector_name = kind
        self.encoder = Encoder(profile, one_hot=choice.one_hot)
        # alibi-detect's online detectors take no missing values.
        self._fill_missing = backend == "alibi"
        x_ref = self._encode(reference, profile.n_rows)
        if backend == "alibi":
            from detectors.drift.alibi_backend import online_detector

            # alibi-detect's online detectors step at every row.
            self.detector_name = f"alibi:{choice.alibi}"
            self.detector = online_detector(
                choice.alibi,
                x_ref,
                ert=config.ert,
                window_size=config.window_size,
                n_bootstraps=config.n_bootstraps,
            )
        else:
            self.detector = choice.native(
                x_ref,
                window_size=config.window_size,
                ert=config.ert / config.stride,
                stride=config.stride,
                n_bootstraps=config.n_bootstraps,
            )
        self._tail: Columns = {}

    def _encode(self, columns: Columns, n: int) -> np.ndarray:
        x = self.encoder.encode(columns, n)
        return np.where(np.isnan(x), 0.0, x) if self._fill_missing else x

    def feed(self, columns: Columns, ts: Sequence[float]) -> list[Alarm]:
        n = len(ts)
        if not n:
            return []
        # The last window_size rows before this batch, to rebuild an alarming window's rows.
        joined = {k: list(self._tail.get(k, [])) + list(v) for k, v in columns.items()}
        offset = len(next(iter(self._tail.values()), []))
        alarms = []
        for pos, row in enumerate(self._encode(columns, n)):
            if not self.detector.update(row):
                continue
            # Read at the alarm: later rows of the batch move the detector on.
            hi = offset + pos + 1
            lo = max(0, hi - self.config.window_size)
            alarms.append(
                Alarm(
                    float(ts[pos]),
                    self.statistic,
                    self.threshold,
                    {k: v[lo:hi] for k, v in joined.items()},
                    self.feature_statistics(),
                )
            )
        w = self.config.window_size
        self._tail = {k: v[-w:] for k, v in joined.items()}
        return alarms

    def still_open(self, rows_since_alarm: int, hold_rows: int, max_drop: float) -> bool:
        """Open until ``hold_rows`` rows have passed without another alarm."""
        return rows_since_alarm < hold_rows

    def feature_statistics(self) -> dict[str, float]:
        """The latest step's statistic per feature (native OnlineCVM only)."""
        scores = self.detector.feature_scores()
        if scores is None:
            return {}
        return dict(zip(self.encoder.features, scores.tolist(), strict=True))

    def explain(self, alarm: Alarm, options: CompareOptions) -> DriftReport:
        """The alarming window against the reference, feature by feature."""
        return compare(self.profile, alarm.window, options)


class ErrorStream(MonitorStream):
    """Sequential detection of worsening errors on a performance monitor's labelled rows
    (``columns``: ``prediction`` and ``label``)."""

    detector_name: str
    #: What one row's error is, in the Finding's words.
    what: str
    #: The reference's error level (error rate, or mean absolute error).
    reference_error: float

    def __init__(self, config: StreamingConfig, reference: Evaluation) -> None:
        self.config, self.reference = config, reference

    @property
    def level(self) -> float:
        """The error level since the detector's last change."""
        return float(self.detector.mean)  # type: ignore[attr-defined]

    @abstractmethod
    def errors(self, current: Evaluation) -> np.ndarray:
        """Each labelled row's error."""

    @abstractmethod
    def worse(self, level: float) -> bool:
        """Whether a change to ``level`` counts as drift."""

    @abstractmethod
    def degraded(self, max_drop: float) -> bool:
        """Whether errors since the last change are still worse than the reference by more
        than ``max_drop``. Neither detector alarms again while a new, worse level simply
        persists, so this, not a count of rows, decides when a performance Finding closes."""

    def feed(self, columns: Columns, ts: Sequence[float]) -> list[Alarm]:
        current = Evaluation(
            columns.get("prediction", []), columns.get("label", []), None, positive=self.reference.positive
        )
        alarms = []
        for i, e in enumerate(self.errors(current).tolist()):
            if math.isnan(e) or not self.detector.update(e):
                continue
            if self.worse(self.level):
                alarms.append(Alarm(float(ts[i]), self.statistic, self.threshold, {}))
        return alarms

    def still_open(self, rows_since_alarm: int, hold_rows: int, max_drop: float) -> bool:
        return self.degraded(max_drop)


class ErrorRateStream(ErrorStream):
    """ADWIN on a classifier's 0/1 errors; only a rise of the error rate counts."""

    detector_name = "adwin"
    what = "error rate"

    def __init__(self, config: StreamingConfig, reference: Evaluation) -> None:
        super().__init__(config, reference)
        self.reference_error = float(np.mean(reference.pred != reference.label)) if reference.n else 0.0
        self.detector: ADWIN = ADWIN(delta=config.delta)

    def errors(self, current: Evaluation) -> np.ndarray:
        return (current.pred != current.label).astype(np.float64)

    def worse(self, level: float) -> bool:
        # ADWIN reports any change in the mean; only a worse error rate is drift here.
        return level > self.reference_error

    def degraded(self, max_drop: float) -> bool:
        """Absolute: the error rate exceeds the reference's by more than ``max_drop``."""
        return self.level > self.reference_error + max_drop

    @property
    def statistic(self) -> float:
        """ADWIN's current error rate."""
        return self.level

    @property
    def threshold(self) -> float:
        """The reference error rate ADWIN's must exceed."""
        return self.reference_error


class AbsoluteErrorStream(ErrorStream):
    """Page-Hinkley on a regressor's absolute errors (it detects increases only)."""

    detector_name = "page_hinkley"
    what = "absolute error"

    def __init__(self, config: StreamingConfig, reference: Evaluation) -> None:
        super().__init__(config, reference)
        err = np.abs(reference.pred_num - reference.label_num)
        err = err[~np.isnan(err)]
        self.reference_error = float(err.mean()) if err.size else 0.0
        unit = max(self.reference_error, 1e-9)
        self.detector: PageHinkley = PageHinkley(
            delta=config.ph_allowance * unit, threshold=config.ph_threshold * unit
        )

    def errors(self, current: Evaluation) -> np.ndarray:
        return np.abs(current.pred_num - current.label_num)

    def worse(self, level: float) -> bool:
        return True

    def degraded(self, max_drop: float) -> bool:
        """Relative: the mean absolute error exceeds the reference's by more than ``max_drop``."""
        return self.level > self.reference_error * (1.0 + max_drop)


#: The error stream of each ``streaming.detector`` a performance monitor may name.
ERROR_STREAMS: Mapping[str, type[ErrorStream]] = {
    "adwin": ErrorRateStream,
    "page_hinkley": AbsoluteErrorStream,
}


def error_stream(config: StreamingConfig, reference: Evaluation, metrics: Sequence[str]) -> ErrorStream:
    """The error stream a performance monitor's ``streaming`` block names (``auto``:
    Page-Hinkley when every metric is a regression one, else ADWIN)."""
    kind = config.detector
    if kind == "auto":
        kind = "page_hinkley" if set(metrics) <= {"mae", "rmse"} else "adwin"
    return ERROR_STREAMS[kind](config, reference)


__all__ = [
    "DISTRIBUTION_DETECTORS",
    "ERROR_STREAMS",
    "AbsoluteErrorStream",
    "Alarm",
    "DistributionStream",
    "Encoder",
    "ErrorRateStream",
    "ErrorStream",
    "MonitorStream",
    "error_stream",
]
