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

import json
import math
from collections.abc import Mapping
from typing import Any

from collector.otlp_decode import BadRequest

REQUEST_TYPES = {
    "org.kubeflow.serving.inference.request": "kserve",
    "io.seldon.serving.inference.request": "seldon",
}
RESPONSE_TYPES = {
    "org.kubeflow.serving.inference.response": "kserve",
    "io.seldon.serving.inference.response": "seldon",
}


def _rows_of_tensor(shape: list[int], data: list[Any]) -> list[list[Any]]:
    """Rows of a V2 tensor whose data is flat (row-major) or already nested."""
    if data and isinstance(data[0], list):
        return [r if isinstance(r, list) else [r] for r in data]
    if not shape:
        return [list(data)]
    n = shape[0] if len(shape) > 1 else len(data)
    width = math.prod(shape[1:]) if len(shape) > 1 else 1
    return [list(data[i * width : (i + 1) * width]) for i in range(n)]


def _named(prefix: str, row: list[Any]) -> dict[str, Any]:
    if len(row) == 1:
        return {prefix: row[0]}
    return {f"{prefix}_{j}": v for j, v in enumerate(row)}


def _instances_to_features(instances: list[Any], names: list[str] | None = None) -> list[dict[str, Any]]:
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


def request_features(body: Any) -> list[dict[str, Any]]:
    """One feature dict per instance of a V1, V2 or Seldon request body."""
    if isinstance(body, dict):
        if isinstance(body.get("instances"), list):
            return _instances_to_features(body["instances"])
        if (
            isinstance(body.get("inputs"), list)
            and body["inputs"]
            and isinstance(body["inputs"][0], dict)
            and ("datatype" in body["inputs"][0] or "data" in body["inputs"][0])
        ):
            per_input: list[list[dict[str, Any]]] = []
            for tensor in body["inputs"]:
                tensor_rows = _rows_of_tensor(list(tensor.get("shape") or []), list(tensor.get("data") or []))
                per_input.append([_named(str(tensor.get("name", "input")), r) for r in tensor_rows])
            n = max(len(p) for p in per_input)
            merged: list[dict[str, Any]] = [{} for _ in range(n)]
            for rows in per_input:
                for i, feats in enumerate(rows):
                    merged[i].update(feats)
            return merged
        if isinstance(body.get("inputs"), list):  # V1 columnar "inputs"
            return _instances_to_features(body["inputs"])
        if isinstance(body.get("data"), dict):
            data = body["data"]
            names = data.get("names")
            if isinstance(data.get("ndarray"), list):
                return _instances_to_features(data["ndarray"], names)
            if isinstance(data.get("tensor"), dict):
                t = data["tensor"]
                return _instances_to_features(
                    _rows_of_tensor(list(t.get("shape") or []), list(t.get("values") or [])), names
                )
        if isinstance(body.get("jsonData"), dict):
            return [dict(body["jsonData"])]
    raise BadRequest("request body is not a KServe V1/V2 or Seldon inference request")


def response_predictions(body: Any) -> tuple[list[Any], str | None]:
    """Predictions per instance and the model version, from a V1, V2 or Seldon response."""
    if isinstance(body, dict):
        if isinstance(body.get("predictions"), list):
            return list(body["predictions"]), None
        if isinstance(body.get("outputs"), list) and body["outputs"]:
            first = body["outputs"][0]
            rows = _rows_of_tensor(list(first.get("shape") or []), list(first.get("data") or []))
            return [r[0] if len(r) == 1 else r for r in rows], body.get("model_version")
        if isinstance(body.get("data"), dict):
            data = body["data"]
            if isinstance(data.get("ndarray"), list):
                return list(data["ndarray"]), None
            if isinstance(data.get("tensor"), dict):
                t = data["tensor"]
                rows = _rows_of_tensor(list(t.get("shape") or []), list(t.get("values") or []))
                return [r[0] if len(r) == 1 else r for r in rows], None
        if "jsonData" in body:
            return [body["jsonData"]], None
    raise BadRequest("response body is not a KServe V1/V2 or Seldon inference response")


def _score(prediction: Any) -> float | None:
    if isinstance(prediction, bool):
        return float(prediction)
    if isinstance(prediction, int | float):
        return float(prediction)
    if isinstance(prediction, list) and prediction and all(isinstance(x, int | float) for x in prediction):
        return float(max(prediction))
    return None


def parse_event(headers: Mapping[str, str], body: bytes, now: float) -> list[dict[str, Any]]:
    """The inference half-rows one CloudEvent carries (binary or structured mode)."""
    h = {k.lower(): v for k, v in headers.items()}
    try:
        payload = json.loads(body) if body else None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"CloudEvent data is not JSON: {exc}") from None
    if h.get("content-type", "").startswith("application/cloudevents+json"):
        if not isinstance(payload, dict):
            raise BadRequest("structured CloudEvent must be a JSON object")
        h.update({f"ce-{k.lower()}": str(v) for k, v in payload.items() if k not in ("data", "data_base64")})
        payload = payload.get("data")
    ce_type = h.get("ce-type")
    if not ce_type:
        raise BadRequest("missing ce-type: not a CloudEvent")
    if h.get("ce-specversion") not in ("1.0", "0.3"):
        raise BadRequest(f"unsupported CloudEvents specversion {h.get('ce-specversion')!r}")
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
        feats = request_features(payload)
        source = REQUEST_TYPES[ce_type]
        for i, f in enumerate(feats):
            rid = request_id if len(feats) == 1 else f"{request_id}:{i}"
            rows.append(
                {**common, "request_id": rid, "source": source, "features": json.dumps(f, default=str)}
            )
    elif ce_type in RESPONSE_TYPES:
        preds, body_version = response_predictions(payload)
        source = RESPONSE_TYPES[ce_type]
        for i, p in enumerate(preds):
            rid = request_id if len(preds) == 1 else f"{request_id}:{i}"
            rows.append(
                {
                    **common,
                    "model_version": body_version or version,
                    "request_id": rid,
                    "source": source,
                    "prediction": json.dumps(p, default=str),
                    "score": _score(p),
                }
            )
    else:
        raise BadRequest(f"unsupported CloudEvent type {ce_type!r}")
    return rows
