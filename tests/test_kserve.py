"""KServe and Seldon payload-logger CloudEvents, exactly as those loggers send them."""

from __future__ import annotations

import json

from tests.harness import ServiceHandle

PATH = "/api/v1/ingest/cloudevents"


def _ce(svc: ServiceHandle, ce_type: str, ce_id: str, body: dict, **extra: str) -> tuple[int, bytes]:
    # Binary-mode CloudEvent headers as KServe's logger (pkg/logger/worker.go) sets them.
    headers = {
        "Content-Type": "application/json",
        "Ce-Specversion": "1.0",
        "Ce-Id": ce_id,
        "Ce-Type": ce_type,
        "Ce-Source": "http://localhost:9081/",
        "Ce-Inferenceservicename": "sklearn-iris",
        "Ce-Namespace": "models",
        "Ce-Component": "predictor",
        "Ce-Endpoint": "",
        **extra,
    }
    status, _, resp = svc.request("POST", PATH, json.dumps(body).encode(), headers)
    return status, resp


def _rows(svc: ServiceHandle) -> dict[str, dict]:
    return {r["request_id"]: r for r in svc.get("/api/v1/records/inferences")["rows"]}


def test_v1_request_and_response_joined(service: ServiceHandle) -> None:
    req = "org.kubeflow.serving.inference.request"
    resp = "org.kubeflow.serving.inference.response"
    assert _ce(service, req, "id-1", {"instances": [[6.8, 2.8, 4.8, 1.4]]})[0] == 202
    assert _ce(service, resp, "id-1", {"predictions": [1]})[0] == 202
    # Response first, then request: still one row.
    assert _ce(service, resp, "id-2", {"predictions": [[0.1, 0.7, 0.2]]})[0] == 202
    assert _ce(service, req, "id-2", {"instances": [{"sepal_length": 5.1, "petal_width": 0.2}]})[0] == 202
    rows = _rows(service)
    assert set(rows) == {"id-1", "id-2"}
    one = rows["id-1"]
    assert one["features"] == {"f0": 6.8, "f1": 2.8, "f2": 4.8, "f3": 1.4}
    assert one["prediction"] == 1 and one["score"] == 1.0
    assert (one["service"], one["model"], one["source"]) == ("sklearn-iris", "sklearn-iris", "kserve")
    two = rows["id-2"]
    assert two["features"] == {"sepal_length": 5.1, "petal_width": 0.2}
    assert two["prediction"] == [0.1, 0.7, 0.2] and two["score"] == 0.7


def test_v2_open_inference_protocol_batch(service: ServiceHandle) -> None:
    request = {
        "id": "abc",
        "inputs": [
            {
                "name": "input-0",
                "shape": [2, 4],
                "datatype": "FP32",
                "data": [6.8, 2.8, 4.8, 1.4, 6.0, 3.4, 4.5, 1.6],
            }
        ],
    }
    response = {
        "model_name": "sklearn-iris",
        "model_version": "v2",
        "id": "abc",
        "outputs": [{"name": "output-0", "shape": [2], "datatype": "INT32", "data": [1, 2]}],
    }
    assert _ce(service, "org.kubeflow.serving.inference.request", "b-1", request)[0] == 202
    assert _ce(service, "org.kubeflow.serving.inference.response", "b-1", response)[0] == 202
    rows = _rows(service)
    assert set(rows) == {"b-1:0", "b-1:1"}
    assert rows["b-1:1"]["features"] == {
        "input-0_0": 6.0,
        "input-0_1": 3.4,
        "input-0_2": 4.5,
        "input-0_3": 1.6,
    }
    assert rows["b-1:1"]["prediction"] == 2 and rows["b-1:0"]["model_version"] == "v2"


