"""One Finding's whole path through the running service: OTLP in, detector, signed webhook
alert and a dry-run retrain trigger out, exactly once across a SIGKILL."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest

from mlvigil.app.demo.webhook_sink import WebhookSink
from tests.harness import ServiceHandle
from tests.otel_helpers import http_span_exporter, tracer_provider

SECRET = "whsec_" + "c2VjcmV0LWtleS1mb3ItdGVzdHM="


@pytest.fixture
def sink() -> Iterator[WebhookSink]:
    s = WebhookSink(secret=SECRET).start()
    yield s
    s.stop()


def _steps(svc: ServiceHandle, run_id: str, losses: list[float]) -> None:
    with tracer_provider(http_span_exporter(svc.otlp_http), "trainer") as provider:
        tracer = provider.get_tracer("train")
        for step, loss in enumerate(losses):
            for rank in range(2):
                span = tracer.start_span(
                    "train_step",
                    attributes={
                        "mlvigil.train.run_id": run_id,
                        "mlvigil.train.step": step,
                        "mlvigil.train.rank": rank,
                        "mlvigil.train.world_size": 2,
                        "mlvigil.train.loss": loss,
                        "mlvigil.train.step_time_seconds": 0.5,
                    },
                )
                span.end()


def test_nan_loss_alerts_once_and_triggers_a_dry_run(service_factory, sink: WebhookSink) -> None:
    config = {
        "alerts": {
            "receivers": [
                {"name": "hook", "webhook": {"url": sink.url + "/alerts", "secret": {"env": "HOOK_SECRET"}}}
            ],
            "routes": [
                {
                    "receiver": "hook",
                    "group_by": ["alertname", "run_id"],
                    "group_wait": "0s",
                    "group_interval": "1s",
                    "repeat_interval": "1h",
                }
            ],
            "tick": "200ms",
        },
        "retrain": {
            "targets": [{"name": "hook", "webhook": {"url": sink.url + "/retrain"}}],
            "policies": [
                {
                    "name": "on-nan",
                    "target": "hook",
                    "kinds": ["loss_anomaly"],
                    "severities": ["critical"],
                    "model_label": "run_id",
                    "dry_run": True,
                }
            ],
        },
    }
    svc: ServiceHandle = service_factory(config, env={"HOOK_SECRET": SECRET})
    losses = [2.0 - 0.01 * i for i in range(30)]
    losses[25] = math.nan
    _steps(svc, "run-nan", losses)
    fired = [t for t in svc.evaluate() if t["transition"] == "fired"]
    nan = [t["finding"] for t in fired if t["finding"]["kind"] == "loss_anomaly"]
    assert nan and nan[0]["severity"] == "critical" and nan[0]["subject"]["run_id"] == "run-nan"

    [alert] = sink.wait_for(1)
    assert alert.path == "/alerts" and alert.signature_ok is True
    assert alert.body["version"] == "4" and alert.body["status"] == "firing"
    assert alert.body["alerts"][0]["labels"]["alertname"] == "loss_anomaly"
    assert alert.body["alerts"][0]["labels"]["run_id"] == "run-nan"

    triggers = svc.wait_for(lambda: svc.get("/api/v1/retrain/triggers")["triggers"])
    assert [t["status"] for t in triggers] == ["dry_run"]
    assert triggers[0]["would_send"] is not None

    # Delivery history is visible, and a SIGKILL + restart sends nothing twice.
    # The sink answered before the outbox recorded the outcome: wait for the record.
    svc.wait_for(
        lambda: any(m.get("state") == "delivered" for m in svc.get("/api/v1/alerts")["notifications"])
    )
    svc.kill()
    svc.start()
    svc.evaluate()
    assert len(sink.deliveries) == 1 and not any(d.path == "/retrain" for d in sink.deliveries)
    assert len(svc.get("/api/v1/retrain/triggers")["triggers"]) == 1
