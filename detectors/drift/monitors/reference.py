"""A monitor's reference: where it comes from, when it is rebuilt, what was fitted on it.

Three sources (``reference`` in the monitor's config): a file (read once; an unreadable
file is reported in the monitor's status and read again each pass), a dataset posted
through the API (kept in the store's ``drift_references`` documents), or a range of past
traffic (``last``: rolling, rebuilt every ``refresh``; ``start``/``end``: fixed, rebuilt
only while the range is still filling). What is fitted on the columns depends on the
monitor's evaluator (a profile, a labelled evaluation or a performance estimator).

A profile built from traffic by a monitor that needs nothing else of its reference
(``persist``) is kept in the store (``detectors.drift.profile_store``): after a restart, or
on a replica, it is loaded instead of built again when the reference's rows are the same.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from detectors.drift.config import MonitorConfig
from detectors.drift.files import InputError, read_reference_file
from detectors.drift.monitors.rows import RowSource
from detectors.drift.profile import ReferenceProfile
from detectors.drift.profile_store import (
    content_digest,
    load_profile,
    save_profile,
    settings_digest,
    stored_doc,
)
from detectors.drift.sources import Columns
from detectors.estimation.monitor import EstimatedPerformance
from mlvigil.core.store import Store

#: Store documents holding the datasets posted as references (one per monitor name).
REFERENCE_DOCS = "drift_references"


@dataclass
class Fitted:
    """What an evaluator fitted on a reference's columns."""

    #: A ``ReferenceProfile``, an ``Evaluation`` or an ``EstimatedPerformance``.
    model: Any
    #: Rows the model was fitted on.
    rows: int
    #: The columns kept as the reference (what the streaming and alibi detectors read).
    columns: Columns
    #: The estimator of ``performance_impact``, when the monitor has one.
    impact: EstimatedPerformance | None = None


class Reference:
    """The reference of one monitor and its lifecycle.

    Parameters
    ----------
    config
        The monitor, defaults applied.
    fit
        Fits the monitor's evaluator on a reference's columns.
    persist
        Whether a profile built from traffic is kept in the store and loaded from it (for
        monitors that need nothing else of the reference: no columns, texts or estimator).
    """

    def __init__(
        self, config: MonitorConfig, fit: Callable[[Columns], Fitted], persist: bool = False
    ) -> None:
        self.config = config
        self.fit = fit
        self.persist = persist
        #: Where the current model came from: ``built`` here, or ``stored`` (loaded).
        self.origin: str | None = None
        self.model: Any = None
        self.impact: EstimatedPerformance | None = None
        self.columns: Columns | None = None
        self.texts: list[Any] = []
        self.built_at: float | None = None
        self.rows = 0
        #: Why the configured reference file cannot serve (None when it can).
        self.error: str | None = None
        #: The end of the first traffic range read (count-tumbling windows start there).
        self.traffic_until: float | None = None

    def set_dataset(self, columns: Columns) -> None:
        """A reference dataset posted through the API; it replaces the current model."""
        self.build(columns, [], time.time())

    def build(self, columns: Columns, texts: list[Any], now: float) -> None:
        fitted = self.fit(columns)
        self.model, self.rows, self.columns = fitted.model, fitted.rows, fitted.columns
        if fitted.impact is not None:
            self.impact = fitted.impact
        self.texts = texts
        self.built_at = now
        self.origin = "built"

    def ensure(self, store: Store, now: float, source: RowSource) -> bool:
        """Build or refresh the reference as its config asks; whether one is ready."""
        ref = self.config.reference
        if ref.file is not None:
            if self.model is None:
                try:
                    cols = read_reference_file(str(ref.file))
                except InputError as exc:
                    # Reported in the monitor's status until the file is fixed (read again each pass).
                    self.error = exc.message
                    return False
                self.error = None
                cols, texts = source.reference_file_columns(cols)
                self.build(cols, texts, now)
            return True
        if ref.dataset:
            if self.model is None:
                doc = store.get_doc(REFERENCE_DOCS, self.config.name)
                if doc is None:
                    return False
                self.build(doc["columns"], doc.get("texts", []), now)
            return True
        if ref.last is not None:
            since, until = now - ref.offset - ref.last, now - ref.offset
            stale = self.built_at is None or now - self.built_at >= ref.refresh
        else:
            assert ref.start is not None and ref.end is not None
            since, until = ref.start, ref.end
            # A fixed range still filling (or empty so far) is rebuilt; a past one is final.
            stale = self.model is None or (
                until > (self.built_at or 0) and now - (self.built_at or 0) >= ref.refresh
            )
        if self.traffic_until is None:
            self.traffic_until = until
        if stale and self.model is None and self.persist and self._load(store, now, source):
            stale = False
        if stale:
            rows = source.reference_rows(store, since=since, until=until, last=ref.max_rows)
            if rows.get("ts"):
                cols = source.columns(rows, store)
                self.build(cols, rows.get("prompt", []), now)
                if self.persist and isinstance(self.model, ReferenceProfile):
                    key = {
                        "settings": self._settings(source),
                        "since": since,
                        "until": until,
                        "content": content_digest(rows["ts"]),
                        "built_at": now,
                    }
                    save_profile(store, self.config.name, self.model, key)
        return self.model is not None and self.rows > 0

    def _settings(self, source: RowSource) -> str:
        """Digest of the monitor's settings that shape its traffic profile."""
        c, ref = self.config, self.config.reference
        rng = ("last", ref.last, ref.offset) if ref.last is not None else ("fixed", ref.start, ref.end)
        return settings_digest(
            {
                "kind": c.kind,
                "table": source.table,
                "where": source.where(),
                "features": c.features,
                "test": c.test,
                "max_rows": ref.max_rows,
                "range": rng,
            }
        )

    def _load(self, store: Store, now: float, source: RowSource) -> bool:
        """Take the stored profile when a build now would give the same: same settings, the
        same rows (times) in its range, and, for a rolling range, younger than ``refresh``."""
        ref = self.config.reference
        doc = stored_doc(store, self.config.name)
        if doc is None or doc.get("settings") != self._settings(source):
            return False
        try:
            since, until, built_at = float(doc["since"]), float(doc["until"]), float(doc["built_at"])
        except (KeyError, TypeError, ValueError):
            return False
        if ref.last is not None and not 0 <= now - built_at < ref.refresh:
            return False
        ts = store.query(
            source.table, columns=["ts"], since=since, until=until, where=source.where(), last=ref.max_rows
        )["ts"]
        if not ts or content_digest(ts) != doc.get("content"):
            return False
        profile = load_profile(doc, self.config.name)
        if profile is None:
            return False
        self.model, self.rows, self.columns, self.texts = profile, profile.n_rows, {}, []
        self.built_at = built_at
        self.origin = "stored"
        return True


__all__ = ["REFERENCE_DOCS", "Fitted", "Reference"]
