"""A drift monitor as a Detector: reference profile once, then one window per evaluation.

Data and prediction monitors read ``inferences`` (KServe/Seldon events are already rows
there), performance monitors join ``labels`` by request id, LLM monitors read
``llm_calls``. The monitor reports one Finding (key = monitor name) while its latest window
drifts; the engine fires, updates and resolves it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from detectors.base import Detector
from detectors.drift.calibration import Calibrations
from detectors.drift.compare import CompareOptions, DriftReport, FeatureDrift, compare
from detectors.drift.config import MonitorConfig
from detectors.drift.files import InputError, read_reference_file
from detectors.drift.metrics import DriftMetrics
from detectors.drift.min_p import READY, Member
from detectors.drift.performance import Evaluation, MetricDrift, compare_performance
from detectors.drift.profile import NumericProfile, ReferenceProfile
from detectors.drift.sources import (
    INFERENCE_COLUMNS,
    LLM_COLUMNS,
    Columns,
    feature_columns,
    hashed_embedding,
    llm_columns,
    prediction_columns,
    window_arrays,
)
from detectors.drift.stats import TestResult
from detectors.drift.stats.mmd import MMD
from detectors.drift.stream import Alarm, DistributionStream, ErrorStream
from detectors.estimation import EstimationError
from detectors.estimation.monitor import ROLES as ESTIMATION_ROLES
from detectors.estimation.monitor import EstimatedPerformance
from mlvigil.findings import Finding, Severity
from mlvigil.store import Store

log = logging.getLogger(__name__)

REFERENCE_DOCS = "drift_references"
#: Rows of a window kept for the multivariate tests.
MULTIVARIATE_ROWS = 2000
#: Most rows one streaming evaluation reads (after a long pause, the older ones are skipped).
MAX_STREAM_BACKLOG = 200_000
#: Windows of at least this many rows are kept and read incrementally as they slide (smaller
#: ones cost less to read again than to keep: ~5 MB per 10k rows of 25 features).
INCREMENTAL_MIN_ROWS = 50_000
#: An incremental window reads again the rows from this long before its previous end.
INCREMENTAL_OVERLAP_S = 60.0
#: ... and is read whole this often (rows later than the overlap join then).
INCREMENTAL_REFRESH_S = 600.0
#: Feature columns of a columnar monitor's rows carry this prefix (a feature may be named "ts").
FEATURE_PREFIX = "feature:"


def _subject_value(configured: str | None, observed: list[Any]) -> str:
    if configured:
        return configured
    values = {v for v in observed if v is not None}
    return str(next(iter(values))) if len(values) == 1 else "*"


class MonitorDetector(Detector):
    """One configured monitor.

    Parameters
    ----------
    config
        The monitor, with defaults already applied (``MonitorConfig.resolved``).
    metrics
        Prometheus metrics to publish each evaluation to (optional).
    """

    def __init__(
        self,
        config: MonitorConfig,
        metrics: DriftMetrics | None = None,
        calibrations: Calibrations | None = None,
    ) -> None:
        assert config.window is not None, "resolve the monitor's defaults first"
        self.config = config
        #: Where min-P calibrations come from; None computes them inside the evaluation.
        self.calibrations = calibrations
        self.name = f"drift:{config.name}"
        self.metrics = metrics
        self.last: dict[str, Any] = {"status": "not evaluated"}
        self._reference: Any = None  # ReferenceProfile, or Evaluation for performance monitors
        self._impact: EstimatedPerformance | None = None  # performance_impact's estimator
        self._ref_columns: Columns | None = None
        self._ref_texts: list[Any] = []
        self._ref_built_at: float | None = None
        self._ref_rows = 0
        self._reference_error: str | None = None  # why the configured reference file cannot serve
        self._tumble_after: float | None = None
        self._cached: tuple[tuple[Any, ...], list[Finding]] | None = None
        # A large columnar window kept for the next one: (reference and features, rows, until,
        # when it was read whole, the earliest time its rows cover).
        self._incremental: tuple[Any, Columns, float, float, float] | None = None
        # A sliding-size window's last (until, first row's ts): where the next one may start.
        self._slide_floor: tuple[float, float] | None = None
        # Streaming mode: the detector, the time up to which rows were fed, the open alarm.
        self._stream: DistributionStream | ErrorStream | None = None
        self._stream_built_for: float | None = None
        self._stream_until: float | None = None
        self._stream_rows = 0
        self._alarm_finding: Finding | None = None
        self._rows_since_alarm = 0
        self._episode = (0.0, 0)  # first alarm's time and alarms so far while the Finding is open

    # -- where rows come from ----------------------------------------------------------------
    @property
    def table(self) -> str:
        return "llm_calls" if self.config.kind == "llm" else "inferences"

    def _where(self) -> dict[str, Any]:
        c = self.config
        if c.kind == "llm":
            return {"service": c.service} if c.service else {}
        return {
            k: v
            for k, v in (("service", c.service), ("model", c.model), ("model_version", c.model_version))
            if v
        }

    @property
    def columnar(self) -> bool:
        """Whether this monitor reads its features as columns extracted by the store
        (``Store.feature_window``) rather than parsing each row's JSON here: data monitors
        on the native backend, in window mode, without performance_impact."""
        c = self.config
        return (
            c.kind == "data"
            and c.backend == "native"
            and c.streaming is None
            and c.performance_impact == "off"
        )

    def _feature_rows(
        self, store: Store, *, since: float | None, until: float | None, last: int | None, discover: bool
    ) -> Columns:
        """Rows of a columnar monitor: the meta columns as lists, each feature as an array
        under ``FEATURE_PREFIX + name`` (numbers as float64 with NaN, labels as objects).
        ``discover`` reads every feature the rows name and keeps, per feature, the numbers
        when every present value is one, else the labels (as ``infer_kind`` decides)."""
        profile = self._reference if isinstance(self._reference, ReferenceProfile) else None
        wanted = self.config.features
        numeric: list[str] | None = None
        text: list[str] | None = None
        if not discover and profile is not None:
            names = [n for n in profile.features if not wanted or n in wanted]
            numeric = [n for n in names if isinstance(profile.features[n], NumericProfile)]
            text = [n for n in names if not isinstance(profile.features[n], NumericProfile)]
        elif wanted:
            numeric, text = list(wanted), list(wanted)
        meta, num, txt = store.feature_window(
            numeric=numeric, text=text, since=since, until=until, where=self._where(), last=last
        )
        rows: Columns = {k: list(v.tolist() if isinstance(v, np.ndarray) else v) for k, v in meta.items()}
        num_arrays, txt_arrays = window_arrays(num, txt)
        if numeric is None or (discover and text is not None):
            for name in sorted(set(num_arrays) | set(txt_arrays)):
                n_values = int(np.count_nonzero(~np.isnan(num_arrays[name]))) if name in num_arrays else 0
                labels = txt_arrays.get(name)
                n_labels = int(np.count_nonzero(labels != None)) if labels is not None else 0  # noqa: E711
                pick = num_arrays[name] if n_values and n_values == n_labels else labels
                if pick is not None:
                    rows[FEATURE_PREFIX + name] = pick
        else:
            for name, arr in (*num_arrays.items(), *txt_arrays.items()):
                rows[FEATURE_PREFIX + name] = arr
        return rows

    def _window_rows(
        self, store: Store, since: float | None, until: float | None, last: int | None
    ) -> Columns:
        """A columnar monitor's window, incrementally when it is large and slides: the rows
        of the previous window are kept, and only those from ``INCREMENTAL_OVERLAP_S`` before
        its end are read again (rows that arrive late, up to that much after their
        timestamp, still join). Every ``INCREMENTAL_REFRESH_S`` the window is read whole."""
        key = (self._ref_built_at, self.config.features)
        kept = self._incremental
        self._incremental = None
        if (
            kept is not None
            and until is not None
            and kept[0] == key
            and until >= kept[2]
            and time.monotonic() - kept[3] < INCREMENTAL_REFRESH_S
            and (since is None or since >= kept[4])
        ):
            _, old, old_until, read_at, old_since = kept
            resume = old_until - INCREMENTAL_OVERLAP_S
            fresh = self._feature_rows(
                store,
                since=resume if since is None else max(resume, since),
                until=until,
                last=last,
                discover=False,
            )
            keep_to = int(np.searchsorted(np.asarray(old["ts"], dtype=np.float64), resume, side="left"))
            rows = _concat_rows(old, fresh, keep_to)
        else:
            rows = self._feature_rows(store, since=since, until=until, last=last, discover=False)
            read_at, old_since = time.monotonic(), since if since is not None else -math.inf
        ts = np.asarray(rows["ts"], dtype=np.float64)
        start = int(np.searchsorted(ts, since, side="left")) if since is not None else 0
        if last is not None:
            start = max(start, ts.size - last)
        if start:
            rows = _slice_rows(rows, start)
        if until is not None and len(rows["ts"]) >= INCREMENTAL_MIN_ROWS:
            window_since = since if since is not None else (rows["ts"][0] if rows["ts"] else -math.inf)
            self._incremental = (key, rows, until, read_at, min(old_since, window_since))
        return rows

    def _rows(
        self, store: Store, *, since: float | None = None, until: float | None = None, last: int | None = None
    ) -> Columns:
        if self.columnar:
            return self._window_rows(store, since, until, last)
        cols = LLM_COLUMNS if self.config.kind == "llm" else INFERENCE_COLUMNS
        rows = store.query(self.table, columns=cols, since=since, until=until, where=self._where(), last=last)
        if self.config.kind == "llm" and self.config.model:
            keep = [
                i
                for i, (a, b) in enumerate(zip(rows["request_model"], rows["response_model"], strict=True))
                if self.config.model in (a, b)
            ]
            rows = {k: [v[i] for i in keep] for k, v in rows.items()}
        return rows

    def _columns(self, rows: Columns, store: Store | None) -> Columns:
        c = self.config
        if self.columnar:
            return {k[len(FEATURE_PREFIX) :]: v for k, v in rows.items() if k.startswith(FEATURE_PREFIX)}
        if c.kind == "data":
            cols = feature_columns(rows)
        elif c.kind == "prediction":
            cols = prediction_columns(rows)
        elif c.kind == "llm":
            cols = llm_columns(rows, c.signals)
        elif c.kind == "estimated_performance":
            # Every row (labels only where they arrived): the estimate needs none.
            labels = self._label_map(rows, store)
            cols = {
                **feature_columns(rows),
                "prediction": list(rows.get("prediction", [])),
                "score": list(rows.get("score", [])),
                "label": [labels.get(r) for r in rows.get("request_id", [])],
            }
        else:
            cols = self._labelled(rows, store)
        if c.features and c.kind in ("data", "prediction"):
            cols = {k: v for k, v in cols.items() if k in c.features}
        return cols

    @staticmethod
    def _label_map(rows: Columns, store: Store | None) -> dict[str, Any]:
        """The latest label per request id of ``rows`` (those that have one)."""
        ids = [r for r in rows.get("request_id", []) if r]
        labels: dict[str, Any] = {}
        if store is not None and ids:
            for i in range(0, len(ids), 5000):
                got = store.query(
                    "labels", columns=["ts", "request_id", "label"], where={"request_id": ids[i : i + 5000]}
                )
                for rid, lab in zip(got["request_id"], got["label"], strict=True):
                    labels[rid] = lab
        return labels

    def _labelled(self, rows: Columns, store: Store | None) -> Columns:
        """Predictions joined with their labels (latest label per request id)."""
        labels = self._label_map(rows, store)
        preds = prediction_columns(rows)
        out: Columns = {"prediction": [], "label": [], "score": [], "ts": []}
        pred_list = preds.get("prediction", [None] * len(rows.get("request_id", [])))
        score_list = preds.get("score", [None] * len(pred_list))
        import json

        ts_list = rows.get("ts", [None] * len(pred_list))
        for rid, p, s, t in zip(rows.get("request_id", []), pred_list, score_list, ts_list, strict=True):
            if rid in labels and p is not None:
                lab = labels[rid]
                with contextlib.suppress(json.JSONDecodeError):
                    lab = json.loads(lab) if isinstance(lab, str) else lab
                out["prediction"].append(p)
                out["label"].append(lab)
                out["score"].append(s)
                out["ts"].append(t)
        return out

    # -- the reference -------------------------------------------------------------------------
    def set_dataset(self, columns: Columns) -> None:
        """A reference dataset posted through the API; it replaces the current profile."""
        self._build_reference(columns, [], time.time())

    def _build_reference(self, columns: Columns, texts: list[Any], now: float) -> None:
        c = self.config
        if c.kind == "estimated_performance":
            estimated = EstimatedPerformance(c.metrics, c.estimation, c.max_drop, c.features)
            self._ref_rows = estimated.fit(columns)
            self._reference = estimated
        elif c.kind == "performance":
            self._reference = Evaluation(
                columns.get("prediction", []), columns.get("label", []), columns.get("score")
            )
            self._ref_rows = self._reference.n
        else:
            if c.performance_impact != "off":
                impact = EstimatedPerformance(c.metrics, c.estimation, c.max_drop, c.features)
                impact.fit(columns)
                self._impact = impact
                # The label (and, for a data monitor, the model's outputs) are not drift-tested.
                roles = {"label"} | ({"prediction", "score"} if c.kind == "data" else set())
                columns = {k: v for k, v in columns.items() if k not in roles and not k.startswith("proba_")}
            mv = MULTIVARIATE_ROWS if c.test in ("mmd", "classifier") else 0
            self._reference = ReferenceProfile.from_columns(columns, multivariate_rows=mv)
            self._ref_rows = self._reference.n_rows
        self._ref_columns = columns
        self._ref_texts = texts
        self._ref_built_at = now

    def _ensure_reference(self, store: Store, now: float) -> bool:
        ref = self.config.reference
        if ref.file is not None:
            if self._reference is None:
                try:
                    cols = read_reference_file(str(ref.file))
                except InputError as exc:
                    # Reported in the monitor's status until the file is fixed (read again each pass).
                    self._reference_error = exc.message
                    return False
                self._reference_error = None
                if self.config.features and self.config.kind in ("data", "prediction"):
                    # The estimator of performance_impact needs the label and outputs too.
                    keep = set(self.config.features) | (
                        set(ESTIMATION_ROLES) if self.config.performance_impact != "off" else set()
                    )
                    cols = {k: v for k, v in cols.items() if k in keep or k.startswith("proba_")}
                texts = list(cols.pop("prompt", [])) if self.config.kind == "llm" else []
                self._build_reference(cols, texts, now)
            return True
        if ref.dataset:
            if self._reference is None:
                doc = store.get_doc(REFERENCE_DOCS, self.config.name)
                if doc is None:
                    return False
                self._build_reference(doc["columns"], doc.get("texts", []), now)
            return True
        if ref.last is not None:
            since, until = now - ref.offset - ref.last, now - ref.offset
            stale = self._ref_built_at is None or now - self._ref_built_at >= ref.refresh
        else:
            assert ref.start is not None and ref.end is not None
            since, until = ref.start, ref.end
            # A fixed range still filling (or empty so far) is rebuilt; a past one is final.
            stale = self._reference is None or (
                until > (self._ref_built_at or 0) and now - (self._ref_built_at or 0) >= ref.refresh
            )
        if self._tumble_after is None:
            # Count-tumbling windows start where traffic references end: no overlap.
            self._tumble_after = until
        if stale:
            if self.columnar:
                rows = self._feature_rows(store, since=since, until=until, last=ref.max_rows, discover=True)
            else:
                rows = self._rows(store, since=since, until=until, last=ref.max_rows)
            if rows.get("ts"):
                cols = self._columns(rows, store)
                self._build_reference(cols, rows.get("prompt", []), now)
        return self._reference is not None and self._ref_rows > 0

    # -- the window ----------------------------------------------------------------------------
    def _window(self, store: Store, now: float) -> tuple[Columns, float | None, float | None]:
        w = self.config.window
        assert w is not None
        until = now - self.config.label_delay if self.config.kind == "performance" else now
        if w.duration is not None:
            if w.mode == "tumbling":
                until = math.floor(until / w.duration) * w.duration
            rows = self._rows(store, since=until - w.duration, until=until)
            return rows, until - w.duration, until
        assert w.size is not None
        if w.mode == "sliding":
            # The newest rows never start before the previous window did (a row arriving late
            # with an earlier time has size newer rows after it): bounding the search by that
            # start lets the store skip every older block of a large table.
            floor = self._slide_floor
            since = floor[1] if floor is not None and until >= floor[0] else None
            rows = self._rows(store, since=since, until=until, last=w.size)
            if since is not None and len(rows.get("ts", [])) < w.size:
                rows = self._rows(store, until=until, last=w.size)  # rows were deleted meanwhile
            ts = rows.get("ts") or []
            self._slide_floor = (until, ts[0]) if len(ts) == w.size else None
        else:
            fresh = self._rows(store, since=self._tumble_after, until=until)
            if self._tumble_after is not None:
                keep = [i for i, t in enumerate(fresh["ts"]) if t > self._tumble_after]
                fresh = {k: [v[i] for i in keep] for k, v in fresh.items()}
            blocks = len(fresh["ts"]) // w.size
            if blocks == 0:
                return {}, None, None
            lo = (blocks - 1) * w.size
            rows = {k: v[lo : lo + w.size] for k, v in fresh.items()}
            self._tumble_after = rows["ts"][-1]
        ts = rows.get("ts") or [None]
        return rows, ts[0], ts[-1]

    # -- evaluation ----------------------------------------------------------------------------
    def evaluate(self, store: Store, now: float) -> list[Finding]:
        c = self.config
        try:
            ready = self._ensure_reference(store, now)
        except EstimationError as exc:
            # A traffic reference the estimator cannot use: say why, try again next time.
            self.last = {"status": "error", "error": f"reference: {exc}", "at": now}
            if self.metrics:
                self.metrics.skipped(c.name, "error")
            return []
        if not ready:
            self.last = (
                {"status": "error", "error": self._reference_error, "at": now}
                if self._reference_error
                else {"status": "waiting for reference", "at": now}
            )
            if self.metrics:
                self.metrics.skipped(c.name, "no_reference")
            return []
        if c.streaming is not None:
            return self._evaluate_stream(store, now)
        rows, start, end = self._window(store, now)
        if not rows:
            # A tumbling window with no new complete block keeps its last decision.
            return list(self._cached[1]) if self._cached else []
        n = len(rows.get("ts", []))
        key: tuple[Any, ...] = (start, end, n, self._ref_built_at)
        cols: Columns | None = None
        if c.kind == "estimated_performance":
            # Labels arriving for the same window change its evidence (the realised value).
            cols = self._columns(rows, store)
            key += (sum(v is not None for v in cols["label"]),)
        if self._cached and self._cached[0] == key and self.last.get("calibration") in (None, READY):
            # The same window decided again with a calibration that became ready since (its
            # Bonferroni verdict is provisional); otherwise the same decision.
            return list(self._cached[1])
        if cols is None:
            cols = self._columns(rows, store)
        n_cur = len(next(iter(cols.values()), [])) if cols else 0
        assert c.window is not None
        if n_cur < c.window.min_size:
            self.last = {
                "status": "window too small",
                "n_current": n_cur,
                "min_size": c.window.min_size,
                "at": now,
            }
            if self.metrics:
                self.metrics.skipped(c.name, "window_too_small")
            return []
        subject = self._subject(rows)
        if c.kind == "performance":
            findings = self._evaluate_performance(cols, subject, start, end, now)
        elif c.kind == "estimated_performance":
            findings = self._evaluate_estimated(cols, subject, start, end, now)
        else:
            findings = self._evaluate_distribution(cols, rows, subject, start, end, now)
        self._cached = (key, findings)
        return list(findings)

    def _subject(self, rows: Columns) -> dict[str, str]:
        c = self.config
        return {
            "service": _subject_value(c.service, rows.get("service", [])),
            "model": _subject_value(c.model, rows.get("model") or rows.get("response_model") or []),
            "model_version": _subject_value(c.model_version, rows.get("model_version", [])),
            "monitor": c.name,
        }

    # -- streaming -----------------------------------------------------------------------------
    def _evaluate_stream(self, store: Store, now: float) -> list[Finding]:
        c = self.config
        s = c.streaming
        assert s is not None
        if self._stream is None or self._stream_built_for != self._ref_built_at:
            try:
                if c.kind == "performance":
                    self._stream = ErrorStream(s, self._reference, c.metrics)
                else:
                    assert self._ref_columns is not None
                    self._stream = DistributionStream(s, self._reference, self._ref_columns, c.backend)
            except ValueError as exc:
                self._stream = None
                self.last = {"status": "error", "error": f"streaming detector: {exc}", "at": now}
                if self.metrics:
                    self.metrics.skipped(c.name, "error")
                return []
            self._stream_built_for = self._ref_built_at
        until = now - s.lag - (c.label_delay if c.kind == "performance" else 0.0)
        if self._stream_until is None:
            # First evaluation: start with the latest window of rows, then follow the stream.
            rows = self._rows(store, until=until, last=s.window_size)
        else:
            if until <= self._stream_until:
                return [self._alarm_finding] if self._alarm_finding else []
            rows = self._rows(store, since=self._stream_until, until=until, last=MAX_STREAM_BACKLOG)
        self._stream_until = until
        cols = self._columns(rows, store)
        ts = cols.get("ts") if c.kind == "performance" else rows.get("ts", [])
        ts = list(ts or [])
        if isinstance(self._stream, ErrorStream):
            current = Evaluation(
                cols.get("prediction", []), cols.get("label", []), None, positive=self._reference.positive
            )
            alarms = self._stream.feed(current, ts)
        else:
            alarms = self._stream.feed(cols, ts)
        self._stream_rows += len(ts)
        was_reported = self._alarm_finding is not None
        if alarms:
            last = alarms[-1]
            if self._alarm_finding is None:
                self._episode = (alarms[0].ts, 0)
            first_ts, count = self._episode
            self._episode = (first_ts, count + len(alarms))
            self._rows_since_alarm = sum(1 for t in ts if t > last.ts)
            self._alarm_finding = self._stream_finding(last, self._episode, self._subject(rows))
        else:
            self._rows_since_alarm += len(ts)
        # Event semantics: an episode that began in this batch is reported by this evaluation
        # even when it already ended inside the batch (hold rows passed, or the error stream
        # recovered), so a short episode is never lost between two evaluations; it resolves
        # at the next one. An episode reported before resolves as soon as it ends.
        reported = self._alarm_finding
        if self._alarm_finding is not None and (
            not self._stream.degraded(c.max_drop)
            if isinstance(self._stream, ErrorStream)
            else self._rows_since_alarm >= s.hold_rows
        ):
            self._alarm_finding = None
            if was_reported or not alarms:
                reported = None
        active = reported is not None
        stream = self._stream
        feature_stats = stream.feature_statistics() if isinstance(stream, DistributionStream) else {}
        if self.metrics:
            self.metrics.publish(
                c.name,
                active,
                self._ref_rows,
                s.window_size,
                [
                    {"feature": f, "test": stream.detector_name, "distance": v, "drifted": False}
                    for f, v in feature_stats.items()
                ],
            )
        self.last = {
            "status": "drift" if active else "ok",
            "mode": "streaming",
            "detector": stream.detector_name,
            "at": now,
            "rows_streamed": self._stream_rows,
            "streamed_until": until,
            "statistic": stream.statistic,
            "threshold": stream.threshold,
            "rows_since_alarm": self._rows_since_alarm if active else None,
            "feature_statistics": feature_stats,
            "finding": reported.evidence if reported else None,
        }
        return [reported] if reported else []

    def _stream_finding(self, alarm: Alarm, episode: tuple[float, int], subject: dict[str, str]) -> Finding:
        c = self.config
        s = c.streaming
        assert s is not None and self._stream is not None
        stream_evidence = {
            "detector": self._stream.detector_name,
            "statistic": alarm.statistic,
            "threshold": alarm.threshold,
            "first_alarm_ts": episode[0],
            "alarm_ts": alarm.ts,
            "alarms": episode[1],
            "ert_rows": s.ert,
            "window_size": s.window_size,
            "stride": s.stride,
            "feature_statistics": alarm.feature_statistics,
        }
        detail = (
            f"streaming {self._stream.detector_name} alarm "
            f"(statistic {alarm.statistic:.3g} > threshold {alarm.threshold:.3g})"
        )
        if isinstance(self._stream, ErrorStream):
            what = "absolute error" if self._stream.regression else "error rate"
            target = subject["model"] + (
                f" {subject['model_version']}" if subject["model_version"] != "*" else ""
            )
            level = float(self._stream.detector.mean)
            ref = self._stream.reference_error
            return Finding(
                kind=c.finding_kind,
                severity=Severity(c.severity or "warning"),
                subject=subject,
                summary=(
                    f"Performance drift on {target} (monitor {c.name}): {what} "
                    f"{ref:.3g} → {level:.3g}, {detail}"
                ),
                evidence={
                    "monitor": c.name,
                    "streaming": stream_evidence,
                    "reference_error": ref,
                    "current_error": level,
                    "drifted_features": [what.replace(" ", "_")],
                },
                window_start=None,
                window_end=alarm.ts,
                key=c.name,
            )
        assert isinstance(self._stream, DistributionStream)
        report = self._stream.explain(alarm, self._options())
        # The statistic is the largest per-feature one, so the features that caused the alarm
        # are those above the threshold on their own; the others moved negligibly.
        stats = alarm.feature_statistics
        order = sorted(report.features, key=lambda f: -stats.get(f.feature, -1.0))
        causes = [f for f in order if stats.get(f.feature, -1.0) > alarm.threshold]
        moved = {"data": "input", "prediction": "prediction", "llm": "traffic"}[c.kind]
        detail = (
            f"the {moved} distribution moved away from the reference (streaming {self._stream.detector_name}"
            f" alarm: statistic {alarm.statistic:.3g}, alarm threshold {alarm.threshold:.3g})"
        )
        ts = alarm.window.get("ts") or [None]
        return self._finding(
            report,
            subject,
            ts[0],
            alarm.ts,
            detail=detail,
            top=(causes or order)[:5] if stats else report.top(5),
            extra={"streaming": stream_evidence},
        )

    def _options(self) -> CompareOptions:
        c = self.config
        return CompareOptions(
            test=c.test or "auto",
            alpha=c.alpha or 0.05,
            correction=c.correction or "minp",
            threshold=c.threshold,
            features=c.features,
            feature_tests=c.feature_tests,
            min_drifted_features=c.min_drifted_features,
            null_windows=c.null_windows,
            null_source=self._null_source if self.calibrations is not None else None,
        )

    def _null_source(
        self, profile: ReferenceProfile, family: list[Member], n_current: int, windows: int, seed: int
    ) -> tuple[np.ndarray | None, str]:
        assert self.calibrations is not None
        return self.calibrations.null(profile, family, n_current, windows, seed, monitor=self.config.name)

    def _evaluate_distribution(
        self,
        cols: Columns,
        rows: Columns,
        subject: dict[str, str],
        start: float | None,
        end: float | None,
        now: float,
    ) -> list[Finding]:
        c = self.config
        profile: ReferenceProfile = self._reference
        if c.backend == "alibi":
            from detectors.drift.alibi_backend import alibi_compare

            assert self._ref_columns is not None
            report = alibi_compare(c, self._ref_columns, cols, profile, self._options())
        else:
            report = compare(profile, cols, self._options(), extra=self._embedding_result(rows))
        self._publish(report)
        self.last = {
            "status": "drift" if report.drifted else "ok",
            "at": now,
            "window_start": start,
            "window_end": end,
            **({"calibration": report.calibration} if report.calibration else {}),
            "report": report.to_dict(top=10),
        }
        if not report.drifted:
            return []
        impact = self._performance_impact(rows)
        if impact is not None:
            self.last["performance_impact"] = impact
            if c.performance_impact == "require" and not impact.get("moved"):
                self.last["status"] = "drift without estimated performance impact"
                return []
        finding = self._finding(report, subject, start, end)
        if impact is not None:
            finding.evidence["performance_impact"] = impact
            moved = [m for m in impact.get("metrics", []) if m["alarm"]]
            finding.summary += (
                "; estimated " + ", ".join(f"{m['metric']} {m['value']:.3g}" for m in moved)
                if moved
                else "; estimated performance within the reference range"
            )
        return [finding]

    def _performance_impact(self, rows: Columns) -> dict[str, Any] | None:
        """The estimated performance of a drifted window (performance_impact), or None."""
        if self._impact is None:
            return None
        cols = {
            **feature_columns(rows),
            "prediction": list(rows.get("prediction", [])),
            "score": list(rows.get("score", [])),
        }
        try:
            estimates, _ = self._impact.estimate(cols)
        except EstimationError as exc:
            return {"error": str(exc)}
        reliable, why = self._impact.reliable
        return {
            "method": self._impact.method,
            "moved": reliable and any(e.alarm for e in estimates),
            **({"unreliable": why} if not reliable else {}),
            "metrics": [e.to_dict() for e in estimates],
        }

    def _embedding_result(self, rows: Columns) -> list[tuple[str, str, TestResult, dict[str, Any]]]:
        c = self.config
        if c.kind != "llm" or (c.signals is not None and "embedding" not in c.signals):
            return []
        ref_texts = [t for t in self._ref_texts if t]
        cur_texts = [t for t in rows.get("prompt", []) if t]
        if len(ref_texts) < 20 or len(cur_texts) < 20:
            return []
        mmd = self.__dict__.get("_text_mmd")
        if mmd is None:
            mmd = MMD(hashed_embedding(ref_texts), permutations=200, max_rows=400)
            self.__dict__["_text_mmd"] = mmd
        res = mmd.test(hashed_embedding(cur_texts))
        tr = TestResult("mmd", res.statistic, res.p_value, res.statistic, res.n_reference, res.n_current)
        return [("prompt_embedding", "embedding", tr, {})]

    def _publish(self, report: DriftReport) -> None:
        if self.metrics:
            self.metrics.publish(
                self.config.name,
                report.drifted,
                report.n_reference,
                report.n_current,
                [f.to_dict() for f in report.features],
            )
            if report.calibration:
                self.metrics.calibration(self.config.name, report.calibration)

    def _finding(
        self,
        report: DriftReport,
        subject: dict[str, str],
        start: float | None,
        end: float | None,
        *,
        detail: str | None = None,
        top: list[FeatureDrift] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Finding:
        c = self.config
        # A caller's own ranking (streaming) names its leaders; otherwise the drifted ones.
        lead = top if top is not None else report.drifted_features
        top = top or report.top(5)
        drifted = report.drifted_features
        what = {"data": "Data drift", "prediction": "Prediction drift", "llm": "LLM traffic drift"}[c.kind]
        target = f"{subject['model']}" + (
            f" {subject['model_version']}" if subject["model_version"] != "*" else ""
        )
        if c.kind == "llm":
            target = f"{subject['service']}" + (f"/{subject['model']}" if subject["model"] != "*" else "")
        if detail is None and report.multivariate is not None:
            detail = (
                f"{report.test} test p={report.p_value:.3g}" if report.p_value is not None else report.test
            )
        elif detail is None:
            detail = f"{len(drifted)} of {len(report.features)} checks drifted"
        names = ", ".join(_describe(f) for f in (lead or top)[:3])
        summary = f"{what} on {target} (monitor {c.name}): {detail}" + (f" — {names}" if names else "")
        evidence = {
            "monitor": c.name,
            "backend": c.backend,
            "test": report.test,
            "correction": report.correction,
            "alpha": report.alpha,
            "threshold": c.threshold,
            "p_value": report.p_value,
            "n_reference": report.n_reference,
            "n_current": report.n_current,
            "n_features": len(report.features),
            "n_drifted": len(drifted),
            "drifted_features": [f.feature for f in drifted],
            "top_features": [_evidence(f) for f in top],
            "multivariate": report.multivariate,
            **({"calibration": calibration_label(report.calibration)} if report.calibration else {}),
            **(extra or {}),
        }
        return Finding(
            kind=c.finding_kind,
            severity=Severity(c.severity or "warning"),
            subject=subject,
            summary=summary,
            evidence=evidence,
            window_start=start,
            window_end=end,
            key=c.name,
        )

    def _evaluate_performance(
        self, cols: Columns, subject: dict[str, str], start: float | None, end: float | None, now: float
    ) -> list[Finding]:
        c = self.config
        current = Evaluation(
            cols.get("prediction", []),
            cols.get("label", []),
            cols.get("score"),
            positive=self._reference.positive,
        )
        results = compare_performance(self._reference, current, c.metrics, c.alpha or 0.05, c.max_drop)
        drifted = [r for r in results if r.drifted]
        if self.metrics:
            self.metrics.publish(
                c.name,
                bool(drifted),
                self._reference.n,
                current.n,
                [
                    {
                        "feature": r.metric,
                        "test": "performance",
                        "distance": r.current,
                        "p_value": r.p_value,
                        "drifted": r.drifted,
                    }
                    for r in results
                ],
            )
        self.last = {
            "status": "drift" if drifted else "ok",
            "at": now,
            "window_start": start,
            "window_end": end,
            "metrics": [r.to_dict() for r in results],
        }
        if not drifted:
            return []
        names = ", ".join(_describe_metric(r) for r in drifted)
        target = subject["model"] + (
            f" {subject['model_version']}" if subject["model_version"] != "*" else ""
        )
        summary = f"Performance drift on {target} (monitor {c.name}): {names}"
        evidence = {
            "monitor": c.name,
            "alpha": c.alpha,
            "max_drop": c.max_drop,
            "n_reference": self._reference.n,
            "n_current": current.n,
            "metrics": [r.to_dict() for r in results],
            "drifted_features": [r.metric for r in drifted],
        }
        return [
            Finding(
                kind=c.finding_kind,
                severity=Severity(c.severity or "warning"),
                subject=subject,
                summary=summary,
                evidence=evidence,
                window_start=start,
                window_end=end,
                key=c.name,
            )
        ]

    def _evaluate_estimated(
        self, cols: Columns, subject: dict[str, str], start: float | None, end: float | None, now: float
    ) -> list[Finding]:
        c = self.config
        estimated: EstimatedPerformance = self._reference
        try:
            estimates, context = estimated.estimate(cols)
        except EstimationError as exc:
            self.last = {"status": "error", "error": f"window: {exc}", "at": now}
            if self.metrics:
                self.metrics.skipped(c.name, "error")
            return []
        reliable, why = estimated.reliable
        finding = estimated.finding(
            estimates,
            context,
            monitor=c.name,
            kind=c.finding_kind,
            severity=Severity(c.severity or "warning"),
            subject=subject,
            start=start,
            end=end,
        )
        if self.metrics:
            self.metrics.publish(
                c.name,
                finding is not None,
                self._ref_rows,
                context["n_current"],
                [
                    {
                        "feature": e.metric,
                        "test": "estimated_performance",
                        "distance": e.value,
                        "drifted": e.alarm,
                    }
                    for e in estimates
                ],
            )
            self.metrics.publish_estimates(
                c.name,
                {
                    e.metric: {
                        "estimate": e.value,
                        "lower": e.lower,
                        "upper": e.upper,
                        "reference_lower": e.reference_lower,
                        "reference_upper": e.reference_upper,
                        "realised": e.realised,
                    }
                    for e in estimates
                },
            )
        self.last = {
            "status": "unreliable" if not reliable else ("drift" if finding else "ok"),
            **({"reason": why} if not reliable else {}),
            "at": now,
            "window_start": start,
            "window_end": end,
            **context,
            "metrics": [e.to_dict() for e in estimates],
            "fit": estimated.estimator.describe(),
        }
        return [finding] if finding else []

    def status(self) -> dict[str, Any]:
        return {"reference_rows": self._ref_rows, "reference_built_at": self._ref_built_at, **self.last}


def _describe(f: FeatureDrift) -> str:
    mv = f.movement
    if "mean_shift_sd" in mv:
        ref, cur = mv["reference"], mv["current"]
        return f"{f.feature} (mean {ref.get('mean', float('nan')):.4g} → {cur.get('mean', float('nan')):.4g})"
    if mv.get("unseen"):
        cat, share = max(mv["unseen"].items(), key=lambda kv: kv[1])
        return f"{f.feature} (new value {cat!r} {share:.0%})"
    if mv.get("shares"):
        s = mv["shares"][0]
        return f"{f.feature} ({s['category']!r} {s['reference']:.0%} → {s['current']:.0%})"
    if f.feature.endswith(":missing") and mv.get("missing_rate"):
        a, b = mv["missing_rate"]
        return f"{f.feature} ({a:.0%} → {b:.0%})"
    return f.feature


def _describe_metric(r: MetricDrift) -> str:
    return f"{r.metric} {r.reference:.3g} → {r.current:.3g}"


def _evidence(f: FeatureDrift) -> dict[str, Any]:
    d = f.to_dict()
    d["summary"] = _describe(f)
    return d


def _slice_rows(rows: Columns, start: int) -> Columns:
    return {k: v[start:] for k, v in rows.items()}


def _concat_rows(old: Columns, fresh: Columns, keep_to: int) -> Columns:
    """``old``'s first ``keep_to`` rows followed by ``fresh`` (same columns; arrays stay
    arrays of their kind, lists stay lists)."""
    out: Columns = {}
    for k, head in old.items():
        col = fresh.get(k)
        if col is None:  # no fresh rows at all: the store answered without feature columns
            col = head[:0]
        if isinstance(head, np.ndarray):
            joined = np.concatenate([np.asarray(head[:keep_to]), np.asarray(col)])
            out[k] = joined.view(type(head)) if type(head) is not np.ndarray else joined
        else:
            out[k] = list(head[:keep_to]) + list(col)
    return out


def calibration_label(state: str) -> str:
    """The evidence's word for how a min-P verdict was corrected."""
    return "minp" if state == READY else f"{state}/bonferroni"


def monitor_factory(metrics: DriftMetrics | None) -> Callable[[MonitorConfig], MonitorDetector]:
    return lambda cfg: MonitorDetector(cfg, metrics)


__all__ = ["REFERENCE_DOCS", "MonitorDetector", "monitor_factory", "np"]
