"""The API's own endpoints, the store's retention and the Finding lifecycle engine."""

from __future__ import annotations

import json
import time
from pathlib import Path

from detectors.base import Detector
from mlvigil.engine import DetectorLoop, FindingBook
from mlvigil.findings import Finding, Severity
from mlvigil.records import RecordBatch
from mlvigil.service import RetentionTask
from mlvigil.store.duckdb import DuckDBStore
from tests.harness import ServiceHandle


def test_health_ready_openapi_and_stats(service: ServiceHandle) -> None:
    assert service.get("/healthz")["status"] == "ok"
    assert service.get("/readyz")["status"] == "ready"
    spec = service.get("/openapi.json")
    assert spec["openapi"].startswith("3.")
    for path in ("/api/v1/stats", "/api/v1/findings", "/api/v1/records/{table}", "/api/v1/labels",
                 "/api/v1/ingest/cloudevents", "/metrics", "/healthz"):
        assert path in spec["paths"], path
    assert spec["paths"]["/api/v1/records/{table}"]["get"]["parameters"][0]["name"] == "table"
    stats = service.get("/api/v1/stats")
    assert set(stats["records"]) == {"spans", "llm_calls", "inferences", "labels", "training_steps", "metric_points", "logs"}
    assert stats["queue"]["items"] == 0 and stats["queue"]["capacity"] > 0
    status, _, body = service.request("GET", "/api/v1/records/nosuch")
    assert status == 404 and b"known" in body
    status, _, body = service.request("GET", "/api/v1/records/spans?colour=red")
    assert status == 400 and b"colour" in body
    status, _, _ = service.request("GET", "/api/v1/findings?since=yesterday")
    assert status == 400


def test_retention_deletes_only_old_rows(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path)
    now = time.time()
    batch = RecordBatch()
    for age_days in (10, 5, 1, 0):
        batch.add("logs", ts=now - age_days * 86400, body=f"{age_days}d")
        batch.add("spans", ts=now - age_days * 86400, name=f"{age_days}d")
    store.append(batch)
    deleted = RetentionTask(store, {"logs": 7 * 86400, "spans": 2 * 86400}, 600).run_once(now)
    assert deleted == {"logs": 1, "spans": 2}
    assert store.query("logs")["body"] == ["5d", "1d", "0d"]
    assert store.query("spans")["name"] == ["1d", "0d"]
    store.close()


class _Threshold(Detector):
    """Fires per service whose latest log severity is >= 17 (ERROR)."""

    name = "errors"

    def evaluate(self, store, now):  # type: ignore[no-untyped-def]
        rows = store.query("logs", last=100)
        latest: dict[str, int] = {}
        for svc, sev in zip(rows["service"], rows["severity_number"], strict=True):
            latest[svc] = sev
        return [
            Finding(kind="data_drift", severity=Severity.WARNING, subject={"service": s}, summary=f"{s} erroring",
                    evidence={"severity": sev})
            for s, sev in latest.items() if sev >= 17
        ]


def test_finding_lifecycle_fire_update_resolve_and_reload(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path)
    book = FindingBook(store)
    seen: list[tuple[str, str]] = []
    book.subscribe(lambda f, what: seen.append((what, f.subject["service"])))
    loop = DetectorLoop(store, book, [_Threshold()], 60)

    def log(service: str, sev: int, ts: float) -> None:
        b = RecordBatch()
        b.add("logs", ts=ts, service=service, severity_number=sev)
        store.append(b)

    log("a", 17, 1.0)
    log("b", 9, 1.0)
    loop.evaluate_all(now=100.0)
    loop.evaluate_all(now=110.0)
    log("a", 9, 2.0)
    loop.evaluate_all(now=120.0)
    assert seen == [("fired", "a"), ("updated", "a"), ("resolved", "a")]
    [f] = store.findings(subject={"service": "a"})
    assert (f.state, f.started_at, f.resolved_at) == ("resolved", 100.0, 120.0)
    # A firing finding survives a restart of the book: it neither re-fires nor is forgotten.
    log("a", 20, 3.0)
    loop.evaluate_all(now=130.0)
    book2 = FindingBook(store)
    assert [x.id for x in book2.firing()] == [f.id]
    transitions = DetectorLoop(store, book2, [_Threshold()], 60).evaluate_all(now=140.0)
    assert [t for _, t in transitions] == ["updated"]
    assert json.loads(json.dumps(f.to_dict()))["id"] == f.id
    store.close()
