"""The API's own endpoints, the store's retention and the Finding lifecycle engine."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mlvigil.app.service import RetentionTask
from mlvigil.core.detector import Detector
from mlvigil.core.detector_loop import DetectorLoop
from mlvigil.core.finding_book import FindingBook
from mlvigil.core.findings import Finding, Severity
from mlvigil.core.records import RecordBatch
from mlvigil.core.store import Store
from mlvigil.core.store.duckdb import DuckDBStore
from tests.harness import ServiceHandle


def test_health_ready_openapi_and_stats(service: ServiceHandle) -> None:
    assert service.get("/healthz")["status"] == "ok"
    assert service.get("/readyz")["status"] == "ready"
    spec = service.get("/openapi.json")
    assert spec["openapi"].startswith("3.")
    for path in (
        "/api/v1/stats",
        "/api/v1/findings",
        "/api/v1/records/spans",
        "/api/v1/labels",
        "/api/v1/ingest/cloudevents",
        "/metrics",
        "/healthz",
    ):
        assert path in spec["paths"], path
    stats = service.get("/api/v1/stats")
    assert set(stats["records"]) == {
        "spans",
        "llm_calls",
        "inferences",
        "labels",
        "training_steps",
        "metric_points",
        "logs",
        "monitor_stats",
    }
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
        # raw spans are files, removed whole: one append (one file) per span here
        one = RecordBatch()
        one.add("spans", ts=now - age_days * 86400, name=f"{age_days}d")
        store.append(one)
    # and a file whose spans straddle the cutoff: kept whole until its newest span expires
    straddling = RecordBatch()
    for age_days in (3, 1.5):
        straddling.add("spans", ts=now - age_days * 86400, name=f"{age_days}d")
    store.append(straddling)
    store.append(batch)
    deleted = RetentionTask(store, {"logs": 7 * 86400, "spans": 2 * 86400}, 600).run_once(now)
    assert deleted == {"logs": 1, "spans": 2}
    assert store.query("logs")["body"] == ["5d", "1d", "0d"]
    assert store.query("spans")["name"] == ["3d", "1.5d", "1d", "0d"]
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
            Finding(
                kind="data_drift",
                severity=Severity.WARNING,
                subject={"service": s},
                summary=f"{s} erroring",
                evidence={"severity": sev},
            )
            for s, sev in latest.items()
            if sev >= 17
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


class _Meeting(Detector):
    """Reports a finding only when the other detector of the pass evaluates at the same time
    (both wait at one barrier); notes the niceness of the thread it ran in."""

    def __init__(self, name: str, barrier: threading.Barrier) -> None:
        self.name, self.barrier = name, barrier
        self.niceness: int | None = None

    def evaluate(self, store: Store, now: float) -> list[Finding]:
        self.niceness = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        self.barrier.wait()  # BrokenBarrierError (a failed evaluation) when evaluated alone
        return [Finding(kind="data_drift", severity=Severity.WARNING, subject={"d": self.name}, summary="x")]


def test_an_evaluate_pass_runs_detectors_at_once_in_niced_threads(tmp_path: Path) -> None:
    """The API's pass evaluates ``workers`` detectors at a time, as the schedule does (one's
    store read overlaps another's statistics), in threads below ingest's priority, and gives
    the transitions back in the detectors' order."""
    store = DuckDBStore(tmp_path)
    barrier = threading.Barrier(2, timeout=10)
    detectors = [_Meeting("a", barrier), _Meeting("b", barrier)]
    loop = DetectorLoop(store, FindingBook(store), detectors, 60, workers=2)
    transitions = loop.evaluate_all(now=100.0)
    assert [(f.detector, t) for f, t in transitions] == [("a", "fired"), ("b", "fired")]
    caller = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    if caller < 19:
        assert all(d.niceness is not None and d.niceness > caller for d in detectors)
    store.close()


# -- issue 12 / 13: every bad request is a 400 with a reason; the records API answers typed JSON --------
def _strict_json(body: bytes) -> Any:
    """Parse as strict JSON: a bare NaN or Infinity fails (Python's json accepts them by default)."""

    def refuse(name: str) -> Any:
        raise AssertionError(f"{name} in a JSON response")

    return json.loads(body, parse_constant=refuse)


NESTED = b'{"labels": ' + b"[" * 1000 + b"]" * 1000 + b"}"