def test_seldon_and_structured_mode(service: ServiceHandle) -> None:
    seldon_req = {"data": {"names": ["a", "b"], "ndarray": [[1.0, 2.0]]}}
    status, _ = _ce(
        service,
        "io.seldon.serving.inference.request",
        "evt-1",
        seldon_req,
        **{"Ce-Requestid": "seldon-req-9", "Ce-Modelid": "income"},
    )
    assert status == 202
    structured = {
        "specversion": "1.0",
        "id": "evt-2",
        "type": "io.seldon.serving.inference.response",
        "source": "seldon",
        "requestid": "seldon-req-9",
        "modelid": "income",
        "data": {"data": {"names": ["p"], "ndarray": [[0.8]]}},
    }
    status, _, _ = service.request(
        "POST", PATH, json.dumps(structured).encode(), {"Content-Type": "application/cloudevents+json"}
    )
    assert status == 202
    row = _rows(service)["seldon-req-9"]
    assert row["features"] == {"a": 1.0, "b": 2.0} and row["score"] == 0.8
    assert (row["model"], row["source"]) == ("income", "seldon")


def test_bad_events_are_400_and_write_nothing(service: ServiceHandle) -> None:
    assert _ce(service, "com.example.other", "x", {"instances": [[1]]})[0] == 400
    assert _ce(service, "org.kubeflow.serving.inference.request", "x", {"weird": 1})[0] == 400
    status, _, _ = service.request(
        "POST",
        PATH,
        b"{not json",
        {"Ce-Type": "org.kubeflow.serving.inference.request", "Ce-Specversion": "1.0", "Ce-Id": "z"},
    )
    assert status == 400
    status, _, _ = service.request("POST", PATH, b"{}", {"Content-Type": "application/json"})
    assert status == 400
    assert service.stats()["inferences"] == 0


def test_label_feedback_joins_by_request_id(service: ServiceHandle) -> None:
    _ce(service, "org.kubeflow.serving.inference.request", "r-1", {"instances": [[1.0]]})
    _ce(service, "org.kubeflow.serving.inference.response", "r-1", {"predictions": [1]})
    service.post("/api/v1/labels", {"labels": [{"request_id": "r-1", "label": 0, "model": "sklearn-iris"}]})
    labels = service.get("/api/v1/records/labels")["rows"]
    assert [(r["request_id"], r["label"]) for r in labels] == [("r-1", 0)]
    status, _, body = service.request(
        "POST",
        "/api/v1/labels",
        json.dumps({"labels": [{"label": 1}]}).encode(),
        {"Content-Type": "application/json"},
    )
    assert status == 400 and b"request_id" in body
    assert service.stats()["labels"] == 1


def _rss_mb(svc: ServiceHandle) -> float:
    import psutil

    assert svc.proc is not None
    return psutil.Process(svc.proc.pid).memory_info().rss / 2**20


def test_tensor_shape_is_checked_against_its_data(service: ServiceHandle) -> None:
    """Issue 13 item 1: a 97-byte V2 tensor claiming [10**18, 2] made the decoder allocate
    until the kernel killed the service. A shape must describe exactly the data sent."""
    req = "org.kubeflow.serving.inference.request"
    resp = "org.kubeflow.serving.inference.response"
    seldon = "io.seldon.serving.inference.request"
    rss_before = _rss_mb(service)
    bad: list[tuple[str, dict, str]] = [
        (req, {"inputs": [{"name": "x", "shape": [10**18, 2], "datatype": "FP32", "data": [1, 2]}]}, "shape"),
        (req, {"inputs": [{"name": "x", "shape": [3, 2], "datatype": "FP32", "data": [1, 2]}]}, "shape"),
        (req, {"inputs": [{"name": "x", "shape": "abc", "datatype": "FP32", "data": [1]}]}, "shape"),
        (req, {"inputs": [{"name": "x", "shape": [-1, 2], "datatype": "FP32", "data": [1, 2]}]}, "shape[0]"),
        (req, {"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": "ab"}]}, "data"),
        (req, {"inputs": [{"name": "x", "shape": [1], "data": [1]}, 5]}, "inputs[1]"),
        (req, {"inputs": [{"shape": [2], "data": [1, 2]}, {"shape": [3], "data": [1, 2, 3]}]}, "batch size"),
        (req, {"inputs": [{"shape": [5, 1], "data": [[1], [2]]}]}, "rows"),
        (resp, {"outputs": [{"name": "y", "shape": [10**18], "datatype": "INT32", "data": [1]}]}, "shape"),
        (resp, {"outputs": ["not a tensor"]}, "outputs[0]"),
        (seldon, {"data": {"tensor": {"shape": [10**18, 1], "values": [1.0]}}}, "shape"),
        (seldon, {"data": {"names": 5, "ndarray": [[1.0]]}}, "names"),
        (seldon, {"data": {"names": [["a"]], "ndarray": [[1.0]]}}, "names"),
    ]
    for ce_type, body, reason in bad:
        status, text = _ce(service, ce_type, "bad", body)
        assert status == 400, (body, status, text)
        assert reason in json.loads(text)["error"], (body, text)
    assert service.stats()["inferences"] == 0
    assert _rss_mb(service) < rss_before + 50
    # Consistent tensors still decode, including a zero-width and a nested one.
    ok = {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3, 4]]}]}
    assert _ce(service, req, "good", ok)[0] == 202
    assert set(_rows(service)) == {"good:0", "good:1"}


