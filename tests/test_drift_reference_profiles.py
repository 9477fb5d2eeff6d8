"""Reference profiles kept in the store, through the real service on both backends: after a
restart a monitor's traffic reference is loaded, not built from the rows again, and decides
the same; rows added to its range since build it again."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from detectors.drift.calibration import CALIBRATION_DOCS, Calibrations, calibration_key, profile_digest
from detectors.drift.min_p import READY, Member, calibration_size
from detectors.drift.profile import Labels, ReferenceProfile
from detectors.drift.profile_store import (
    decode_profile,
    encode_profile,
    load_profile,
)
from mlvigil.core.store.duckdb import DuckDBStore
from tests.harness import ServiceHandle
from tests.otel_helpers import post_kserve

FEATURES = 4


def _send(svc: ServiceHandle, rng: np.random.Generator, n: int, tag: str) -> None:
    for i in range(0, n, 50):
        rows = rng.normal(size=(50, FEATURES)).round(4).tolist()
        post_kserve(svc, f"{tag}-{i}", "prof", {"instances": rows}, {"predictions": [1] * 50})


def _status(svc: ServiceHandle) -> dict[str, Any]:
    return dict(svc.get("/api/v1/monitors/kept")["status"])


def _evaluated(svc: ServiceHandle) -> dict[str, Any]:
    """The monitor's status once it has evaluated (on PostgreSQL, once this replica holds its
    lease: a few seconds after a start)."""

    def done() -> dict[str, Any]:
        svc.evaluate()
        status = _status(svc)
        return status if status["status"] != "not evaluated" else {}

    return svc.wait_for(done, timeout=90, interval=0.5)


@pytest.mark.parametrize("backend", ["duckdb", "postgres"])
def test_a_restart_loads_the_reference_profile_and_new_rows_rebuild_it(
    service_factory: Callable[..., ServiceHandle], backend: str, request: pytest.FixtureRequest
) -> None:
    config: dict[str, Any] = {"detectors": {"interval": 3600}}
    env: dict[str, str] = {}
    if backend == "postgres":
        env["MLVIGIL_STORE_DSN"] = request.getfixturevalue("postgres_dsn")
        config["storage"] = {"lease_ttl": "3s"}
    svc = service_factory(config, env)
    rng = np.random.default_rng(3)
    now = time.time()
    # A fixed range still filling (it ends in an hour): its content changes as rows arrive.
    svc.post(
        "/api/v1/monitors",
        {
            "name": "kept",
            "kind": "data",
            "service": "prof",
            "reference": {"start": now - 60, "end": now + 3600},
            "window": {"size": 300, "min_size": 100},
            "correction": "bonferroni",
        },
    )
    _send(svc, rng, 600, "a")
    svc.wait_for(lambda: svc.stats()["inferences"] >= 600)

    built = _evaluated(svc)
    assert built["reference_profile"] == "built", built
    assert built["reference_rows"] == 600
    assert built["status"] == "ok"

    svc.restart()
    loaded = _evaluated(svc)
    assert loaded["reference_profile"] == "stored"
    assert loaded["reference_rows"] == 600
    assert loaded["reference_built_at"] == built["reference_built_at"]
    assert loaded["report"]["p_value"] == built["report"]["p_value"]

    # New rows in the reference's range: the stored profile no longer describes it.
    _send(svc, rng, 200, "b")
    svc.wait_for(lambda: svc.stats()["inferences"] >= 800)
    svc.restart()
    rebuilt = _evaluated(svc)
    assert rebuilt["reference_profile"] == "built"
    assert rebuilt["reference_rows"] == 800


def test_the_binary_form_gives_back_the_same_profile() -> None:
    rng = np.random.default_rng(4)
    n = 3000
    labels = np.array([None if i % 11 == 0 else f"c{i % 4}" for i in range(n)], dtype=object)
    x = rng.normal(size=n)
    x[::9] = np.nan
    cols = {"x": x, "few": rng.integers(0, 3, n).astype(np.float64), "c": labels.view(Labels)}
    profile = ReferenceProfile.from_columns(cols, multivariate_rows=500)
    back = decode_profile(*encode_profile(profile))
    assert back.n_rows == profile.n_rows
    assert list(back.features) == list(profile.features)
    for name, f in profile.features.items():
        g = back.features[name]
        assert type(g) is type(f)
        assert g.n_missing == f.n_missing
    assert back.sample_rows is not None and profile.sample_rows is not None
    for name, col in profile.sample_rows.items():
        got = back.sample_rows[name]
        if col.dtype.kind == "f":
            assert got.dtype == col.dtype and np.array_equal(got, col, equal_nan=True)
        else:
            assert got.tolist() == col.tolist()
    assert back.matrix is not None and np.array_equal(back.matrix, profile.matrix)  # type: ignore[arg-type]
    # The calibrations stored for the profile are found for the loaded one.
    assert profile_digest(back) == profile_digest(profile)


def test_a_stored_profile_that_is_not_one_is_built_again_not_trusted() -> None:
    rng = np.random.default_rng(5)
    meta, data = encode_profile(ReferenceProfile.from_columns({"x": rng.normal(size=500)}))
    doc = {"meta": meta, "arrays": base64.b64encode(data).decode()}
    assert load_profile(doc, "m") is not None
    as_objects = {**meta, "arrays": [[k, "|O", shape, off] for k, _, shape, off in meta["arrays"]]}
    past_the_end = {**meta, "arrays": [[k, dt, [10**9], off] for k, dt, _, off in meta["arrays"]]}
    for bad in (
        {**doc, "meta": as_objects},
        {**doc, "meta": past_the_end},
        {**doc, "arrays": "not base64!"},
        {"meta": meta},
    ):
        assert load_profile(bad, "m") is None


class _CountingStore(DuckDBStore):
    """A real DuckDB store that counts its document reads."""

    reads = 0

    def get_doc(self, collection: str, doc_id: str) -> dict[str, Any] | None:
        self.reads += 1
        return super().get_doc(collection, doc_id)

    def list_docs(self, collection: str, **kw: Any) -> dict[str, dict[str, Any]]:
        self.reads += 1
        return super().list_docs(collection, **kw)


def test_calibrations_after_a_restart_are_read_from_the_store_at_once(tmp_path: Path) -> None:
    store = _CountingStore(str(tmp_path))
    try:
        rng = np.random.default_rng(8)
        profiles = [ReferenceProfile.from_columns({"x": rng.normal(size=200)}) for _ in range(10)]
        family = [Member("x", "ks")]
        size = calibration_size(300)
        for i, profile in enumerate(profiles):
            key = calibration_key(profile_digest(profile), family, size, 100, 0)
            store.put_doc(CALIBRATION_DOCS, key, {"monitor": f"m{i}", "null": [i / 10] * 100})
        store.reads = 0
        calibrations = Calibrations(store, workers=0)  # a restarted service's
        try:
            for i, profile in enumerate(profiles):
                null, state = calibrations.null(profile, family, 300, 100, 0, monitor=f"m{i}")
                assert state == READY and null is not None and null[0] == i / 10
            assert store.reads == 1
            assert calibrations.computed == 0 and calibrations.pending() == 0
        finally:
            calibrations.close()
    finally:
        store.close()