@pytest.mark.parametrize(
    ("method", "path", "body", "reason"),
    [
        ("GET", "/api/v1/findings?severity=bogus", None, b"info, warning, critical"),
        ("GET", "/api/v1/findings?kind=nope", None, b"data_drift"),
        ("GET", "/api/v1/findings?state=open", None, b"firing, resolved"),
        ("GET", "/api/v1/findings?since=yesterday", None, b"since"),
        ("GET", "/api/v1/findings?since=nan", None, b"since"),
        ("GET", "/api/v1/findings?limit=-1", None, b"limit"),
        ("GET", "/api/v1/findings?limit=" + str(10**23), None, b"limit"),
        ("GET", "/api/v1/findings?%5B=x", None, b"label filter '['"),
        ("GET", "/api/v1/findings?*=x", None, b"label filter '*'"),
        ("GET", "/api/v1/findings?%22=x", None, b"label filter"),
        ("GET", "/api/v1/findings?=x", None, b"label filter ''"),
        ("GET", "/api/v1/findings?kind=data_drift&kind=straggler", None, b"more than once"),
        ("GET", "/api/v1/records/spans?limit=-1", None, b"limit"),
        ("GET", "/api/v1/records/spans?ts=null", None, b"query.ts"),
        ("GET", "/api/v1/records/spans?ts=abc", None, b"query.ts"),
        ("GET", "/api/v1/records/spans?kind=" + str(2**40), None, b"query.kind"),
        ("GET", "/api/v1/records/training_steps?step=" + str(2**64), None, b"query.step"),
        ("GET", "/api/v1/records/spans?until=inf", None, b"query.until"),
        (
            "POST",
            "/api/v1/labels",
            b'{"labels": [{"request_id": "r", "label": 1, "service": 123}]}',
            b"body.labels[0].service",
        ),
        ("POST", "/api/v1/labels", b'{"labels": [{"request_id": "r", "label": NaN}]}', b"NaN"),
        ("POST", "/api/v1/labels", b'{"labels": [{"request_id": "r", "label": 1e999}]}', b"out of range"),
        ("POST", "/api/v1/labels", b'{"labels": [{"request_id": "r", "label": 1, "ts": "now"}]}', b"ts"),
        ("POST", "/api/v1/labels", b'{"labels": []}', b"body"),
        ("POST", "/api/v1/labels", b"\xff\xfe", b"UTF-8"),
        ("POST", "/api/v1/labels", NESTED, b"nested deeper"),
        ("POST", "/api/v1/ingest/cloudevents", b"[" * 1000 + b"]" * 1000, b"nested deeper"),
        ("POST", "/api/v1/monitors", b"[" * 1000 + b"]" * 1000, b"nested deeper"),
        ("POST", "/api/v1/alerts/mutes", b"[" * 1000 + b"]" * 1000, b"nested deeper"),
        ("POST", "/api/v1/alerts/mutes", b'{"matchers": ["a=\\"b\\""], "duration": "soon"}', b"duration"),
        ("POST", "/api/v1/alerts/mutes", b'{"matchers": []}', b"matchers"),
        ("POST", "/api/v1/retrain/triggers/x/approve", b"[" * 1000 + b"]" * 1000, b"nested deeper"),
        (
            "POST",
            "/api/v1/monitors",
            b'{"name": "m", "reference": {"dataset": true}, "colour": 1}',
            b"colour",
        ),
    ],
)
def test_bad_values_answer_400_with_a_reason(
    full_service: ServiceHandle, method: str, path: str, body: bytes | None, reason: bytes
) -> None:
    service = full_service
    status, headers, answer = service.request(method, path, body, {"Content-Type": "application/json"})
    assert status == 400, (status, answer)
    assert headers["Content-Type"].startswith("application/json")
    assert reason in _strict_json(answer)["error"].encode(), answer
    assert service.stats()["labels"] == 0


@pytest.fixture(scope="module")
def full_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceHandle]:
    """One service with alerts and retrain configured (so their routes exist) for this module."""
    handle = ServiceHandle(tmp_path_factory.mktemp("full") / "data", FULL_CONFIG, None)
    handle.start()
    yield handle
    handle.kill()


FULL_CONFIG = {
    "alerts": {"receivers": [{"name": "hook", "webhook": {"url": "http://127.0.0.1:9/hook"}}]},
    "retrain": {
        "targets": [{"name": "t", "webhook": {"url": "http://127.0.0.1:9/retrain"}}],
        "policies": [{"name": "p", "target": "t", "approval": True}],
    },
}


def _store_with(tmp_path: Path, fill: Callable[[DuckDBStore], None]) -> Path:
    data = tmp_path / "data0"  # the directory service_factory gives its first service
    store = DuckDBStore(data)
    fill(store)
    store.close()
    return data


