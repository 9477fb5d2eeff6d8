"""Decoding OTLP request bodies (protobuf or JSON, optionally gzip) with hard size limits."""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

M = TypeVar("M", bound=Message)

REQUEST_TYPES: dict[str, type[Message]] = {
    "traces": ExportTraceServiceRequest,
    "metrics": ExportMetricsServiceRequest,
    "logs": ExportLogsServiceRequest,
}

PROTOBUF = "application/x-protobuf"
JSON = "application/json"

# OTLP/JSON writes these ids as hex; protobuf's JSON mapping expects base64 for bytes.
_ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"})


class BadRequest(Exception):
    """The payload cannot be decoded (HTTP 400 / gRPC INVALID_ARGUMENT)."""


class TooLarge(Exception):
    """The payload, compressed or not, is above the configured limit (HTTP 413)."""


def gunzip_limited(data: bytes, limit: int) -> bytes:
    """Inflate gzip ``data`` but never past ``limit`` bytes, so a gzip bomb costs nothing."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise BadRequest(f"invalid gzip body: {exc}") from None
    if len(out) > limit:
        raise TooLarge(f"decompressed body exceeds {limit} bytes")
    if not inflater.eof:
        raise BadRequest("invalid gzip body: truncated stream")
    return out


def _hex_ids_to_base64(node: Any) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _ID_KEYS and isinstance(value, str):
                try:
                    node[key] = base64.b64encode(bytes.fromhex(value)).decode() if value else ""
                except ValueError:
                    raise BadRequest(f"{key} is not hex: {value[:40]!r}") from None
            else:
                _hex_ids_to_base64(value)
    elif isinstance(node, list):
        for item in node:
            _hex_ids_to_base64(item)


def decode(signal: str, body: bytes, content_type: str) -> Message:
    """Parse an OTLP export request of ``signal`` (traces, metrics, logs) from ``body``."""
    msg = REQUEST_TYPES[signal]()
    if content_type == PROTOBUF:
        try:
            msg.ParseFromString(body)
        except (DecodeError, RuntimeError, ValueError) as exc:
            raise BadRequest(f"invalid protobuf {type(msg).__name__}: {exc}") from None
        return msg
    try:
        tree = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"invalid JSON: {exc}") from None
    if not isinstance(tree, dict):
        raise BadRequest("invalid OTLP/JSON: the body must be a JSON object")
    _hex_ids_to_base64(tree)
    try:
        # OTLP receivers must ignore unknown fields (forward compatibility).
        json_format.ParseDict(tree, msg, ignore_unknown_fields=True)
    except (json_format.ParseError, binascii.Error, TypeError, ValueError) as exc:
        raise BadRequest(f"invalid OTLP/JSON {type(msg).__name__}: {exc}") from None
    return msg


def encode_response(msg: Message, content_type: str) -> bytes:
    if content_type == PROTOBUF:
        return msg.SerializeToString()
    return json.dumps(json_format.MessageToDict(msg)).encode()
