"""Normalised record tables: the one schema receivers write and detectors read.

Records travel as columnar batches (``RecordBatch``: table -> column -> list) because the
ingest path appends thousands of rows per request; building one Python object per row and
pivoting later costs more than appending to lists directly.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Column:
    name: str
    sql_type: str


def _cols(spec: str) -> tuple[Column, ...]:
    out = []
    for part in spec.split(","):
        name, sql_type = part.split()
        out.append(Column(name, sql_type))
    return tuple(out)


# ts and end_ts are Unix epoch seconds (DOUBLE); durations are seconds; JSON columns hold text.
TABLES: dict[str, tuple[Column, ...]] = {
    "spans": _cols(
        "ts DOUBLE, end_ts DOUBLE, trace_id VARCHAR, span_id VARCHAR, parent_span_id VARCHAR,"
        " name VARCHAR, kind INTEGER, status_code INTEGER, service VARCHAR, record_kind VARCHAR,"
        " resource_attrs VARCHAR, span_proto BLOB"
    ),
    "llm_calls": _cols(
        "ts DOUBLE, service VARCHAR, service_version VARCHAR, host VARCHAR, trace_id VARCHAR,"
        " span_id VARCHAR, dialect VARCHAR, provider VARCHAR, operation VARCHAR, request_model VARCHAR,"
        " response_model VARCHAR, input_tokens BIGINT, output_tokens BIGINT, total_tokens BIGINT,"
        " latency_s DOUBLE, ttft_s DOUBLE, finish_reasons VARCHAR, error VARCHAR, temperature DOUBLE,"
        " max_tokens BIGINT, workflow VARCHAR, entity VARCHAR, prompt VARCHAR, completion VARCHAR"
    ),
    "inferences": _cols(
        "ts DOUBLE, service VARCHAR, model VARCHAR, model_version VARCHAR, request_id VARCHAR,"
        " features VARCHAR, prediction VARCHAR, score DOUBLE, latency_s DOUBLE, source VARCHAR"
    ),
    "labels": _cols("ts DOUBLE, request_id VARCHAR, service VARCHAR, model VARCHAR, label VARCHAR"),
    "training_steps": _cols(
        "ts DOUBLE, service VARCHAR, run_id VARCHAR, step BIGINT, rank INTEGER, world_size INTEGER,"
        " host VARCHAR, k8s_pod VARCHAR, gpu_uuid VARCHAR, step_time_s DOUBLE, loss DOUBLE,"
        " grad_norm DOUBLE, learning_rate DOUBLE, samples DOUBLE, tokens DOUBLE, data_wait_s DOUBLE,"
        " forward_s DOUBLE, backward_s DOUBLE, optimizer_s DOUBLE, comm_s DOUBLE, checkpoint_s DOUBLE"
    ),
    "metric_points": _cols(
        "ts DOUBLE, service VARCHAR, host VARCHAR, hw_id VARCHAR, name VARCHAR, unit VARCHAR,"
        " kind VARCHAR, value DOUBLE, count BIGINT, monotonic BOOLEAN, attributes VARCHAR"
    ),
    "logs": _cols(
        "ts DOUBLE, service VARCHAR, severity_number INTEGER, severity_text VARCHAR, body VARCHAR,"
        " trace_id VARCHAR, span_id VARCHAR, attributes VARCHAR"
    ),
    # Each drift monitor evaluation's headline number (p-value, streaming statistic or
    # estimate), written by the service itself: the console's "statistic over time".
    "monitor_stats": _cols(
        "ts DOUBLE, monitor VARCHAR, statistic VARCHAR, value DOUBLE, threshold DOUBLE, status VARCHAR"
    ),
}

RECORD_KINDS = tuple(TABLES)

# Columns whose text is a JSON document (the API returns them parsed, not as strings).
JSON_COLUMNS: dict[str, frozenset[str]] = {
    "spans": frozenset({"resource_attrs"}),
    "inferences": frozenset({"features", "prediction"}),
    "labels": frozenset({"label"}),
    "metric_points": frozenset({"attributes"}),
    "logs": frozenset({"attributes"}),
}

# -- the one check of values on their way into records ------------------------------------
# Every row goes through ``check_row`` before it joins a batch, so a value the column cannot
# hold (a token count of 1e30, an int32 rank of 2**40, a histogram count of 2**64-1, text
# that is not UTF-8) rejects the item carrying it, with a reason naming the column, instead
# of failing the whole batch in the store. Reasons never include the value: they are metric
# labels and partial-success messages, and must stay a small, fixed set.

_ARROW_TYPE_NAMES = {
    "DOUBLE": "float64",
    "BIGINT": "int64",
    "INTEGER": "int32",
    "VARCHAR": "string",
    "BLOB": "binary",
    "BOOLEAN": "bool_",
}


def arrow_schema(table: str, *, omit: frozenset[str] = frozenset()) -> Any:
    """The Arrow schema (``pyarrow.Schema``) of record ``table``, without the ``omit`` columns.

    >>> arrow_schema("labels", omit=frozenset({"label"})).names
    ['ts', 'request_id', 'service', 'model']
    """
    import pyarrow as pa  # here, not at the top: most importers of this module need no Arrow

    return pa.schema(
        [(c.name, getattr(pa, _ARROW_TYPE_NAMES[c.sql_type])()) for c in TABLES[table] if c.name not in omit]
    )


INT_RANGES = {"BIGINT": (-(2**63), 2**63 - 1), "INTEGER": (-(2**31), 2**31 - 1)}
# Columns that must hold a finite number (time axes are ordered and bucketed by them).
FINITE = frozenset({"ts", "end_ts"})
# Counts that cannot be negative (they are summed into Prometheus counters).
NON_NEGATIVE = frozenset({"input_tokens", "output_tokens", "total_tokens", "max_tokens", "count"})


class RecordError(ValueError):
    """A value does not fit its column; the item carrying it is rejected (never the batch)."""


Check = Callable[[Any], Any]


def _int_check(table: str, col: str, sql_type: str) -> Check:
    lo, hi = INT_RANGES[sql_type]
    if col in NON_NEGATIVE:
        lo = 0
    where = f"{table}.{col}"

    def check(v: Any) -> Any:
        if v is None:
            return None
        if isinstance(v, float):
            if not math.isfinite(v):
                raise RecordError(f"{where} is not a finite number")
            v = int(v)  # a whole count sent as a double (12.0); a fraction is truncated
        elif not isinstance(v, int):
            raise RecordError(f"{where} is not a number")
        if not lo <= v <= hi:
            raise RecordError(f"{where} is outside {lo}..{hi}")
        return int(v)

    return check


def _float_check(table: str, col: str) -> Check:
    finite = col in FINITE
    where = f"{table}.{col}"

    def check(v: Any) -> Any:
        if v is None:
            return None
        if not isinstance(v, int | float):
            raise RecordError(f"{where} is not a number")
        try:
            f = float(v)
        except OverflowError:
            raise RecordError(f"{where} is outside the range of a double") from None
        if finite and not math.isfinite(f):
            raise RecordError(f"{where} is not a finite number")
        return f

    return check


def _text_check(table: str, col: str) -> Check:
    where = f"{table}.{col}"

    def check(v: Any) -> Any:
        if v is None:
            return None
        if not isinstance(v, str):
            raise RecordError(f"{where} is not text")
        if not v.isascii():
            try:
                v.encode()
            except UnicodeEncodeError:
                raise RecordError(f"{where} is not valid UTF-8 text") from None
        return v

    return check


def _typed_check(table: str, col: str, kind: type) -> Check:
    where = f"{table}.{col}"

    def check(v: Any) -> Any:
        if v is None or isinstance(v, kind):
            return v
        raise RecordError(f"{where} is not {kind.__name__}")

    return check


def _column_check(table: str, col: Column) -> Check:
    if col.sql_type in INT_RANGES:
        return _int_check(table, col.name, col.sql_type)
    if col.sql_type == "DOUBLE":
        return _float_check(table, col.name)
    if col.sql_type == "VARCHAR":
        return _text_check(table, col.name)
    if col.sql_type == "BLOB":
        return _typed_check(table, col.name, bytes)
    return _typed_check(table, col.name, bool)


_FAST_TYPES = {"BIGINT": int, "INTEGER": int, "DOUBLE": float, "VARCHAR": str, "BLOB": bytes, "BOOLEAN": bool}
# Per column: name, the Python type of a value that needs no conversion, the range an int of
# that type must be in, whether a double must be finite, and the full check for the rest.
_CHECKS: dict[str, tuple[tuple[str, type, int, int, bool, Check], ...]] = {
    table: tuple(
        (
            c.name,
            _FAST_TYPES[c.sql_type],
            0 if c.name in NON_NEGATIVE else INT_RANGES.get(c.sql_type, (0, 0))[0],
            INT_RANGES.get(c.sql_type, (0, 0))[1],
            c.name in FINITE,
            _column_check(table, c),
        )
        for c in cols
    )
    for table, cols in TABLES.items()
}


def check_row(table: str, row: dict[str, Any]) -> list[Any]:
    """The row's values in column order, each checked against its column; RecordError if one
    cannot be stored. Columns the row does not name are NULL."""
    out: list[Any] = []
    append = out.append
    # The common cases inline (this runs for every row of every export); the rest, and every
    # refusal, through the column's full check.
    for name, fast, lo, hi, finite, check in _CHECKS[table]:
        v = row.get(name)
        if v is None:
            append(None)
            continue
        t = type(v)
        if t is fast:
            if t is str:
                if v.isascii():
                    append(v)
                    continue
            elif t is int:
                if lo <= v <= hi:
                    append(v)
                    continue
            elif t is not float or not finite or math.isfinite(v):
                append(v)
                continue
        append(check(v))
    return out


def _finite_only(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_only(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_only(v) for v in value]
    return value


def json_text(value: Any, *, ascii_only: bool = True) -> str | None:
    """``value`` as JSON text for a JSON column, None for None.

    NaN and the infinities have no JSON spelling: they are written as null (the column holds
    text that every JSON reader accepts). Values that are not JSON types are written as their
    ``str``. ``ascii_only=False`` keeps non-ASCII text as it is (prompts, completions).
    """
    if value is None:
        return None
    try:
        try:
            return json.dumps(
                value, separators=(",", ":"), allow_nan=False, default=str, ensure_ascii=ascii_only
            )
        except ValueError:
            finite = _finite_only(value)
            return json.dumps(finite, separators=(",", ":"), default=str, ensure_ascii=ascii_only)
    except RecursionError:
        raise RecordError("value nested too deeply to store as JSON") from None


@dataclass
class RecordBatch:
    """Rows for several tables, appended together in one transaction."""

    columns: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    # Inference halves (KServe/Seldon request or response events) merged into one row per
    # (request_id, source): the store updates the row the other half wrote, or inserts it.
    inference_merges: list[dict[str, Any]] = field(default_factory=list)

    def table(self, name: str) -> dict[str, list[Any]]:
        cols = self.columns.get(name)
        if cols is None:
            cols = {c.name: [] for c in TABLES[name]}
            self.columns[name] = cols
        return cols

    def add(self, table: str, **values: Any) -> None:
        """Append one checked row (RecordError if a value does not fit); missing columns are NULL."""
        self.add_item([(table, values)])

    def add_item(self, rows: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """Append the rows one item makes (an LLM span: its call and its raw span), all or none:
        every row is checked before any is appended."""
        checked = [(table, check_row(table, row)) for table, row in rows]
        for table, values in checked:
            for column, value in zip(self.table(table).values(), values, strict=True):
                column.append(value)

    def rows(self, table: str) -> int:
        cols = self.columns.get(table)
        if not cols:
            return 0
        return len(next(iter(cols.values())))

    def counts(self) -> dict[str, int]:
        return {t: n for t in self.columns if (n := self.rows(t))}

    def __len__(self) -> int:
        return sum(self.rows(t) for t in self.columns) + len(self.inference_merges)

    def extend(self, other: RecordBatch) -> None:
        for name, cols in other.columns.items():
            mine = self.table(name)
            for col, values in cols.items():
                mine[col].extend(values)
        self.inference_merges.extend(other.inference_merges)
