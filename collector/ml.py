"""The ``mlvigil.*`` conventions for classic inference, label feedback and training steps.

docs/conventions.md is the reference for producers; the key tuples here are what it lists.
"""

from __future__ import annotations

from typing import Any

from collector.attributes import Attrs, get, get_float, get_int, get_str, parse_json, value_of
from mlvigil.core.records import json_text

MODEL = ("mlvigil.model.name",)
MODEL_VERSION = ("mlvigil.model.version",)
REQUEST_ID = ("mlvigil.inference.request_id",)
FEATURES = "mlvigil.inference.features"
FEATURE_PREFIX = "mlvigil.feature."
PREDICTION = ("mlvigil.inference.prediction",)
SCORE = ("mlvigil.inference.score",)

LABEL_REQUEST_ID = "mlvigil.label.request_id"
LABEL_VALUE = ("mlvigil.label.value",)

RUN_ID = "mlvigil.train.run_id"
TRAIN_FIELDS_INT = {
    "step": "mlvigil.train.step",
    "rank": "mlvigil.train.rank",
    "world_size": "mlvigil.train.world_size",
}
TRAIN_FIELDS_FLOAT = {
    "loss": "mlvigil.train.loss",
    "grad_norm": "mlvigil.train.grad_norm",
    "learning_rate": "mlvigil.train.learning_rate",
    "samples": "mlvigil.train.samples",
    "tokens": "mlvigil.train.tokens",
    "data_wait_s": "mlvigil.train.data_wait_seconds",
    "forward_s": "mlvigil.train.forward_seconds",
    "backward_s": "mlvigil.train.backward_seconds",
    "optimizer_s": "mlvigil.train.optimizer_seconds",
    "comm_s": "mlvigil.train.comm_seconds",
    "checkpoint_s": "mlvigil.train.checkpoint_seconds",
}
STEP_TIME = "mlvigil.train.step_time_seconds"
GPU_UUID = ("mlvigil.train.gpu_uuid", "hw.id")


def is_inference(attrs: Attrs) -> bool:
    return any(k.startswith(("mlvigil.inference.", FEATURE_PREFIX)) for k in attrs)


def is_label(attrs: Attrs) -> bool:
    return LABEL_REQUEST_ID in attrs


def is_training(attrs: Attrs) -> bool:
    return RUN_ID in attrs


def features_of(attrs: Attrs) -> dict[str, Any]:
    feats: dict[str, Any] = {}
    raw = get(attrs, FEATURES)
    if isinstance(raw, str):
        raw = parse_json(raw, FEATURES)
    if isinstance(raw, dict):
        feats.update(raw)
    elif raw is not None:
        raise ValueError(f"{FEATURES} must be a JSON object or a key-value list")
    plen = len(FEATURE_PREFIX)
    for key, v in attrs.items():
        if key.startswith(FEATURE_PREFIX):
            feats[key[plen:]] = value_of(v)
    return feats


def inference_row(attrs: Attrs, service: str | None, service_version: str | None) -> dict[str, Any]:
    prediction = get(attrs, *PREDICTION)
    return {
        "service": service,
        "model": get_str(attrs, *MODEL) or service,
        "model_version": get_str(attrs, *MODEL_VERSION) or service_version,
        "request_id": get_str(attrs, *REQUEST_ID),
        "features": json_text(features_of(attrs)),
        "prediction": json_text(prediction),
        "score": get_float(attrs, *SCORE),
    }


def label_row(attrs: Attrs, service: str | None) -> dict[str, Any]:
    return {
        "request_id": get_str(attrs, LABEL_REQUEST_ID),
        "service": service,
        "model": get_str(attrs, *MODEL) or service,
        "label": json_text(get(attrs, *LABEL_VALUE)),
    }


def training_row(attrs: Attrs, duration_s: float | None) -> dict[str, Any]:
    row: dict[str, Any] = {"run_id": get_str(attrs, RUN_ID)}
    for col, key in TRAIN_FIELDS_INT.items():
        row[col] = get_int(attrs, key)
    for col, key in TRAIN_FIELDS_FLOAT.items():
        row[col] = get_float(attrs, key)
    step_time = get_float(attrs, STEP_TIME)
    row["step_time_s"] = step_time if step_time is not None else duration_s
    row["gpu_uuid"] = get_str(attrs, *GPU_UUID)
    return row
