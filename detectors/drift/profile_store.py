"""Reference profiles kept in the store, so a restart or a replica reuses them.

Building a monitor's profile from a range of past traffic reads and profiles every reference
row (~0.4 s per 10k-row reference on a quiet 2-core box, 1-2 s under load, per monitor).
After each build the profile is stored as a document of the ``drift_reference_profiles``
collection (one per monitor), in a compact binary form: the NumPy arrays' raw bytes back to
back (sorted samples, bin edges and counts, category counts, the rows kept for calibration,
labels as int32 codes into a list), base64 in the document beside the scalars and an index
of the arrays (name, dtype, shape, offset). Loading accepts numeric dtypes only and never
unpickles anything.

A stored profile is used only when it is what a build would give now: the same format
version, the same monitor settings that shape a profile (``settings_digest``) and the same
reference content: the digest of the ``ts`` column of the reference's rows (one narrow
read, ~5-20 ms for 10k rows), so rows added to or deleted from a fixed range rebuild it. A
rolling reference (``last``) is used while it is younger than its ``refresh``, as it would
have been had the service not restarted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from detectors.drift.profile import (
    DEFAULT_BINS,
    DEFAULT_MAX_SAMPLE,
    DEFAULT_NULL_ROWS,
    CategoricalProfile,
    FeatureProfile,
    NumericProfile,
    ReferenceProfile,
)
from mlvigil.core.store import Store

log = logging.getLogger(__name__)

PROFILE_DOCS = "drift_reference_profiles"
#: The encoding's version; a stored profile of another version is ignored (built again).
FORMAT = 1
#: Largest encoded profile stored (bytes before base64); a larger one is built after restarts.
MAX_STORED_BYTES = 32 * 1024 * 1024
#: Most labels one categorical column of the kept rows may hold in a stored profile.
MAX_LABELS = 100_000


class NotEncodable(ValueError):
    """A profile holding values the binary form does not carry (it is not stored)."""


def settings_digest(settings: Mapping[str, Any]) -> str:
    """SHA-256 of what shapes a profile besides its rows (the monitor's filter, features,
    row cap, tests), with the profiling constants and the format."""
    body = {
        **settings,
        "format": FORMAT,
        "bins": DEFAULT_BINS,
        "max_sample": DEFAULT_MAX_SAMPLE,
        "null_rows": DEFAULT_NULL_ROWS,
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def content_digest(ts: Sequence[Any] | np.ndarray) -> str:
    """SHA-256 of a reference's row times (sorted), with their count."""
    arr = np.sort(np.asarray(ts, dtype=np.float64))
    h = hashlib.sha256(str(arr.size).encode())
    h.update(arr.tobytes())
    return h.hexdigest()


