"""KServe and Seldon payload-logger CloudEvents -> ``inferences`` rows, halves joined by id.

KServe's logger posts each request and each response as a binary-mode CloudEvent
(``ce-type: org.kubeflow.serving.inference.request|response``, ``ce-id`` shared by both,
``ce-inferenceservicename``, ``ce-namespace``, ``ce-component``); Seldon Core's executor does
the same with ``io.seldon.serving.inference.*`` and ``ce-requestid``. Bodies are the V1
protocol (``instances``/``predictions``), the Open Inference Protocol V2 (``inputs``/
``outputs`` tensors) or Seldon's (``data.names`` + ``ndarray``/``tensor``). Structured-mode
events (``application/cloudevents+json``) are accepted too.

Each half is written at once (durable on acknowledgement); the store merges the second half
into the row the first one wrote, so request and response meet in one row whichever
arrives first and whichever replica takes it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from collector.otlp_decode import JsonLimits, load_json
from collector.otlp_ingest import OtlpIngest
from mlvigil.core.errors import BadRequest, TooLarge
from mlvigil.core.records import RecordBatch, RecordError, check_row, json_text

REQUEST_TYPES = {
    "org.kubeflow.serving.inference.request": "kserve",
    "io.seldon.serving.inference.request": "seldon",
}
RESPONSE_TYPES = {
    "org.kubeflow.serving.inference.response": "kserve",
    "io.seldon.serving.inference.response": "seldon",
}
# A tensor of more dimensions than this is not a model input anyone logs.
MAX_TENSOR_DIMS = 32


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadRequest(f"{where} must be a JSON array")
    return value


def _rows_of_tensor(shape_value: Any, data_value: Any, where: str, max_rows: int) -> list[list[Any]]:
    """Rows of a V2 (or Seldon) tensor whose data is flat (row-major) or already nested.

    The declared shape is never trusted for a size: it must describe exactly the data sent
    (the product of its dimensions is the number of values), so a 97-byte tensor claiming
    ``[10**18, 2]`` is refused before anything is allocated for it.
    """
    shape = _list(shape_value, f"{where}.shape")
    data = _list(data_value, f"{where}.data")
    if len(shape) > MAX_TENSOR_DIMS:
        raise BadRequest(f"{where}.shape has {len(shape)} dimensions; at most {MAX_TENSOR_DIMS}")
    for i, dim in enumerate(shape):
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 0:
            raise BadRequest(f"{where}.shape[{i}] must be a non-negative integer")
    if data and isinstance(data[0], list):  # nested: one list per row
        if shape and shape[0] != len(data):
            raise BadRequest(f"{where}.shape[0] is {shape[0]} but data has {len(data)} rows")
        if len(data) > max_rows:
            raise TooLarge(f"{where} has {len(data)} rows; at most {max_rows} per event")
        return [r if isinstance(r, list) else [r] for r in data]
    if not shape:
        return [list(data)]
    # Multiply with an early stop: a huge declared shape must not cost a huge integer either.
    declared = 1
    for dim in shape:
        declared *= dim
        if declared > len(data):
            break
    if declared != len(data):
        raise BadRequest(
            f"{where}.shape {shape[:MAX_TENSOR_DIMS]} does not match its data: {len(data)} values"
        )
    if len(shape) == 1:
        n, width = len(data), 1
    else:
        n, width = shape[0], math.prod(shape[1:])
    if n > max_rows:
        raise TooLarge(f"{where} has {n} rows; at most {max_rows} per event")
    return [data[i * width : (i + 1) * width] for i in range(n)]


def _named(prefix: str, row: list[Any]) -> dict[str, Any]:
    if len(row) == 1:
        return {prefix: row[0]}
    return {f"{prefix}_{j}": v for j, v in enumerate(row)}


def _names(value: Any, where: str) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
        raise BadRequest(f"{where} must be a list of strings")
    return value


def _instances_to_features(
    instances: list[Any], where: str, max_rows: int, names: list[str] | None = None
) -> list[dict[str, Any]]:
    if len(instances) > max_rows:
        raise TooLarge(f"{where} has {len(instances)} instances; at most {max_rows} per event")
    out = []
    for inst in instances:
        if isinstance(inst, dict):
            out.append(dict(inst))
        elif isinstance(inst, list):
            if names and len(names) == len(inst):
                out.append(dict(zip(names, inst, strict=True)))
            else:
                out.append({f"f{j}": v for j, v in enumerate(inst)})
        else:
            out.append({names[0] if names else "f0": inst})
    return out


def _tensor(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRequest(f"{where} must be a JSON object (a V2 tensor)")
    return value


def request_features(body: Any, max_rows: int) -> list[dict[str, Any]]:
    """One feature dict per instance of a V1, V2 or Seldon request body."""
    if isinstance(body, dict):
        if isinstance(body.get("instances"), list):
            return _instances_to_features(body["instances"], "instances", max_rows)
        inputs = body.get("inputs")
        if (
            isinstance(inputs, list)
            and inputs
            and isinstance(inputs[0], dict)
            and ("datatype" in inputs[0] or "data" in inputs[0])
        ):
            per_input: list[list[dict[str, Any]]] = []
            for k, value in enumerate(inputs):
                where = f"inputs[{k}]"
                tensor = _tensor(value, where)
                rows = _rows_of_tensor(tensor.get("shape"), tensor.get("data"), where, max_rows)
                name = tensor.get("name", "input")
                per_input.append([_named(name if isinstance(name, str) else f"input{k}", r) for r in rows])
            n = len(per_input[0])
            if any(len(p) != n for p in per_input):
                raise BadRequest("inputs disagree on the batch size (their first dimensions differ)")
            merged: list[dict[str, Any]] = [{} for _ in range(n)]
            for rows_of_input in per_input:
                for i, feats in enumerate(rows_of_input):
                    merged[i].update(feats)
            return merged
        if isinstance(inputs, list):  # V1 columnar "inputs"
            return _instances_to_features(inputs, "inputs", max_rows)
        if isinstance(body.get("data"), dict):
            data = body["data"]
            names = _names(data.get("names"), "data.names")
            if isinstance(data.get("ndarray"), list):
                return _instances_to_features(data["ndarray"], "data.ndarray", max_rows, names)
            if isinstance(data.get("tensor"), dict):
                t = data["tensor"]
                rows = _rows_of_tensor(t.get("shape"), t.get("values"), "data.tensor", max_rows)
                return _instances_to_features(rows, "data.tensor", max_rows, names)
        if isinstance(body.get("jsonData"), dict):
            return [dict(body["jsonData"])]
    raise BadRequest("request body is not a KServe V1/V2 or Seldon inference request")


def _version(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise BadRequest("model_version must be a string")


def response_predictions(body: Any, max_rows: int) -> tuple[list[Any], str | None]:
    """Predictions per instance and the model version, from a V1, V2 or Seldon response."""
    if isinstance(body, dict):
        if isinstance(body.get("predictions"), list):
            if len(body["predictions"]) > max_rows:
                raise TooLarge(f"predictions has {len(body['predictions'])} entries; at most {max_rows}")
            return list(body["predictions"]), None
        if isinstance(body.get("outputs"), list) and body["outputs"]:
            first = _tensor(body["outputs"][0], "outputs[0]")
            rows = _rows_of_tensor(first.get("shape"), first.get("data"), "outputs[0]", max_rows)
            return [r[0] if len(r) == 1 else r for r in rows], _version(body.get("model_version"))
        if isinstance(body.get("data"), dict):
            data = body["data"]
            if isinstance(data.get("ndarray"), list):
                if len(data["ndarray"]) > max_rows:
                    raise TooLarge(f"data.ndarray has {len(data['ndarray'])} rows; at most {max_rows}")
                return list(data["ndarray"]), None
            if isinstance(data.get("tensor"), dict):
                t = data["tensor"]
                rows = _rows_of_tensor(t.get("shape"), t.get("values"), "data.tensor", max_rows)
                return [r[0] if len(r) == 1 else r for r in rows], None
        if "jsonData" in body:
            return [body["jsonData"]], None
    raise BadRequest("response body is not a KServe V1/V2 or Seldon inference response")


def _score(prediction: Any) -> float | None:
    """The prediction as one number (a class probability vector: its top value), if it is one."""
    try:
        if isinstance(prediction, bool | int | float):
            return float(prediction)
        if (
            isinstance(prediction, list)
            and prediction
            and all(isinstance(x, int | float) for x in prediction)
        ):
            return float(max(prediction))
    except OverflowError:  # an integer beyond a double's range is no score
        return None
    return None


def parse_event(
    headers: Mapping[str, str],
    body: bytes,
    now: float,
    max_rows: int = 10_000,
    limits: JsonLimits | None = None,
) -> list[dict[str, Any]]:
    """The inference half-rows one CloudEvent carries (binary or structured mode), checked
    against the ``inferences`` columns; BadRequest or TooLarge (at most ``max_rows`` rows)."""
    h = {k.lower(): v for k, v in headers.items()}
    payload = load_json(body, "CloudEvent data", limits) if body else None
    if h.get("content-type", "").startswith("application/cloudevents+json"):
        if not isinstance(payload, dict):
            raise BadRequest("structured CloudEvent must be a JSON object")
        for k, v in payload.items():
            if k in ("data", "data_base64"):
                continue
            if not isinstance(v, str | int | float | bool) and v is not None:
                raise BadRequest(f"CloudEvent attribute {k[:64]!r} must be a string")
            h[f"ce-{k.lower()}"] = str(v)
        payload = payload.get("data")
    ce_type = h.get("ce-type")
    if not ce_type:
        raise BadRequest("missing ce-type: not a CloudEvent")
    if h.get("ce-specversion") not in ("1.0", "0.3"):
        raise BadRequest(f"unsupported CloudEvents specversion {h.get('ce-specversion', '')[:16]!r}")
    request_id = h.get("ce-requestid") or h.get("ce-id")
    if not request_id:
        raise BadRequest("missing ce-id")
    service = h.get("ce-inferenceservicename") or h.get("ce-modelid") or h.get("ce-source")
    model = h.get("ce-modelid") or service
    # ce-component names the KServe component (predictor, transformer), not a model version;
    # the version comes from the V2 response body when the server reports one.
    version = h.get("ce-modelversion")
    common = {"ts": now, "service": service, "model": model, "model_version": version}
    rows: list[dict[str, Any]] = []
    if ce_type in REQUEST_TYPES:
        feats = request_features(payload, max_rows)
        source = REQUEST_TYPES[ce_type]
        for i, f in enumerate(feats):
            rid = request_id if len(feats) == 1 else f"{request_id}:{i}"
            rows.append({**common, "request_id": rid, "source": source, "features": json_text(f)})
    elif ce_type in RESPONSE_TYPES:
        preds, body_version = response_predictions(payload, max_rows)
        source = RESPONSE_TYPES[ce_type]
        for i, p in enumerate(preds):
            rid = request_id if len(preds) == 1 else f"{request_id}:{i}"
            rows.append(
                {
                    **common,
                    "model_version": body_version or version,
                    "request_id": rid,
                    "source": source,
                    "prediction": json_text(p),
                    "score": _score(p),
                }
            )
    else:
        raise BadRequest(f"unsupported CloudEvent type {ce_type[:128]!r}")
    for row in rows:
        try:
            check_row("inferences", row)
        except RecordError as exc:
            raise BadRequest(f"CloudEvent: {exc}") from None
    return rows


async def ingest_event(ingest: OtlpIngest, headers: Mapping[str, str], body: bytes, now: float) -> int:
    """Parse one CloudEvent on a decode worker thread, then store its rows durably (one batched
    merge, however many instances it carries); the number of rows. Raises BadRequest,
    TooLarge, and Overloaded/ShuttingDown from the queue."""
    cfg = ingest.config
    rows = await ingest.off_loop(
        parse_event, dict(headers), body, now, cfg.max_items_per_request, ingest.json_limits
    )
    # A merge meets the half that OTLP wrote only once that half is loaded from the log:
    # wait (bounded) for everything acknowledged before this event.
    await ingest.visible(raw_spans=False)
    await ingest.pipeline.submit(RecordBatch(inference_merges=rows))
    return len(rows)