def test_instances_per_event_are_bounded(service_factory) -> None:
    svc: ServiceHandle = service_factory({"ingest": {"max_items_per_request": 100}})
    req = "org.kubeflow.serving.inference.request"
    for body in (
        {"instances": [[1.0]] * 101},
        {"inputs": [{"name": "x", "shape": [101], "datatype": "FP32", "data": [1.0] * 101}]},
        {"data": {"ndarray": [[1.0]] * 101}},
    ):
        status, text = _ce(svc, req, "big", body)
        assert status == 413 and "at most 100" in json.loads(text)["error"], text
    status, text = _ce(svc, "org.kubeflow.serving.inference.response", "big", {"predictions": [1] * 101})
    assert status == 413, text
    assert svc.stats()["inferences"] == 0
    assert _ce(svc, req, "fits", {"instances": [[1.0]] * 100})[0] == 202
    assert svc.stats()["inferences"] == 100


def test_large_event_is_merged_in_one_statement(service: ServiceHandle) -> None:
    """Issue 13 item 4: a 20,000-instance event took 66 s (one UPDATE+INSERT per instance)
    and held up every other export behind it in the writer."""
    import time

    n = 20_000
    request = {"instances": [[float(i), 1.0] for i in range(n)]}
    response = {"predictions": [i % 3 for i in range(n)]}
    t0 = time.monotonic()
    assert _ce(service, "org.kubeflow.serving.inference.request", "big", request)[0] == 202
    assert _ce(service, "org.kubeflow.serving.inference.response", "big", response)[0] == 202
    elapsed = time.monotonic() - t0
    assert elapsed < 15, f"two 20,000-instance events took {elapsed:.1f}s"
    assert service.stats()["inferences"] == n
    rows = service.get("/api/v1/records/inferences", request_id="big:19999")["rows"]
    assert len(rows) == 1 and rows[0]["features"] == {"f0": 19999.0, "f1": 1.0}
    assert rows[0]["prediction"] == 19999 % 3


def test_label_values_are_checked_like_every_record(service: ServiceHandle) -> None:
    """The labels route refuses values its columns cannot hold: 400 naming the field, nothing
    stored; a label that is not JSON's (Infinity) is refused too."""
    for item, field in (
        ('{"request_id": "r", "label": 1, "service": 123}', "service"),
        ('{"request_id": "r", "label": 1, "ts": 1e400}', "1e400"),
        ('{"request_id": "r", "label": {"p": Infinity}}', "Infinity"),
    ):
        status, _, body = service.request(
            "POST",
            "/api/v1/labels",
            b'{"labels": [' + item.encode() + b"]}",
            {"Content-Type": "application/json"},
        )
        assert status == 400 and field in json.loads(body)["error"], body
    assert service.get("/api/v1/records/labels")["rows"] == []
    service.post("/api/v1/labels", {"labels": [{"request_id": "r", "label": {"p": None}}]})
    [row] = service.get("/api/v1/records/labels")["rows"]
    assert row["label"] == {"p": None}
