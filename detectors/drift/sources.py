"""Columns a monitor compares: from store rows (inferences, labels, LLM calls) or from files.

Every monitor kind turns its rows into named columns (lists or arrays), so the reference
and the window of one monitor have the same shape whichever source they came from.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from detectors.drift.profile import Labels, rows_to_columns

Columns = dict[str, Any]
INFERENCE_COLUMNS = [
    "ts",
    "service",
    "model",
    "model_version",
    "request_id",
    "features",
    "prediction",
    "score",
]
LLM_COLUMNS = [
    "ts",
    "service",
    "request_model",
    "response_model",
    "input_tokens",
    "output_tokens",
    "latency_s",
    "ttft_s",
    "finish_reasons",
    "error",
    "prompt",
    "completion",
]
EMBEDDING_DIM = 64


def numpy_columns(raw: Mapping[str, np.ndarray]) -> Columns:
    """DuckDB's ``fetchnumpy`` result as columns: numbers as float64 with NaN for NULL,
    everything else as objects with None for NULL (booleans as the strings True/False)."""
    out: Columns = {}
    for name, arr in raw.items():
        if isinstance(arr, np.ma.MaskedArray):
            masked: Any = arr
            if arr.dtype.kind in "fiu":
                out[name] = masked.astype(np.float64).filled(np.nan)
            else:
                # Not ``filled(None)``: None means "the default fill value", '?' for objects,
                # which turned every NULL text value into a category "?".
                values = np.asarray(masked.data, dtype=object).copy()
                values[np.ma.getmaskarray(masked)] = None
                out[name] = values
        elif arr.dtype.kind in "fiu":
            out[name] = arr.astype(np.float64)
        elif arr.dtype.kind == "b":
            out[name] = arr.astype(str).astype(object)
        else:
            out[name] = arr.astype(object)
    return out


def window_arrays(numeric: Mapping[str, Any], text: Mapping[str, Any]) -> tuple[Columns, Columns]:
    """``Store.feature_window``'s feature columns as arrays: numbers as float64 with NaN for
    missing, labels as objects with None for missing (lists or DuckDB's numpy results)."""

    def arrays(cols: Mapping[str, Any], dtype: Any) -> Columns:
        out: Columns = {}
        for name, col in cols.items():
            if isinstance(col, np.ndarray):
                out.update(numpy_columns({name: col}))
            else:
                out[name] = np.array(col, dtype=dtype)
            if dtype is np.float64 and out[name].dtype != np.float64:
                out[name] = np.array([np.nan if v is None else float(v) for v in out[name]], dtype=np.float64)
        return out

    labels = {name: col.view(Labels) for name, col in arrays(text, object).items()}
    return arrays(numeric, np.float64), labels


def _loads(text: Any) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except (TypeError, json.JSONDecodeError):
        return text


def feature_columns(rows: Mapping[str, Sequence[Any]]) -> Columns:
    """Feature columns from the ``features`` JSON objects of inference rows."""
    dicts = []
    for text in rows.get("features", []):
        value = _loads(text)
        dicts.append(value if isinstance(value, dict) else {})
    cols = rows_to_columns(dicts)
    # Nested values (lists, objects) are not features a univariate test can read.
    return {k: v for k, v in cols.items() if not any(isinstance(x, list | dict) for x in v)}


def prediction_columns(rows: Mapping[str, Sequence[Any]]) -> Columns:
    """``prediction`` (a number, or a class label; a probability vector gives its argmax) and ``score``."""
    preds: list[Any] = []
    for text in rows.get("prediction", []):
        value = _loads(text)
        if isinstance(value, list) and value and all(isinstance(x, int | float) for x in value):
            value = f"class_{int(np.argmax(value))}" if len(value) > 1 else value[0]
        elif isinstance(value, list) and len(value) == 1:
            value = value[0]
        if isinstance(value, bool):
            value = str(value).lower()
        elif isinstance(value, dict | list):
            value = json.dumps(value, sort_keys=True)
        preds.append(value)
    out: Columns = {}
    if any(p is not None for p in preds):
        out["prediction"] = preds
    scores = list(rows.get("score", []))
    if any(s is not None for s in scores):
        out["score"] = [np.nan if s is None else float(s) for s in scores]
    return out


_WORD = re.compile(r"\w+", re.UNICODE)


def hashed_embedding(texts: Sequence[str | None], dim: int = EMBEDDING_DIM) -> np.ndarray:
    """Bag of words and character trigrams hashed into ``dim`` signed buckets, L2-normalised.

    A fixed, model-free embedding: enough for a kernel test to see a change of topic,
    language or template in prompts without shipping text to an embedding model.
    """
    out = np.zeros((len(texts), dim))
    for i, text in enumerate(texts):
        if not text:
            continue
        tokens = [w.lower() for w in _WORD.findall(text)]
        grams = tokens + [text[j : j + 3].lower() for j in range(0, max(len(text) - 2, 0), 2)]
        for g in grams:
            h = zlib.crc32(g.encode())
            out[i, h % dim] += 1.0 if (h >> 16) & 1 else -1.0
        norm = math.sqrt(float(out[i] @ out[i]))
        if norm:
            out[i] /= norm
    return out


def llm_columns(rows: Mapping[str, Sequence[Any]], signals: Sequence[str] | None = None) -> Columns:
    """LLM traffic signals per call: tokens, latency, time to first token, finish reason,
    error and model mix; text descriptors when prompts were kept."""
    n = len(rows.get("ts", []))

    def col(name: str) -> list[Any]:
        return list(rows.get(name, [None] * n))

    out: Columns = {
        "input_tokens": [np.nan if v is None else float(v) for v in col("input_tokens")],
        "output_tokens": [np.nan if v is None else float(v) for v in col("output_tokens")],
        "latency_s": [np.nan if v is None else float(v) for v in col("latency_s")],
        "ttft_s": [np.nan if v is None else float(v) for v in col("ttft_s")],
        "finish_reason": [v.split(",")[0] if v else None for v in col("finish_reasons")],
        "error": [v if v else "none" for v in col("error")],
        "model": [r or q for r, q in zip(col("response_model"), col("request_model"), strict=True)],
    }
    prompts, completions = col("prompt"), col("completion")
    if any(p for p in prompts):
        out["prompt_chars"] = [np.nan if p is None else float(len(p)) for p in prompts]
        out["prompt_words"] = [np.nan if p is None else float(len(_WORD.findall(p))) for p in prompts]
    if any(c for c in completions):
        out["completion_chars"] = [np.nan if c is None else float(len(c)) for c in completions]
    # A signal with no value at all in these rows (say ttft for non-streaming calls) is left out.
    out = {k: v for k, v in out.items() if any(x is not None and x == x for x in v)}
    if signals is not None:
        out = {k: v for k, v in out.items() if k in signals}
    return out


def llm_texts(rows: Mapping[str, Sequence[Any]]) -> list[str | None]:
    return list(rows.get("prompt", []))
