"""Typed API endpoints: one set of models validates a request and describes it in OpenAPI.

A handler declares its path, query and body models with ``@endpoint``; the wrapper validates
the request against them before the handler runs (400 with the reason otherwise) and
``openapi_document`` builds the OpenAPI description from the same models, so the document
and the validation cannot drift apart. ``error_response`` writes an exception as the API's
answer, by the listeners' one mapping (``mlvigil.core.errors``); the API's middleware calls it
for every route.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar

import numpy as np
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.json_schema import models_json_schema

from mlvigil.core.errors import ApiError, format_validation, refusal_of
from mlvigil.core.http_body import read_body

log = logging.getLogger(__name__)

#: Deepest nesting of arrays and objects accepted in a JSON body (checked before parsing, so a
#: body nested thousands deep is a 400, never a RecursionError).
MAX_JSON_DEPTH = 32
#: Most query parameters accepted on one request.
MAX_QUERY_PARAMS = 64
#: Longest query parameter value accepted (ids, names and label values, not documents).
MAX_QUERY_VALUE_CHARS = 512
#: Longest request line the API's HTTP parser reads: every parameter at its longest, each
#: character percent-encoded, fits (a longer line would be refused before the API sees it).
MAX_REQUEST_LINE_BYTES = 256 * 1024

#: The request body limit of the API (``ingest.max_request_bytes``), set by the API on its app.
MAX_BODY_KEY = web.AppKey("mlvigil_max_body", int)
_DEFAULT_MAX_BODY = 16 * 1024 * 1024


def body_limit(request: web.Request) -> int:
    return request.app.get(MAX_BODY_KEY, _DEFAULT_MAX_BODY)


Handler = Callable[..., Awaitable[web.StreamResponse]]


class QueryModel(BaseModel):
    """Base of query-parameter models: unknown parameters are errors, numbers must be finite."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, str_max_length=MAX_QUERY_VALUE_CHARS)


#: Field types shared by request models of every plugin's routes.
EpochSeconds = Annotated[float, Field(description="Unix epoch seconds.")]
ShortText = Annotated[str, Field(max_length=256)]


class BodyModel(BaseModel):
    """Base of JSON body models: unknown fields are errors, numbers must be finite."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


def _also_a_bare_list(schema: dict[str, Any], cls: type[BaseModel]) -> None:
    key: str = getattr(cls, "list_key", "")
    as_object = {k: v for k, v in schema.items() if k not in ("title", "description")}
    as_list = {k: v for k, v in schema["properties"][key].items() if k != "title"}
    head: dict[str, Any] = {k: schema[k] for k in ("title", "description") if k in schema}
    schema.clear()
    schema.update(head, anyOf=[as_object, as_list])


class ListBody(BodyModel):
    """A body given as ``{list_key: [...]}`` or as the bare list (both in its JSON schema)."""

    model_config = ConfigDict(json_schema_extra=_also_a_bare_list)
    list_key: ClassVar[str]

    @model_validator(mode="before")
    @classmethod
    def _bare_list(cls, data: Any) -> Any:
        return {cls.list_key: data} if isinstance(data, list) else data


# -- JSON out ----------------------------------------------------------------------------------
def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def to_json(data: Any) -> str:
    """Strict JSON text: NaN and infinities become null, other objects their ``str``."""
    try:
        return json.dumps(data, default=str, allow_nan=False)
    except ValueError:  # a NaN somewhere: the rare case pays for the walk
        return json.dumps(_finite(data), default=str, allow_nan=False)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=to_json(data), content_type="application/json", headers=headers)


def error(status: int, reason: str, **headers: str) -> web.Response:
    """The API's error answer: ``{"error": reason}``."""
    return json_response({"error": reason}, status, headers or None)


# -- JSON in -----------------------------------------------------------------------------------
# Every byte but the structural ones: a quote and the four brackets.
_NOT_STRUCTURAL = bytes(c for c in range(256) if c not in b'"[]{}')
_DEPTH_CHUNK = 1 << 20


