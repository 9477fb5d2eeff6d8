"""Where a monitor's rows come from: one ``RowSource`` per monitor kind.

Data and prediction monitors read ``inferences`` (KServe/Seldon events are already rows
there), performance monitors join ``labels`` by request id, LLM monitors read
``llm_calls``. ``source_for`` picks the class from ``SOURCES`` by the monitor's ``kind``;
data monitors on the native backend read their features as columns the store extracts
(``ColumnarDataRows``).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from detectors.drift.config import MonitorConfig
from detectors.drift.profile import Labels, NumericProfile, ReferenceProfile
from detectors.drift.sources import (
    INFERENCE_COLUMNS,
    LLM_COLUMNS,
    Columns,
    feature_columns,
    llm_columns,
    prediction_columns,
    window_arrays,
)
from detectors.estimation.monitor import ROLES as ESTIMATION_ROLES
from mlvigil.core.store import Store

if TYPE_CHECKING:
    from detectors.drift.monitors.reference import Reference

#: Windows of at least this many rows are kept and read incrementally as they slide. Every
#: window is: the extraction of a 10k-row window (~0.2 s, 70% of a steady evaluation) is the
#: cost of a monitor fleet, and a kept window costs ~0.2 KB a row of 25 features (labels
#: interned: one string object per distinct label).
INCREMENTAL_MIN_ROWS = 1
#: An incremental window is read whole this often (whatever the check of its kept rows says).
INCREMENTAL_REFRESH_S = 600.0
#: Feature columns of a columnar monitor's rows carry this prefix (a feature may be named "ts").
FEATURE_PREFIX = "feature:"
#: Request ids per labels query.
LABEL_BATCH = 5000


class RowSource:
    """Rows of one monitor from the store, and the columns its evaluator tests.

    Parameters
    ----------
    config
        The monitor, defaults applied.
    reference
        The monitor's reference (the columnar source reads only the features its profile
        has).
    """

    table = "inferences"
    columns_read: list[str] = INFERENCE_COLUMNS
    #: Whether rows are read ``label_delay`` seconds behind now (labels arrive late).
    waits_for_labels = False
    #: A distribution Finding's title, and what moved, in its words.
    drift_title = "Drift"
    moved = "input"
    #: Reference columns fitted by the performance estimator but not drift-tested.
    untested_columns: frozenset[str] = frozenset({"label"})

    def __init__(self, config: MonitorConfig, reference: Reference | None = None) -> None:
        self.config = config
        self.reference = reference

    def where(self) -> dict[str, Any]:
        c = self.config
        return {
            k: v
            for k, v in (("service", c.service), ("model", c.model), ("model_version", c.model_version))
            if v
        }

    def rows(
        self, store: Store, *, since: float | None = None, until: float | None = None, last: int | None = None
    ) -> Columns:
        return store.query(
            self.table, columns=self.columns_read, since=since, until=until, where=self.where(), last=last
        )

    def reference_rows(self, store: Store, *, since: float, until: float, last: int | None) -> Columns:
        """Rows a traffic reference is built from."""
        return self.rows(store, since=since, until=until, last=last)

    def columns(self, rows: Columns, store: Store | None) -> Columns:
        """The columns the evaluator tests, from ``rows``."""
        raise NotImplementedError

    def timestamps(self, rows: Columns, columns: Columns) -> list[Any]:
        """The time of each row of ``columns`` (a streaming evaluation feeds them in order)."""
        return list(rows.get("ts") or [])

    def reference_file_columns(self, cols: Columns) -> tuple[Columns, list[Any]]:
        """A reference file's columns as this source's rows give them, and its prompts."""
        return cols, []

    def target(self, subject: dict[str, str]) -> str:
        """What a Finding is about, in its summary: the model (and version)."""
        version = subject["model_version"]
        return subject["model"] + (f" {version}" if version != "*" else "")

    def embeds_prompts(self) -> bool:
        """Whether prompts are compared as embeddings too (LLM monitors)."""
        return False

    def _only_features(self, cols: Columns) -> Columns:
        wanted = self.config.features
        return {k: v for k, v in cols.items() if k in wanted} if wanted else cols


class _FeatureRows(RowSource):
    """Rows whose columns ``features`` narrows (data and prediction monitors)."""

    def reference_file_columns(self, cols: Columns) -> tuple[Columns, list[Any]]:
        if self.config.features:
            # The estimator of performance_impact needs the label and outputs too.
            keep = set(self.config.features) | (
                set(ESTIMATION_ROLES) if self.config.performance_impact != "off" else set()
            )
            cols = {k: v for k, v in cols.items() if k in keep or k.startswith("proba_")}
        return cols, []


class DataRows(_FeatureRows):
    """Model inputs from ``inferences``."""

    drift_title = "Data drift"
    untested_columns = frozenset({"label", "prediction", "score"})

    def columns(self, rows: Columns, store: Store | None) -> Columns:
        return self._only_features(feature_columns(rows))


class PredictionRows(_FeatureRows):
    """Model outputs from ``inferences``."""

    drift_title = "Prediction drift"
    moved = "prediction"

    def columns(self, rows: Columns, store: Store | None) -> Columns:
        return self._only_features(prediction_columns(rows))


class LLMRows(RowSource):
    """LLM calls (``llm_calls``); ``model`` matches the requested or the responding model."""

    table = "llm_calls"
    columns_read = LLM_COLUMNS
    drift_title = "LLM traffic drift"
    moved = "traffic"

    def target(self, subject: dict[str, str]) -> str:
        model = subject["model"]
        return subject["service"] + (f"/{model}" if model != "*" else "")

    def embeds_prompts(self) -> bool:
        signals = self.config.signals
        return signals is None or "embedding" in signals

    def where(self) -> dict[str, Any]:
        return {"service": self.config.service} if self.config.service else {}

    def rows(
        self, store: Store, *, since: float | None = None, until: float | None = None, last: int | None = None
    ) -> Columns:
        rows = super().rows(store, since=since, until=until, last=last)
        model = self.config.model
        if model:
            keep = [
                i
                for i, (a, b) in enumerate(zip(rows["request_model"], rows["response_model"], strict=True))
                if model in (a, b)
            ]
            rows = {k: [v[i] for i in keep] for k, v in rows.items()}
        return rows

    def columns(self, rows: Columns, store: Store | None) -> Columns:
        return llm_columns(rows, self.config.signals)

    def reference_file_columns(self, cols: Columns) -> tuple[Columns, list[Any]]:
        texts = list(cols.pop("prompt", []))
        return cols, texts


def label_map(rows: Columns, store: Store | None) -> dict[str, Any]:
    """The latest label per request id of ``rows`` (those that have one)."""
    ids = [r for r in rows.get("request_id", []) if r]
    labels: dict[str, Any] = {}
    if store is not None and ids:
        for i in range(0, len(ids), LABEL_BATCH):
            got = store.query(
                "labels",
                columns=["ts", "request_id", "label"],
                where={"request_id": ids[i : i + LABEL_BATCH]},
            )
            for rid, lab in zip(got["request_id"], got["label"], strict=True):
                labels[rid] = lab
    return labels


class PerformanceRows(RowSource):
    """Predictions joined with their labels (latest label per request id; rows without a
    label are left out)."""

    waits_for_labels = True

    def columns(self, rows: Columns, store: Store | None) -> Columns:
        labels = label_map(rows, store)
        preds = prediction_columns(rows)
        out: Columns = {"prediction": [], "label": [], "score": [], "ts": []}
        pred_list = preds.get("prediction", [None] * len(rows.get("request_id", [])))
        score_list = preds.get("score", [None] * len(pred_list))
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

    def timestamps(self, rows: Columns, columns: Columns) -> list[Any]:
        return list(columns.get("ts") or [])


class EstimatedPerformanceRows(RowSource):
    """Every row with inputs and outputs, and labels only where they arrived (the estimate
    needs none)."""

    def columns(self, rows: Columns, store: Store | None) -> Columns:
        labels = label_map(rows, store)
        return {
            **feature_columns(rows),
            "prediction": list(rows.get("prediction", [])),
            "score": list(rows.get("score", [])),
            "label": [labels.get(r) for r in rows.get("request_id", [])],
        }


class ColumnarDataRows(DataRows):
    """Model inputs as columns extracted by the store (``Store.feature_window``) rather than
    parsed from each row's JSON here: data monitors on the native backend, in window mode,
    without performance_impact. A sliding window is read incrementally."""

    def __init__(self, config: MonitorConfig, reference: Reference | None = None) -> None:
        super().__init__(config, reference)
        # A large window kept for the next one: (reference and features, rows, until, when
        # it was read whole, the earliest time its rows cover).
        self._incremental: tuple[Any, Columns, float, float, float] | None = None

    def feature_rows(
        self, store: Store, *, since: float | None, until: float | None, last: int | None, discover: bool
    ) -> Columns:
        """The meta columns as lists, each feature as an array under ``FEATURE_PREFIX +
        name`` (numbers as float64 with NaN, labels as objects). ``discover`` reads every
        feature the rows name and keeps, per feature, the numbers when every present value
        is one, else the labels (as ``infer_kind`` decides)."""
        current = self.reference.model if self.reference is not None else None
        profile = current if isinstance(current, ReferenceProfile) else None
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
            numeric=numeric, text=text, since=since, until=until, where=self.where(), last=last
        )
        rows: Columns = {k: list(v.tolist() if isinstance(v, np.ndarray) else v) for k, v in meta.items()}
        pool: dict[Any, Any] = {}
        for k in ("service", "model", "model_version"):
            if k in rows:  # a kept window holds one string per distinct name, not per row
                rows[k] = [pool.setdefault(v, v) for v in rows[k]]
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
        for name, col in rows.items():
            if isinstance(col, Labels):
                rows[name] = _interned(col)
        return rows

    def reference_rows(self, store: Store, *, since: float, until: float, last: int | None) -> Columns:
        return self.feature_rows(store, since=since, until=until, last=last, discover=True)

    def rows(
        self, store: Store, *, since: float | None = None, until: float | None = None, last: int | None = None
    ) -> Columns:
        """The window, incrementally when it slides: the rows of the previous window are
        kept, and only the rows from the first one the store holds and the kept window does
        not (new rows, or one that arrived late or replaced a deleted one) are read (see
        ``_resume``). Every ``INCREMENTAL_REFRESH_S`` the window is read whole, and so is a
        window asked for without a lower time bound (a sliding-size window's first read, or
        its re-read after rows were deleted)."""
        key = (self.reference.built_at if self.reference is not None else None, self.config.features)
        kept = self._incremental
        self._incremental = None
        rows: Columns | None = None
        if (
            kept is not None
            and until is not None
            and since is not None
            and kept[0] == key
            and until >= kept[2]
            and time.monotonic() - kept[3] < INCREMENTAL_REFRESH_S
            and since >= kept[4]
        ):
            _, old, _, read_at, old_since = kept
            old_ts = np.asarray(old["ts"], dtype=np.float64)
            lo = int(np.searchsorted(old_ts, since, side="left"))
            resume, kept_n, n_fresh = self._resume(store, old_ts[lo:], since, until)
            fresh: Columns = {}
            if n_fresh:
                # Without ``last`` when the fresh rows are fewer: the store's top-N step (a
                # sort of whole rows) costs more than the read itself.
                cap = last if last is not None and n_fresh > last else None
                fresh = self.feature_rows(store, since=resume, until=until, last=cap, discover=False)
            rows = _concat_rows(old, fresh, lo + kept_n)
        if rows is None:
            rows = self.feature_rows(store, since=since, until=until, last=last, discover=False)
            read_at, old_since = time.monotonic(), since if since is not None else -math.inf
        ts = np.asarray(rows["ts"], dtype=np.float64)
        start = int(np.searchsorted(ts, since, side="left")) if since is not None else 0
        if last is not None:
            start = max(start, ts.size - last)
        if start:
            rows = {k: v[start:] for k, v in rows.items()}
        if until is not None and len(rows["ts"]) >= INCREMENTAL_MIN_ROWS:
            window_since = since if since is not None else (rows["ts"][0] if rows["ts"] else -math.inf)
            self._incremental = (key, rows, until, read_at, min(old_since, window_since))
        return rows

    def _resume(
        self, store: Store, kept_ts: np.ndarray, since: float, until: float
    ) -> tuple[float, int, int]:
        """Where the kept window (rows from ``since`` on, times ``kept_ts``) and the store part:
        the time from which to read (``resume``), how many kept rows stay (those before it)
        and how many rows the store holds from it on. One narrow read of the ts column
        (~5-20 ms for 10k rows): the store's times and the kept ones agree up to the first row
        one of them has and the other not (the first new row, usually; a row that arrived
        after the window was read, or a deleted one, further back). Rows of that time are
        read again, so rows sharing a timestamp are never kept twice."""
        got = store.query(self.table, columns=["ts"], since=since, until=until, where=self.where())["ts"]
        stored = np.sort(np.asarray(got, dtype=np.float64))
        common = min(stored.size, kept_ts.size)
        differ = np.flatnonzero(stored[:common] != kept_ts[:common])
        same = int(differ[0]) if differ.size else common
        if same == stored.size:
            return until, same, 0  # nothing new (kept rows beyond ``same`` were deleted)
        resume = float(stored[same])
        kept_n = int(np.searchsorted(kept_ts[:same], resume, side="left"))
        return resume, kept_n, int(stored.size - kept_n)

    def columns(self, rows: Columns, store: Store | None) -> Columns:
        return {k[len(FEATURE_PREFIX) :]: v for k, v in rows.items() if k.startswith(FEATURE_PREFIX)}


def _interned(labels: Labels) -> Labels:
    """``labels`` with one string object per distinct label: a kept window then holds a
    pointer per value rather than a string (~60 bytes) per value."""
    pool: dict[Any, Any] = {}
    out = np.empty(labels.size, dtype=object)
    out[:] = [pool.setdefault(v, v) for v in labels.tolist()]
    return out.view(Labels)


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


#: The row source of each monitor kind.
SOURCES: Mapping[str, type[RowSource]] = {
    "data": DataRows,
    "prediction": PredictionRows,
    "llm": LLMRows,
    "performance": PerformanceRows,
    "estimated_performance": EstimatedPerformanceRows,
}


def is_columnar(config: MonitorConfig) -> bool:
    """Whether a monitor reads its features as columns the store extracts (see
    ``ColumnarDataRows``)."""
    return (
        config.kind == "data"
        and config.backend == "native"
        and config.streaming is None
        and config.performance_impact == "off"
    )


def source_for(config: MonitorConfig, reference: Reference | None = None) -> RowSource:
    """The row source of a monitor, by its kind."""
    cls = ColumnarDataRows if is_columnar(config) else SOURCES[config.kind]
    return cls(config, reference)


__all__ = [
    "FEATURE_PREFIX",
    "SOURCES",
    "ColumnarDataRows",
    "DataRows",
    "EstimatedPerformanceRows",
    "LLMRows",
    "PerformanceRows",
    "PredictionRows",
    "RowSource",
    "is_columnar",
    "label_map",
    "source_for",
]
