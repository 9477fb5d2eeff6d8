"""Normalised record tables: the one schema receivers write and detectors read.

Records travel as columnar batches (``RecordBatch``: table -> column -> list) because the
ingest path appends thousands of rows per request; building one Python object per row and
pivoting later costs more than appending to lists directly.
"""

from __future__ import annotations

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
        """Append one row; columns not given are NULL. For hot paths append to table() lists."""
        cols = self.table(table)
        for name, column in cols.items():
            column.append(values.get(name))

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
