"""OTLP AnyValue / KeyValue helpers shared by the normalisers."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

# Attributes stay as AnyValue messages in the dict and are decoded only when read: most
# spans carry many attributes the normaliser never looks at.
Attrs = Mapping[str, AnyValue]


def value_of(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind == "int_value":
        return v.int_value
    if kind == "double_value":
        return v.double_value
    if kind == "bool_value":
        return v.bool_value
    if kind == "array_value":
        return [value_of(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: value_of(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return None


def attr_map(kvs: Iterable[KeyValue]) -> dict[str, AnyValue]:
    return {kv.key: kv.value for kv in kvs}


def get(attrs: Attrs, *keys: str) -> Any:
    """The first of ``keys`` present, decoded; None if none is."""
    for key in keys:
        v = attrs.get(key)
        if v is not None:
            return value_of(v)
    return None


def get_str(attrs: Attrs, *keys: str) -> str | None:
    value = get(attrs, *keys)
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value)


def get_float(attrs: Attrs, *keys: str) -> float | None:
    value = get(attrs, *keys)
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def get_int(attrs: Attrs, *keys: str) -> int | None:
    value = get_float(attrs, *keys)
    return int(value) if value is not None and value == value else None


def to_json(attrs: Attrs) -> str:
    return json.dumps({k: value_of(v) for k, v in attrs.items()}, separators=(",", ":"), default=str)
