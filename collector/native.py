"""The native normaliser (Rust, ``mlvigil_native``; source in native/) behind the same
``Normalised`` result as collector/normalize.py.

Not on the product path yet (issue 15): until every shape is native and the receivers hand
it raw bytes off the event loop, the Python normaliser stays the product path and this
module is what the differential tests and bench/ingest call. A request holding a rare shape
the native side does not map exactly (``Unsupported``) is normalised by the Python
reference instead, so results never differ.

The native ``spans`` table has no ``span_proto`` column: raw spans go to the write-ahead
log, not into a per-row blob.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from collector.normalize import Normalised, NormaliseOptions, normalise_traces
from collector.otlp_decode import BadRequest, TooLarge

try:
    import mlvigil_native
except ImportError:  # not built: scripts/setup.sh builds it with maturin
    mlvigil_native = None


def available() -> bool:
    return mlvigil_native is not None


def scan_traces(
    body: bytes, opts: NormaliseOptions, max_items: int = 100_000
) -> tuple[int, int, dict[str, int], dict[str, Any]]:
    """(received, rejected, reasons, {table: pyarrow.RecordBatch}) from protobuf ``body``;
    BadRequest for bytes protobuf refuses, TooLarge past ``max_items`` items (counted as
    ``count_items`` counts them); ``mlvigil_native.Unsupported`` for a rare shape."""
    if mlvigil_native is None:
        raise RuntimeError("mlvigil_native is not built (run scripts/setup.sh)")
    try:
        received, rejected, reasons, tables = mlvigil_native.normalise_traces(
            body, opts.keep_llm_content, opts.keep_raw_spans, opts.max_content_chars, max_items
        )
    except mlvigil_native.InvalidRequest as exc:
        raise BadRequest(f"invalid protobuf ExportTraceServiceRequest: {exc}") from None
    except mlvigil_native.TooLarge as exc:
        raise TooLarge(str(exc)) from None
    return received, rejected, reasons, tables


def normalise_traces_bytes(body: bytes, opts: NormaliseOptions) -> tuple[Normalised, bool]:
    """``body`` normalised natively, as the Python path's ``Normalised`` (columns as lists);
    the flag says whether the native path did it (False: the Python reference, for an
    unsupported shape)."""
    try:
        received, rejected, reasons, tables = scan_traces(body, opts)
    except mlvigil_native.Unsupported:
        msg = ExportTraceServiceRequest()
        msg.ParseFromString(body)
        return normalise_traces(msg, opts), False
    out = Normalised(received=received, rejected=rejected, reasons=dict(reasons))
    for name, batch in tables.items():
        out.batch.columns[name] = batch.to_pydict()
    return out, True