def test_dotted_label_filters_match(tmp_path: Path, service_factory: Callable[..., ServiceHandle]) -> None:
    def fill(store: DuckDBStore) -> None:
        for ns in ("prod", "dev"):
            store.upsert_findings(
                [
                    Finding(
                        kind="data_drift",
                        severity=Severity.WARNING,
                        subject={"k8s.namespace": ns, "service": "api"},
                        summary=ns,
                    )
                ]
            )

    _store_with(tmp_path, fill)
    service = service_factory()
    found = service.findings(**{"k8s.namespace": "prod"})
    assert [f["subject"]["k8s.namespace"] for f in found] == ["prod"]
    assert len(service.findings(service="api")) == 2
    assert service.findings(service="api", severity="critical") == []


def test_records_are_typed_json_and_nan_is_null(
    tmp_path: Path, service_factory: Callable[..., ServiceHandle]
) -> None:
    def fill(store: DuckDBStore) -> None:
        b, now = RecordBatch(), time.time()  # recent, so retention keeps them
        b.add("metric_points", ts=now, name="loss", value=float("nan"), attributes='{"k8s.pod": "p-1"}')
        b.add("metric_points", ts=now + 1, name="loss", value=float("inf"))
        b.add("training_steps", ts=now, run_id="r", step=1, loss=float("nan"))
        store.append(b)

    _store_with(tmp_path, fill)
    service = service_factory()
    status, _, body = service.request(
        "POST",
        "/api/v1/ingest/cloudevents",
        json.dumps({"instances": [[1.5, 2.0]]}).encode(),
        {
            "Content-Type": "application/json",
            "ce-specversion": "1.0",
            "ce-id": "r-1",
            "ce-source": "s",
            "ce-type": "org.kubeflow.serving.inference.request",
        },
    )
    assert status == 202, body
    service.request(
        "POST",
        "/api/v1/ingest/cloudevents",
        json.dumps({"predictions": [0]}).encode(),
        {
            "Content-Type": "application/json",
            "ce-specversion": "1.0",
            "ce-id": "r-1",
            "ce-source": "s",
            "ce-type": "org.kubeflow.serving.inference.response",
        },
    )
    service.post("/api/v1/labels", {"labels": [{"request_id": "r-1", "label": {"class": 0}}]})
    status, _, body = service.request("GET", "/api/v1/records/inferences")
    [row] = _strict_json(body)["rows"]
    assert isinstance(row["features"], dict) and list(row["features"].values()) == [1.5, 2.0]
    assert row["prediction"] == 0
    [label] = service.get("/api/v1/records/labels")["rows"]
    assert label["label"] == {"class": 0}
    status, _, body = service.request("GET", "/api/v1/records/metric_points")
    rows = _strict_json(body)["rows"]
    assert [r["value"] for r in rows] == [None, None]
    assert rows[0]["attributes"] == {"k8s.pod": "p-1"}
    status, _, body = service.request("GET", "/api/v1/records/training_steps?run_id=r&step=1")
    assert [r["loss"] for r in _strict_json(body)["rows"]] == [None]


