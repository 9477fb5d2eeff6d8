"""Decoding OTLP request bodies (protobuf or JSON, optionally gzip) with hard limits.

Everything here runs on a decode worker thread, never on the event loop; the limits bound
how long one call can hold the GIL (and so stall the loop) as well as its memory:

- protobuf: ``ParseFromString`` holds the GIL for the whole body, about 15 ms per MB, so the
  body size limit bounds it (a 16 MB body: ~0.3 s);
- JSON: the C decoder holds the GIL for the whole document and a body of nothing but ``{},``
  costs ~0.5 s per MB, so documents above ``SMALL_JSON`` bytes are parsed by the Python
  scanner (strings still in C), which lets the loop run every few ms, and every document
  is held to ``JsonLimits`` (objects + arrays, nesting depth) while it is parsed;
- items (spans, data points, log records, and the resource/scope entries around them) are
  counted before any per-item work, against ``max_items``.
"""

from __future__ import annotations

import base64
import binascii
import json
import json.decoder
import json.scanner
from dataclasses import dataclass
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from mlvigil.core.errors import BadRequest, TooLarge

# Re-exported: collector.otlp_ingest inflates gzip OTLP bodies with it.
from mlvigil.core.http_body import gunzip_limited as gunzip_limited

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


# The C JSON decoder is used up to this size: it holds the GIL, but for at most a few ms.
SMALL_JSON = 64 * 1024


@dataclass(frozen=True)
class JsonLimits:
    # Objects plus arrays in one document (ingest.max_json_containers).
    max_containers: int = 1_000_000
    # Nesting depth; OTLP/JSON needs ~13 levels plus 3 per level of nested attribute values.
    max_depth: int = 64


def _check_tree(tree: Any, what: str, limits: JsonLimits) -> None:
    """Containers and depth of an already parsed (small) document, iteratively."""
    containers = 0
    stack: list[tuple[Any, int]] = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        containers += 1
        if depth > limits.max_depth:
            raise BadRequest(f"{what}: JSON nested deeper than {limits.max_depth} levels")
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    if containers > limits.max_containers:
        raise TooLarge(
            f"{what}: more than {limits.max_containers} JSON objects and arrays (ingest.max_json_containers)"
        )


# Not in typeshed's stubs; part of the json package since Python 2.6.
_JSON_OBJECT: Any = getattr(json.decoder, "JSONObject")  # noqa: B009
_JSON_ARRAY: Any = getattr(json.decoder, "JSONArray")  # noqa: B009
_PY_MAKE_SCANNER: Any = getattr(json.scanner, "py_make_scanner")  # noqa: B009


class _BoundedDecoder(json.JSONDecoder):
    """The Python scanner with a count of containers and the depth checked as it descends."""

    def __init__(self, what: str, limits: JsonLimits) -> None:
        super().__init__()
        self._what = what
        self._limits = limits
        self._containers = 0
        self._depth = 0
        # The Python scanner calls these two for every object and array it meets.
        self.parse_object = self._enter(_JSON_OBJECT)
        self.parse_array = self._enter(_JSON_ARRAY)
        self.scan_once = _PY_MAKE_SCANNER(self)

    def _enter(self, parse: Any) -> Any:
        def bounded(*args: Any, **kwargs: Any) -> Any:
            self._containers += 1
            if self._containers > self._limits.max_containers:
                raise TooLarge(
                    f"{self._what}: more than {self._limits.max_containers} JSON objects and arrays"
                    " (ingest.max_json_containers)"
                )
            self._depth += 1
            if self._depth > self._limits.max_depth:
                raise BadRequest(f"{self._what}: JSON nested deeper than {self._limits.max_depth} levels")
            try:
                return parse(*args, **kwargs)
            finally:
                self._depth -= 1

        return bounded


def load_json(data: bytes | str, what: str, limits: JsonLimits | None = None) -> Any:
    """Parse JSON ``data`` within ``limits``; BadRequest (malformed, too deep) or TooLarge."""
    limits = limits or JsonLimits()
    try:
        if isinstance(data, bytes):
            data = data.decode(json.detect_encoding(data), "surrogatepass")
        if len(data) <= SMALL_JSON:
            tree = json.loads(data)
            _check_tree(tree, what, limits)
            return tree
        return _BoundedDecoder(what, limits).decode(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"{what} is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadRequest(f"{what}: JSON nested deeper than {limits.max_depth} levels") from None


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


def decode(signal: str, body: bytes, content_type: str, limits: JsonLimits | None = None) -> Message:
    """Parse an OTLP export request of ``signal`` (traces, metrics, logs) from ``body``."""
    msg = REQUEST_TYPES[signal]()
    if content_type == PROTOBUF:
        try:
            msg.ParseFromString(body)
        except (DecodeError, RuntimeError, ValueError) as exc:
            raise BadRequest(f"invalid protobuf {type(msg).__name__}: {exc}") from None
        return msg
    tree = load_json(body, "OTLP/JSON body", limits)
    if not isinstance(tree, dict):
        raise BadRequest("invalid OTLP/JSON: the body must be a JSON object")
    _hex_ids_to_base64(tree)
    try:
        # OTLP receivers must ignore unknown fields (forward compatibility).
        json_format.ParseDict(tree, msg, ignore_unknown_fields=True)
    except (json_format.ParseError, binascii.Error, TypeError, ValueError) as exc:
        raise BadRequest(f"invalid OTLP/JSON {type(msg).__name__}: {exc}") from None
    except RecursionError:
        raise BadRequest(f"invalid OTLP/JSON {type(msg).__name__}: nested too deeply") from None
    return msg


_CONTAINERS = {
    "traces": ("resource_spans", "scope_spans", "spans"),
    "metrics": ("resource_metrics", "scope_metrics", "metrics"),
    "logs": ("resource_logs", "scope_logs", "log_records"),
}


def count_items(signal: str, msg: Message, max_items: int) -> int:
    """Spans, data points or log records in ``msg``, with the resource and scope (and, for
    metrics, metric) entries around them; TooLarge as soon as the count passes ``max_items``.

    The entries around the items count too: an export of two million empty resource entries
    holds no item but costs as much to walk as two million items.
    """
    resources_field, scopes_field, items_field = _CONTAINERS[signal]
    n = 0
    for res in getattr(msg, resources_field):
        scopes = getattr(res, scopes_field)
        n += 1 + len(scopes)
        for scope in scopes:
            items = getattr(scope, items_field)
            n += len(items)
            if signal == "metrics" and n <= max_items:
                for metric in items:
                    data = metric.WhichOneof("data")
                    n += len(getattr(metric, data).data_points) if data else 0
                    if n > max_items:
                        break
            if n > max_items:
                break
        if n > max_items:
            raise TooLarge(
                f"more than {max_items} items (spans, data points or log records, with the"
                " resource and scope entries around them) in one request; split the export"
                " or raise ingest.max_items_per_request"
            )
    return n


def encode_response(msg: Message, content_type: str) -> bytes:
    if content_type == PROTOBUF:
        return msg.SerializeToString()
    return json.dumps(json_format.MessageToDict(msg)).encode()