def json_depth_exceeds(raw: bytes, limit: int) -> bool:
    """Whether JSON text ``raw`` nests arrays/objects deeper than ``limit`` (brackets in strings
    do not count).

    Escaped backslashes and escaped quotes go first, leaving the quotes that open or close
    strings; then only quotes and brackets are kept and numpy counts depth outside strings,
    chunk by chunk: fast and little memory, whatever the input.
    """
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    bare = raw.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, delete=_NOT_STRUCTURAL)
    depth = quotes = 0
    for start in range(0, len(bare), _DEPTH_CHUNK):
        chunk = np.frombuffer(bare, dtype=np.uint8, count=min(_DEPTH_CHUNK, len(bare) - start), offset=start)
        is_quote = chunk == ord('"')
        in_string = ((np.cumsum(is_quote, dtype=np.int64) + quotes) & 1).astype(bool)
        opens = (chunk == ord("[")) | (chunk == ord("{"))
        closes = (chunk == ord("]")) | (chunk == ord("}"))
        step = np.where(in_string, 0, opens.astype(np.int32) - closes.astype(np.int32))
        running = np.cumsum(step) + depth
        if int(running.max()) > limit:
            return True
        depth = int(running[-1])
        quotes += int(is_quote.sum())
    return False


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON; send null or a finite number")


