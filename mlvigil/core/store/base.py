"""The store interface: what receivers write to and detectors, alerts and the API read from.

The embedded default is DuckDB (the ``mlvigil.core.store.duckdb`` package). Larger installations implement
this interface on an existing engine; nothing outside ``mlvigil.core.store`` knows which one runs.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from mlvigil.core.findings import Finding
from mlvigil.core.records import RecordBatch

Columns = dict[str, list[Any]]

#: Most feature names one feature window discovers (a hostile producer could send millions).
MAX_WINDOW_FEATURES = 1_000
#: Columns of an inference row a feature window carries besides the features.
WINDOW_META = ("ts", "service", "model", "model_version")


def window_feature_name_ok(name: str) -> bool:
    """Feature names a window reads: a name with a double quote or backslash (which a JSON
    path would have to escape) is left out, by every store alike."""
    return '"' not in name and "\\" not in name


def feature_value_forms(value: Any) -> tuple[float | None, str | None]:
    """A feature value as a number (None unless it is an int or float, not a bool) and as a
    category label (numbers that are whole as integers, so 1 and 1.0 are one category;
    booleans as ``True``/``False``); lists, objects and null are missing in both forms."""
    if value is None or isinstance(value, list | dict):
        return None, None
    if isinstance(value, bool):
        return None, str(value)
    if isinstance(value, int):
        return float(value), str(value)
    if isinstance(value, float):
        number = value
        if number != number:
            return None, None
        return number, str(int(number)) if number.is_integer() else str(value)
    return None, str(value)


@dataclass
class Grid:
    """Binned means: ``cells`` maps (group value, bin index) to (row count, mean of each value)."""

    lo: float
    hi: float
    bins: int
    cells: dict[tuple[Any, int], tuple[int, list[float | None]]] = field(default_factory=dict)

    @classmethod
    def sized(cls, lo: float, hi: float, bins: int, integer_x: bool) -> Grid:
        """A grid over [lo, hi]; for integer x (steps) the bins end at hi + 1 and there are no
        more bins than integers in the range, so each step falls in exactly one bin."""
        if integer_x:
            hi = hi + 1
            bins = min(bins, max(int(hi - lo), 1))
        return cls(lo, hi, max(bins, 1))

    @property
    def width(self) -> float:
        return (self.hi - self.lo) / self.bins if self.hi > self.lo else 1.0

    def bin_of(self, x: float) -> int:
        return max(0, min(int((x - self.lo) / self.width), self.bins - 1)) if self.hi > self.lo else 0

    @classmethod
    def from_rows(
        cls,
        xs: Sequence[Any],
        groups: Sequence[Any],
        values: Sequence[Sequence[Any]],
        bins: int,
        integer_x: bool = False,
    ) -> Grid:
        present = [float(v) for v in xs if v is not None]
        if not present:
            return cls(0.0, 0.0, max(bins, 1))
        grid = cls.sized(min(present), max(present), bins, integer_x)
        sums: dict[tuple[Any, int], tuple[int, list[float], list[int]]] = {}
        for i, xv in enumerate(xs):
            if xv is None:
                continue
            key = (groups[i], grid.bin_of(float(xv)))
            n, total, counted = sums.setdefault(key, (0, [0.0] * len(values), [0] * len(values)))
            for j, col in enumerate(values):
                v = col[i]
                if v is not None and math.isfinite(v):
                    total[j] += float(v)
                    counted[j] += 1
            sums[key] = (n + 1, total, counted)
        grid.cells = {
            k: (n, [t / c if c else None for t, c in zip(total, counted, strict=True)])
            for k, (n, total, counted) in sums.items()
        }
        return grid


class StoreError(Exception):
    """A write or query the store could not carry out."""


class StoreUnavailable(Exception):
    """The store cannot take writes (or answer) now: its disk is full or below the free-space
    reserve, or the database is being reopened. Nothing of the refused write was stored, so
    the caller may retry it after ``retry_after`` seconds (HTTP 503 / gRPC UNAVAILABLE)."""

    def __init__(self, reason: str, retry_after: int = 5) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class Store(ABC):
    """Durable storage of records, Findings and small documents (outbox, monitors, triggers)."""

    # -- records ---------------------------------------------------------------------------
    @abstractmethod
    def append(self, batch: RecordBatch) -> None:
        """Write one batch in one transaction: all of it is durable on return, or none of it."""

    def append_many(self, batches: Sequence[RecordBatch]) -> list[BaseException | None]:
        """Write several batches, each all-or-nothing; the default writes them one by one."""
        results: list[BaseException | None] = []
        for batch in batches:
            try:
                self.append(batch)
                results.append(None)
            except Exception as exc:
                results.append(exc)
        return results

    @abstractmethod
    def query(
        self,
        table: str,
        *,
        columns: Sequence[str] | None = None,
        since: float | None = None,
        until: float | None = None,
        where: dict[str, Any] | None = None,
        last: int | None = None,
        order_by: str = "ts",
    ) -> Columns:
        """Rows of ``table`` as columns, oldest first.

        ``since``/``until`` bound ``ts`` (since inclusive, until exclusive); ``where`` is
        equality on columns (a list value means IN); ``last`` keeps only the newest N rows.
        """

    def feature_window(
        self,
        *,
        numeric: Sequence[str] | None = None,
        text: Sequence[str] | None = None,
        since: float | None = None,
        until: float | None = None,
        where: dict[str, Any] | None = None,
        last: int | None = None,
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """Inference rows' features as columns, oldest row first: ``(meta, numeric, text)``.

        ``meta`` holds ``WINDOW_META``; ``numeric[k]`` the feature ``k`` as numbers (None where
        it is missing or not a number) and ``text[k]`` as category labels (see
        ``feature_value_forms``). With ``numeric`` and ``text`` both None, every feature the
        rows name (at most ``MAX_WINDOW_FEATURES``) comes back in both forms. Row bounds as
        in ``query``. This default parses each row's JSON; a store that can extract features
        without Python per row overrides it.
        """
        rows = self.query(
            "inferences", columns=[*WINDOW_META, "features"], since=since, until=until, where=where, last=last
        )
        docs: list[dict[str, Any]] = []
        for raw in rows.pop("features"):
            try:
                doc = json.loads(raw) if isinstance(raw, str) else None
            except json.JSONDecodeError:
                doc = None
            docs.append(doc if isinstance(doc, dict) else {})
        if numeric is None and text is None:
            names: dict[str, None] = {}
            for doc in docs:
                for k in doc:
                    if len(names) < MAX_WINDOW_FEATURES:
                        names.setdefault(k)
            numeric = text = sorted(names)
        numeric = [k for k in numeric or () if window_feature_name_ok(k)]
        text = [k for k in text or () if window_feature_name_ok(k)]
        num_cols: dict[str, list[float | None]] = {}
        text_cols: dict[str, list[str | None]] = {}
        for k in numeric or ():
            num_cols[k] = [feature_value_forms(d.get(k))[0] for d in docs]
        for k in text or ():
            text_cols[k] = [feature_value_forms(d.get(k))[1] for d in docs]
        return rows, num_cols, text_cols

    def query_arrow(
        self,
        table: str,
        *,
        columns: Sequence[str],
        since: float | None = None,
        where: dict[str, Any] | None = None,
        last: int | None = None,
    ) -> pa.Table:
        """``query`` as an Arrow table (8 bytes a number instead of a Python object each), for
        readers that hold many rows; the default converts ``query``'s lists."""
        return pa.table(self.query(table, columns=columns, since=since, where=where, last=last))

    @abstractmethod
    def distinct(
        self,
        table: str,
        columns: Sequence[str],
        *,
        since: float | None = None,
        where: dict[str, Any] | None = None,
    ) -> list[tuple[Any, ...]]:
        """Distinct combinations of ``columns`` (the subjects present), optionally since a time."""

    @abstractmethod
    def counts(self) -> dict[str, int]:
        """Rows stored per record table."""

    @abstractmethod
    def apply_retention(self, cutoffs: dict[str, float]) -> dict[str, int]:
        """Delete rows older than each table's cutoff (epoch seconds); returns rows deleted."""

    # -- findings --------------------------------------------------------------------------
    @abstractmethod
    def upsert_findings(self, findings: Iterable[Finding]) -> None:
        """Insert or replace Findings by id, in one transaction."""

    @abstractmethod
    def findings(
        self,
        *,
        kind: str | None = None,
        severity: str | None = None,
        state: str | None = None,
        since: float | None = None,
        subject: dict[str, str] | None = None,
        limit: int = 1000,
        offset: int = 0,
    ) -> list[Finding]:
        """Findings, newest update first, filtered on kind, severity, state, time and subject labels;
        ``offset`` skips that many of the newest first (pages of a long list)."""

    def finding(self, finding_id: str) -> Finding | None:
        """One Finding by id; the default scans, stores override it with a keyed lookup."""
        return next((f for f in self.findings(limit=1_000_000) if f.id == finding_id), None)

    # -- aggregates (the console draws from these, so a page never loads raw rows) -----------
    def grid(
        self,
        table: str,
        *,
        x: str,
        group: str,
        values: Sequence[str],
        bins: int,
        where: dict[str, Any] | None = None,
        since: float | None = None,
        integer_x: bool = False,
    ) -> Grid:
        """Means of ``values`` per (``group``, bin of ``x``) over rows matching ``where`` (and
        ``ts >= since``), with ``x`` cut into ``bins`` equal bins between its smallest and
        largest value (see ``Grid.sized``). The default reads the rows; stores override it
        with an aggregating query."""
        cols = self.query(table, columns=[x, group, *values], where=where, since=since)
        return Grid.from_rows(cols[x], cols[group], [cols[v] for v in values], bins, integer_x)

    # -- documents -------------------------------------------------------------------------
    @abstractmethod
    def put_docs(self, collection: str, docs: dict[str, dict[str, Any]]) -> None:
        """Insert or replace JSON documents by id, all in one transaction."""

    @abstractmethod
    def get_doc(self, collection: str, doc_id: str) -> dict[str, Any] | None: ...

    @abstractmethod
    def list_docs(
        self, collection: str, *, states: Collection[str] | None = None
    ) -> dict[str, dict[str, Any]]:
        """The collection's documents by id; with ``states``, only those whose ``state`` field
        is one of them (how a replica finds the outbox messages still to send)."""

    @abstractmethod
    def delete_doc(self, collection: str, doc_id: str) -> bool: ...

    def put_doc(self, collection: str, doc_id: str, doc: dict[str, Any]) -> None:
        self.put_docs(collection, {doc_id: doc})

    # -- lifecycle -------------------------------------------------------------------------
    def unavailable_reason(self) -> str | None:
        """Why the store cannot take writes now, or None when it can (readiness). May try
        to recover first (reopen a database a failed write left unusable)."""
        return None

    @abstractmethod
    def close(self) -> None:
        """Flush and release; every acknowledged write is durable afterwards."""