def _labels(col: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """An object column of labels (text or None) as int32 codes (-1: None) and the labels."""
    index: dict[str, int] = {}
    codes = np.empty(col.size, dtype=np.int32)
    for i, v in enumerate(col.tolist()):
        if v is None:
            codes[i] = -1
        elif isinstance(v, str):
            codes[i] = index.setdefault(v, len(index))
        else:
            raise NotEncodable(f"a kept reference value of type {type(v).__name__}")
    if len(index) > MAX_LABELS:
        raise NotEncodable(f"{len(index)} distinct labels in one column")
    return codes, list(index)


def encode_profile(profile: ReferenceProfile) -> tuple[dict[str, Any], bytes]:
    """``(meta, data)``: the scalars, names and the arrays' index as JSON-ready values, the
    arrays' bytes back to back. Raises ``NotEncodable`` for values the form does not carry."""
    arrays: dict[str, np.ndarray] = {}
    features: list[dict[str, Any]] = []
    for i, (name, f) in enumerate(profile.features.items()):
        if isinstance(f, NumericProfile):
            arrays[f"sorted{i}"] = np.asarray(f.sorted, dtype=np.float64)
            arrays[f"edges{i}"] = np.asarray(f.edges, dtype=np.float64)
            arrays[f"bins{i}"] = np.asarray(f.bin_counts, dtype=np.int64)
            features.append(
                {
                    "name": name,
                    "kind": "numeric",
                    "n_missing": f.n_missing,
                    "mean": f.mean,
                    "std": f.std,
                    "scale": f.scale,
                    "quantiles": f.quantiles,
                }
            )
        else:
            arrays[f"counts{i}"] = np.asarray(f.counts, dtype=np.int64)
            features.append(
                {"name": name, "kind": "categorical", "n_missing": f.n_missing, "categories": f.categories}
            )
    sample: list[dict[str, Any]] = []
    for i, (name, col) in enumerate((profile.sample_rows or {}).items()):
        if col.dtype.kind in "fiub":
            arrays[f"sample{i}"] = col
            sample.append({"name": name})
        else:
            codes, labels = _labels(col)
            arrays[f"sample{i}"] = codes
            sample.append({"name": name, "labels": labels})
    for field in ("matrix", "centre", "spread"):
        value = getattr(profile, field)
        if value is not None:
            arrays[field] = np.asarray(value, dtype=np.float64)
    # One buffer, the arrays back to back, indexed in ``meta`` (name, dtype, shape, offset):
    # read back without a copy per array (``.npz``'s zip members cost ~0.5 ms each).
    index: list[list[Any]] = []
    parts: list[bytes] = []
    offset = 0
    for key, arr in arrays.items():
        raw = np.ascontiguousarray(arr).tobytes()
        index.append([key, arr.dtype.str, list(arr.shape), offset])
        parts.append(raw)
        offset += len(raw)
    meta = {
        "n_rows": profile.n_rows,
        "features": features,
        "sample_rows": sample if profile.sample_rows is not None else None,
        "matrix_columns": profile.matrix_columns,
        "arrays": index,
    }
    return meta, b"".join(parts)


def _arrays(meta: Mapping[str, Any], data: bytes) -> dict[str, np.ndarray]:
    """The arrays of ``encode_profile``'s buffer: numbers and booleans only (never objects),
    each within the buffer."""
    buf = bytearray(data)  # writable, one copy for all arrays
    out: dict[str, np.ndarray] = {}
    for key, dtype_str, shape, offset in meta["arrays"]:
        dtype = np.dtype(str(dtype_str))
        if dtype.kind not in "fiub":
            raise ValueError(f"array {key!r} of dtype {dtype_str!r} (numbers only)")
        count = math.prod(int(n) for n in shape)
        if offset < 0 or offset + count * dtype.itemsize > len(buf):
            raise ValueError(f"array {key!r} beyond the stored buffer")
        out[str(key)] = np.frombuffer(buf, dtype, count, int(offset)).reshape([int(n) for n in shape])
    return out


def decode_profile(meta: Mapping[str, Any], data: bytes) -> ReferenceProfile:
    """The profile ``encode_profile`` gave ``(meta, data)``; raises ``ValueError`` (or
    ``KeyError``, ``TypeError``) on anything else."""
    arrays = _arrays(meta, data)
    feats: dict[str, FeatureProfile] = {}
    for i, f in enumerate(meta["features"]):
        name = str(f["name"])
        if f["kind"] == "numeric":
            feats[name] = NumericProfile(
                name,
                arrays[f"sorted{i}"],
                int(f["n_missing"]),
                arrays[f"edges{i}"],
                arrays[f"bins{i}"],
                float(f["mean"]),
                float(f["std"]),
                float(f["scale"]),
                {str(k): float(v) for k, v in f["quantiles"].items()},
            )
        else:
            feats[name] = CategoricalProfile(
                name, [str(c) for c in f["categories"]], arrays[f"counts{i}"], int(f["n_missing"])
            )
    profile = ReferenceProfile(feats, int(meta["n_rows"]))
    if meta.get("sample_rows") is not None:
        rows: dict[str, np.ndarray] = {}
        for i, s in enumerate(meta["sample_rows"]):
            col = arrays[f"sample{i}"]
            if "labels" in s:
                table = np.asarray([*map(str, s["labels"]), None], dtype=object)
                col = table[np.where(col < 0, len(table) - 1, col)]
            rows[str(s["name"])] = col
        profile.sample_rows = rows
    profile.matrix_columns = [str(c) for c in meta.get("matrix_columns") or []]
    for field in ("matrix", "centre", "spread"):
        if field in arrays:
            setattr(profile, field, arrays[field])
    return profile


def save_profile(store: Store, monitor: str, profile: ReferenceProfile, key: dict[str, Any]) -> int:
    """Store ``profile`` as ``monitor``'s, with ``key`` (what a later load checks); returns
    the encoded size, or 0 when it was not stored (not encodable, too large, store failed)."""
    try:
        meta, data = encode_profile(profile)
    except NotEncodable as exc:
        log.info("drift: reference profile of monitor %s not stored: %s", monitor, exc)
        return 0
    if len(data) > MAX_STORED_BYTES:
        log.info(
            "drift: reference profile of monitor %s not stored: %d bytes (at most %d)",
            monitor,
            len(data),
            MAX_STORED_BYTES,
        )
        return 0
    arrays = base64.b64encode(data).decode()
    doc = {**key, "format": FORMAT, "meta": meta, "bytes": len(data), "arrays": arrays}
    try:
        store.put_doc(PROFILE_DOCS, monitor, doc)
    except Exception as exc:
        # Built again after the next restart; the monitor itself is unaffected.
        log.warning("drift: reference profile of monitor %s not stored: %s", monitor, exc)
        return 0
    return len(data)


def stored_doc(store: Store, monitor: str) -> dict[str, Any] | None:
    """``monitor``'s stored profile document when it is of this ``FORMAT``, else None."""
    try:
        doc = store.get_doc(PROFILE_DOCS, monitor)
    except Exception as exc:
        log.warning("drift: stored reference profile of monitor %s not readable: %s", monitor, exc)
        return None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        return None
    return doc


def load_profile(doc: Mapping[str, Any], monitor: str) -> ReferenceProfile | None:
    """The profile in a stored document; None (logged) when it cannot be decoded."""
    try:
        data = base64.b64decode(str(doc["arrays"]), validate=True)
        return decode_profile(doc["meta"], data)
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        log.warning("drift: stored reference profile of monitor %s unusable (built again): %s", monitor, exc)
        return None


__all__ = [
    "FORMAT",
    "MAX_STORED_BYTES",
    "PROFILE_DOCS",
    "NotEncodable",
    "content_digest",
    "decode_profile",
    "encode_profile",
    "load_profile",
    "save_profile",
    "settings_digest",
    "stored_doc",
]