_MAYBE_HUGE_NUMBER = re.compile(r"[eE][+-]?\d{3}|\d{309}")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def parse_json(raw: bytes, where: str = "body") -> Any:
    """Parse a JSON document from outside: depth-bounded, UTF-8, finite numbers only."""
    if json_depth_exceeds(raw, MAX_JSON_DEPTH):
        raise ApiError(400, f"{where}: JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        text = raw.decode("utf-8")
        # Checking every float costs a Python call each; only a body with a number that could
        # overflow (a 3-digit exponent or 309+ digits) pays for it.
        parse_float = _finite_float if _MAYBE_HUGE_NUMBER.search(text) else None
        return json.loads(text, parse_constant=_no_constant, parse_float=parse_float)
    except UnicodeDecodeError as exc:
        raise ApiError(400, f"{where}: not UTF-8 (byte {exc.start})") from None
    except RecursionError:  # unreachable after the depth check; kept so it can never be a 500
        raise ApiError(400, f"{where}: JSON nested too deep") from None
    except ValueError as exc:  # JSONDecodeError, a refused constant, an over-long integer
        raise ApiError(400, f"{where}: invalid JSON: {exc}") from None


#: Bodies above this many bytes are parsed and validated off the event loop.
THREAD_PARSE_BYTES = 64 * 1024


async def read_model(request: web.Request, model: type[BaseModel]) -> Any:
    """The JSON body (gzip allowed, within the API's body limit) validated as ``model``."""
    raw = await read_body(request, body_limit(request))
    if not raw.strip():
        raise ApiError(400, "body: empty; send a JSON document")

    def parse() -> Any:
        return validate(model, parse_json(raw), "body")

    # A large body would hold every other request up while it is parsed: off the loop with it.
    return await asyncio.to_thread(parse) if len(raw) > THREAD_PARSE_BYTES else parse()


def validate(model: type[BaseModel], data: Any, where: str) -> Any:
    """``data`` as ``model``, or ApiError(400) naming each bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ApiError(400, format_validation(exc, where)) from None


def query_dict(request: web.Request) -> dict[str, str]:
    """The query parameters as a dict; each may be given once."""
    q = request.query
    if len(q) > MAX_QUERY_PARAMS:
        raise ApiError(400, f"query: {len(q)} parameters; at most {MAX_QUERY_PARAMS}")
    out: dict[str, str] = {}
    for name, value in q.items():
        if name in out:
            raise ApiError(400, f"query parameter {name!r} given more than once")
        out[name] = value
    return out


# -- endpoints ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Response:
    """A documented response: description and JSON schema (a model or a schema dict)."""

    description: str
    schema: type[BaseModel] | dict[str, Any] | None = None
    media_type: str = "application/json"
    headers: tuple[str, ...] = ()


ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string", "description": "What was wrong and what to do."}},
}

_ERROR_TEXT = {
    400: "The request is malformed; the reason says which parameter or field and why.",
    401: "Missing or wrong bearer token.",
    404: "No such resource.",
    409: "The request conflicts with the resource's state.",
    413: "The body is larger than ingest.max_request_bytes (or a count limit).",
    415: "Unsupported content type or encoding.",
    429: "The ingest queue is full; retry after Retry-After seconds.",
    503: "Shutting down or the store cannot take writes; retry after Retry-After seconds.",
}


@dataclass(frozen=True)
class EndpointSpec:
    summary: str
    description: str = ""
    path: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    body_required: bool = True
    # Other accepted body media types, documented as text (the handler parses them).
    body_media: tuple[str, ...] = ()
    ok: dict[int, Response] = field(default_factory=dict)
    errors: tuple[int, ...] = ()
    tags: tuple[str, ...] = ()
    # A body the handler parses itself (no model): media type -> JSON schema, for the document.
    raw_body: dict[str, dict[str, Any]] = field(default_factory=dict)


_SPEC_ATTR = "__mlvigil_endpoint__"


def endpoint(
    summary: str,
    *,
    description: str = "",
    path: type[BaseModel] | None = None,
    query: type[BaseModel] | None = None,
    body: type[BaseModel] | None = None,
    body_required: bool = True,
    body_media: tuple[str, ...] = (),
    ok: dict[int, Response] | None = None,
    errors: Iterable[int] = (),
    tags: Iterable[str] = (),
    raw_body: dict[str, dict[str, Any]] | None = None,
) -> Callable[[Handler], Handler]:
    """Declare a handler's request models and responses; the wrapper validates before it runs.

    The handler receives the validated models as keyword arguments ``path``, ``query`` and
    ``body`` (those declared). A body given with one of ``body_media`` is left for the handler.
    """
    declared = set(errors)
    if path or query or body:
        declared.add(400)
    if body:
        declared.update({413, 415})
    spec = EndpointSpec(
        summary=summary,
        description=description,
        path=path,
        query=query,
        body=body,
        body_required=body_required,
        body_media=body_media,
        ok=ok or {200: Response("OK")},
        errors=tuple(sorted(declared)),
        tags=tuple(tags),
        raw_body=raw_body or {},
    )

    def wrap(fn: Handler) -> Handler:
        @functools.wraps(fn)
        async def handler(*args: Any) -> web.StreamResponse:
            request: web.Request = args[-1]
            try:
                return await fn(*args, **await _arguments(spec, request))
            except Exception as exc:  # answered here too, so a route works on any app
                return error_response(exc)

        setattr(handler, _SPEC_ATTR, spec)
        return handler

    return wrap


async def _arguments(spec: EndpointSpec, request: web.Request) -> dict[str, Any]:
    """The handler's keyword arguments: path, query and body validated against their models."""
    kwargs: dict[str, Any] = {}
    if spec.path is not None:
        kwargs["path"] = validate(spec.path, dict(request.match_info), "path")
    if spec.query is not None:
        kwargs["query"] = validate(spec.query, query_dict(request), "query")
    if spec.body is not None:
        other_media = bool(spec.body_media) and request.content_type in spec.body_media
        if other_media or (not spec.body_required and not request.can_read_body):
            kwargs["body"] = None
        else:
            if request.content_type not in ("application/json", "application/octet-stream", ""):
                accepted = ", ".join(("application/json", *spec.body_media))
                raise ApiError(415, f"content type {request.content_type!r}; send {accepted}")
            kwargs["body"] = await read_model(request, spec.body)
    return kwargs


def spec_of(handler: Any) -> EndpointSpec | None:
    return getattr(handler, _SPEC_ATTR, None)


# -- exceptions -> statuses --------------------------------------------------------------------
def error_response(exc: BaseException) -> web.StreamResponse:
    """An exception raised while handling a request as the API's JSON answer: the listeners'
    one mapping (``mlvigil.core.errors.refusal_of``), plus aiohttp's own HTTP exceptions."""
    refusal = refusal_of(exc)
    if refusal is not None:
        return error(refusal.http, refusal.reason, **refusal.http_headers())
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            return exc
        reason = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
        if exc.status == 405:
            reason = f"method {exc.method} not allowed; allowed: {', '.join(sorted(exc.allowed_methods))}"  # type: ignore[attr-defined]
        elif exc.status == 404:
            reason = "no such route; see /openapi.json"
        elif exc.status == 413:
            reason = f"body too large: {exc.reason}"
        resp = error(exc.status, reason)
        for name in ("Allow", "Retry-After", "WWW-Authenticate"):
            if name in exc.headers:
                resp.headers[name] = exc.headers[name]
        return resp
    log.exception("internal error while handling a request", exc_info=exc)
    return error(500, "internal error; the service log has the details")


# -- OpenAPI -----------------------------------------------------------------------------------
def _schema_of(
    ref: type[BaseModel] | dict[str, Any] | None, refs: dict[type[BaseModel], dict[str, Any]]
) -> dict[str, Any] | None:
    if ref is None or isinstance(ref, dict):
        return ref
    return refs[ref]


def _not_null(prop: dict[str, Any]) -> dict[str, Any]:
    """A parameter's schema without its ``null`` alternative: absent is how a query says null."""
    alternatives = [a for a in prop.get("anyOf", []) if a != {"type": "null"}]
    if "anyOf" in prop and len(alternatives) == 1:
        merged = {k: v for k, v in prop.items() if k != "anyOf"}
        return {**alternatives[0], **merged}
    return prop


def _parameters(model: type[BaseModel], where: str, defs: dict[str, Any]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    defs.update(schema.pop("$defs", {}))
    required = set(schema.get("required", []))
    params = []
    for name, prop in schema.get("properties", {}).items():
        prop = _not_null(dict(prop))
        description = prop.pop("description", None)
        prop.pop("title", None)
        if prop.get("default", 0) is None:
            del prop["default"]
        param: dict[str, Any] = {"name": name, "in": where, "required": where == "path" or name in required}
        if description:
            param["description"] = description
        param["schema"] = prop
        params.append(param)
    extra = schema.get("additionalProperties")
    if where == "query" and isinstance(extra, dict):
        extra_schema: dict[str, Any] = {"type": "object", "additionalProperties": extra}
        if "propertyNames" in schema:
            extra_schema["propertyNames"] = schema["propertyNames"]
        params.append(
            {
                "name": schema.get("x-extra-name", "filters"),
                "in": "query",
                "required": False,
                "description": schema.get("x-extra-description", "Other parameters."),
                "style": "form",
                "explode": True,
                "schema": extra_schema,
            }
        )
    return params


def openapi_document(
    routes: Iterable[web.AbstractRoute],
    *,
    title: str,
    version: str,
    secured: bool,
    open_paths: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """OpenAPI 3.1 for every route with a declared endpoint; ``open_paths`` need no token."""
    models: list[type[BaseModel]] = []
    entries = []
    for route in routes:
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        if not path or route.method == "HEAD":
            continue
        spec = spec_of(route.handler)
        if spec is None:
            continue  # undeclared routes (catch-alls) stay out of the contract
        entries.append((path, route.method.lower(), spec))
        if spec.body is not None:
            models.append(spec.body)
        for resp in spec.ok.values():
            if isinstance(resp.schema, type):
                models.append(resp.schema)
    unique = list(dict.fromkeys(models))
    refs_map, top = models_json_schema(
        [(m, "validation") for m in unique], ref_template="#/components/schemas/{model}"
    )
    refs = {m: refs_map[(m, "validation")] for m in unique}
    components: dict[str, Any] = dict(top.get("$defs", {}))
    components["Error"] = ERROR_SCHEMA
    paths: dict[str, dict[str, Any]] = {}
    for path, method, spec in entries:
        params: list[dict[str, Any]] = []
        if spec.path is not None:
            params += _parameters(spec.path, "path", components)
        if spec.query is not None:
            params += _parameters(spec.query, "query", components)
        op: dict[str, Any] = {"summary": spec.summary, "operationId": f"{method}_{_op_name(path)}"}
        if spec.description:
            op["description"] = spec.description
        if spec.tags:
            op["tags"] = list(spec.tags)
        op["parameters"] = params
        if spec.body is not None:
            content: dict[str, Any] = {"application/json": {"schema": _schema_of(spec.body, refs)}}
            for media in spec.body_media:
                content[media] = {"schema": {"type": "string"}}
            op["requestBody"] = {"required": spec.body_required, "content": content}
        elif spec.raw_body:
            op["requestBody"] = {
                "required": True,
                "content": {m: {"schema": v} for m, v in spec.raw_body.items()},
            }
        responses: dict[str, Any] = {}
        for status, resp in sorted(spec.ok.items()):
            entry: dict[str, Any] = {"description": resp.description}
            schema = _schema_of(resp.schema, refs)
            if schema is not None:
                entry["content"] = {resp.media_type: {"schema": schema}}
            if resp.headers:
                entry["headers"] = {h: {"schema": {"type": "string"}} for h in resp.headers}
            responses[str(status)] = entry
        if path in open_paths:
            op["security"] = []
        for status in sorted({*spec.errors} | (set() if path in open_paths else {401})):
            entry = {
                "description": _ERROR_TEXT.get(status, "Error."),
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            }
            if status in (429, 503):
                entry["headers"] = {"Retry-After": {"schema": {"type": "integer"}}}
            responses[str(status)] = entry
        op["responses"] = responses
        paths.setdefault(path, {})[method] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "components": {
            "schemas": dict(sorted(components.items())),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}] if secured else [],
        "paths": dict(sorted(paths.items())),
    }


def _op_name(path: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", path).strip("_") or "root"