def test_openapi_declares_parameters_bodies_and_errors(full_service: ServiceHandle) -> None:
    spec = full_service.get("/openapi.json")
    ops = {(path, method): op for path, item in spec["paths"].items() for method, op in item.items()}
    for route in [
        ("/api/v1/findings", "get"),
        ("/api/v1/labels", "post"),
        ("/api/v1/alerts/mutes", "post"),
        ("/api/v1/monitors", "post"),
        ("/api/v1/monitors/{name}/reference", "post"),
        ("/api/v1/retrain/triggers/{trigger_id}/approve", "post"),
        ("/api/v1/alerts", "get"),
        ("/api/v1/records/inferences", "get"),
        ("/api/v1/ingest/cloudevents", "post"),
    ]:
        assert route in ops, route
    for (path, method), op in ops.items():
        assert ("401" in op["responses"]) == (path not in ("/healthz", "/readyz")), (path, method)
        if op.get("parameters") or op.get("requestBody"):
            assert "400" in op["responses"], (path, method)
        for status, resp in op["responses"].items():
            if status.startswith("4") or status.startswith("5"):
                assert resp["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    params = {p["name"]: p for p in ops[("/api/v1/findings", "get")]["parameters"]}
    assert params["severity"]["schema"]["enum"] == ["info", "warning", "critical"]
    assert params["limit"]["schema"]["minimum"] == 1 and params["limit"]["schema"]["maximum"] == 10000
    assert params["since"]["schema"]["type"] == "number"
    assert params["labels"]["schema"]["propertyNames"]["pattern"].startswith("^")
    spans = {p["name"]: p["schema"] for p in ops[("/api/v1/records/spans", "get")]["parameters"]}
    assert spans["ts"]["type"] == "number" and spans["kind"]["type"] == "integer"
    assert spans["kind"]["maximum"] == 2**31 - 1 and "span_proto" not in spans
    labels = ops[("/api/v1/labels", "post")]
    assert labels["requestBody"]["required"] is True
    assert {"413", "415", "429", "503"} <= set(labels["responses"])
    ref = ops[("/api/v1/monitors/{name}/reference", "post")]["requestBody"]["content"]
    assert set(ref) == {"application/json", "text/csv", "application/csv"}
    schemas = spec["components"]["schemas"]
    assert schemas["LabelIn"]["properties"]["service"]["anyOf"][0] == {"maxLength": 256, "type": "string"}
    assert "MonitorConfig" in schemas and "MuteIn" in schemas
    approve = ops[("/api/v1/retrain/triggers/{trigger_id}/approve", "post")]
    assert approve["parameters"][0] == {
        "name": "trigger_id",
        "in": "path",
        "required": True,
        "schema": {"maxLength": 128, "minLength": 1, "type": "string"},
    }
    assert {"404", "409"} <= set(approve["responses"])


def test_exceptions_map_to_statuses_with_reasons(full_service: ServiceHandle) -> None:
    service = full_service
    status, headers, body = service.request("DELETE", "/api/v1/findings")
    assert status == 405 and "GET" in headers["Allow"] and b"not allowed" in body
    status, _, body = service.request("GET", "/api/v1/nosuch")
    assert status == 404 and json.loads(body)["error"]
    status, _, body = service.request("GET", "/api/v1/monitors/nosuch")
    assert status == 404 and b"nosuch" in body
    status, _, body = service.request("DELETE", "/api/v1/alerts/mutes/nosuch")
    assert status == 404 and b"nosuch" in body
    status, _, body = service.request("POST", "/api/v1/retrain/triggers/nosuch/approve")
    assert status == 404 and b"nosuch" in body
    status, _, body = service.request("POST", "/api/v1/labels", b"x" * 64, {"Content-Type": "text/plain"})
    assert status == 415 and b"application/json" in body


def test_reference_uploads_are_bounded_and_answer_4xx(full_service: ServiceHandle) -> None:
    service = full_service
    service.post(
        "/api/v1/monitors",
        {"name": "ref-bounds", "kind": "data", "reference": {"dataset": True}, "window": {"size": 100}},
    )
    path = "/api/v1/monitors/ref-bounds/reference"

    def post(body: bytes, ctype: str) -> tuple[int, dict]:
        status, _, answer = service.request("POST", path, body, {"Content-Type": ctype})
        return status, _strict_json(answer)

    status, doc = post(b"a,b\n1,2\n3,4,5\n", "text/csv")
    assert status == 400 and "line 3" in doc["error"]
    status, doc = post(b"a,a\n1,2\n", "text/csv")
    assert status == 400 and "unique" in doc["error"]
    status, doc = post(b"", "text/csv")
    assert status == 400 and "header" in doc["error"]
    status, doc = post(b"a,b\n\xff,1\n", "text/csv")
    assert status == 400 and "UTF-8" in doc["error"]
    status, doc = post(b"a\n" + b"x" * 70_000 + b"\n", "text/csv")
    assert status == 400 and "CSV" in doc["error"]
    wide = json.dumps({"rows": [{f"c{i}": 1 for i in range(600)}, {f"d{i}": 1 for i in range(600)}]}).encode()
    status, doc = post(wide, "application/json")
    assert status == 400 and "1000 distinct columns" in doc["error"]
    status, doc = post(b'{"rows": [{"a": [[[[1]]]]}], "extra": 1}', "application/json")
    assert status == 400 and "extra" in doc["error"]
    # Short rows, empty cells and NaN are missing values, not errors.
    status, doc = post(b"a,b\n" + b"1,2\n3\nnan,\n" * 20, "text/csv")
    assert status == 201 and doc == {"monitor": "ref-bounds", "rows": 60, "columns": ["a", "b"]}
    status, doc = post(json.dumps([{"a": 1.5, "b": "x"}] * 10).encode(), "application/json")
    assert status == 201 and doc["rows"] == 10


def test_non_utf8_bearer_token_is_a_401(service_factory: Callable[..., ServiceHandle]) -> None:
    import socket

    service = service_factory(env={"MLVIGIL_AUTH_TOKEN": "secret"})
    port = int(service.api.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"GET /api/v1/stats HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\nConnection: close\r\n\r\n"
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert b"bearer token" in answer


def test_the_service_tunes_the_allocators_it_runs_on() -> None:
    """``serve`` moves pyarrow onto the system allocator (glibc, whose trim and mmap
    thresholds it raises): its bundled mimalloc handed pages back and faulted them in again
    on each load."""
    import pyarrow as pa

    from mlvigil.app.service import tune_allocator

    before = pa.default_memory_pool()
    try:
        tune_allocator()
        assert pa.default_memory_pool().backend_name == "system"
    finally:
        pa.set_memory_pool(before)
