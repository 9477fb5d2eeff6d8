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
