"""OTLP AnyValue / KeyValue helpers shared by the normalisers."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from collector.otlp_decode import load_json
from mlvigil.core.errors import BadRequest, TooLarge
from mlvigil.core.records import json_text

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
    return value if isinstance(value, str) else json_text(value)


def get_float(attrs: Attrs, *keys: str) -> float | None:
    value = get(attrs, *keys)
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def get_int(attrs: Attrs, *keys: str) -> int | float | None:
    """An integer-valued attribute as sent (an int, or a float such as 12.0, inf or NaN):
    ``mlvigil.core.records.check_row`` converts it and rejects what its column cannot hold."""
    value = get(attrs, *keys)
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def to_json(attrs: Attrs) -> str:
    return json_text({k: value_of(v) for k, v in attrs.items()}) or "{}"


def parse_json(text: str, what: str) -> Any:
    """A JSON document carried in a string attribute, within the request's JSON limits;
    ValueError (the item is rejected) when it is not JSON or is too large or deep."""
    try:
        return load_json(text, what)
    except (BadRequest, TooLarge):
        # The reason is a metric label: no detail from the payload in it.
        raise ValueError(f"{what} is not JSON, or is larger or deeper than the JSON limits") from None
