"""Signed webhooks: Alertmanager webhook payload v4, verified with an independent
implementation of the Standard Webhooks signature scheme written here."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import time
from pathlib import Path

import pytest

from alerts.config import AlertsConfig
from alerts.pipeline import AlertService
from tests.fakes.alerting import Scenario, finding, until
from tests.fakes.receiver import Received, RecordingReceiver

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def verify_standard_webhook(secret: str, headers: dict[str, str], body: bytes, tolerance: int = 300) -> None:
    """Independent verifier per https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md"""
    lower = {k.lower(): v for k, v in headers.items()}
    msg_id, ts, sigs = lower["webhook-id"], lower["webhook-timestamp"], lower["webhook-signature"]
    if abs(int(time.time()) - int(ts)) > tolerance:
        raise ValueError("timestamp outside tolerance")
    key = base64.b64decode(secret.split("_", 1)[1])
    expected = hmac.new(key, msg_id.encode() + b"." + ts.encode() + b"." + body, hashlib.sha256).digest()
    for sig in sigs.split(" "):
        version, _, value = sig.partition(",")
        if version == "v1" and hmac.compare_digest(base64.b64decode(value), expected):
            return
    raise ValueError("no valid signature")


def _config(url: str, **route: object) -> AlertsConfig:
    return AlertsConfig.model_validate(
        {
            "receivers": [
                {
                    "name": "hook",
                    "webhook": {"url": url + "/alerts", "secret": {"env": "TEST_WH_SECRET"}},
                    "retry": {"initial_backoff": "50ms", "max_backoff": "200ms"},
                }
            ],
            "routes": [
                {
                    "receiver": "hook",
                    "group_by": ["alertname"],
                    "group_wait": "200ms",
                    "group_interval": "400ms",
                    "repeat_interval": "1h",
                    **route,
                }
            ],
            "tick": "50ms",
            "dashboard_url": "http://grafana.local/d/mlvigil",
        }
    )


def test_grouped_signed_webhook_firing_then_resolved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_WH_SECRET", SECRET)

    async def scenario() -> list[Received]:
        async with Scenario(tmp_path) as book:
            receiver = await book.use(RecordingReceiver())
            cfg = _config(receiver.url)
            await book.use(AlertService(cfg, book.store, book.findings, external_url="http://mlvigil:9710"))
            a, b = finding(model="a"), finding(model="b")
            book.report(a, b)
            book.report(a, b)  # "updated" twice: de-duplicated on the fingerprint, no new alert
            got = await receiver.wait_for(1)
            book.report(a)  # b resolves
            got = await receiver.wait_for(2)
            book.report()  # a resolves
            got = await receiver.wait_for(3)
            await asyncio.sleep(0.6)  # more than a group_interval: nothing else may come
            return got

    got = asyncio.run(scenario())
    assert len(got) == 3
    for r in got:
        verify_standard_webhook(SECRET, r.headers, r.body)
        assert r.path == "/alerts"
    first, second, third = (r.json() for r in got)
    assert first["version"] == "4" and first["status"] == "firing" and first["receiver"] == "hook"
    assert first["groupLabels"] == {"alertname": "data_drift"}
    assert sorted(x["labels"]["model"] for x in first["alerts"]) == ["a", "b"]
    assert first["commonLabels"]["alertname"] == "data_drift" and "model" not in first["commonLabels"]
    alert = first["alerts"][0]
    assert alert["endsAt"] == "0001-01-01T00:00:00Z" and alert["status"] == "firing"
    assert json.loads(alert["annotations"]["evidence"])["score"] == 0.31
    assert alert["annotations"]["dashboard_url"].startswith("http://grafana.local/d/mlvigil?var-model=")
    # The alert opens the finding's page in the console; the JSON stays one annotation away.
    assert alert["generatorURL"] == f"http://mlvigil:9710/ui/findings/{alert['labels']['finding_id']}"
    assert alert["annotations"]["console_url"] == alert["generatorURL"]
    assert alert["annotations"]["api_url"].startswith("http://mlvigil:9710/api/v1/findings?kind=data_drift")
    assert second["status"] == "firing"
    assert {(x["labels"]["model"], x["status"]) for x in second["alerts"]} == {
        ("a", "firing"),
        ("b", "resolved"),
    }
    assert third["status"] == "resolved" and [x["labels"]["model"] for x in third["alerts"]] == ["a"]
    # Distinct notifications carry distinct stable ids.
    assert len({r.headers["webhook-id"] for r in got}) == 3


def test_tampered_or_unsigned_webhook_fails_verification(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_WH_SECRET", SECRET)

    async def scenario() -> Received:
        async with Scenario(tmp_path) as book:
            receiver = await book.use(RecordingReceiver())
            await book.use(AlertService(_config(receiver.url, group_wait="0s"), book.store, book.findings))
            book.report(finding())
            got = await receiver.wait_for(1)
            return got[0]

    r = asyncio.run(scenario())
    verify_standard_webhook(SECRET, r.headers, r.body)
    with pytest.raises(ValueError):
        verify_standard_webhook(SECRET, r.headers, r.body.replace(b"churn", b"churm"))
    other = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    with pytest.raises(ValueError):
        verify_standard_webhook(other, r.headers, r.body)


def test_secret_is_never_logged_or_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TEST_WH_SECRET", SECRET)
    monkeypatch.setenv("TEST_SLACK_URL", "http://127.0.0.1:9/services/T000/B000/XXXXSECRETXXXX")
    cfg = AlertsConfig.model_validate(
        {
            "receivers": [
                {
                    "name": "slack",
                    "slack": {"webhook_url": {"env": "TEST_SLACK_URL"}},
                    "retry": {"initial_backoff": "10ms", "max_backoff": "20ms", "max_attempts": 2},
                },
            ],
            "routes": [{"receiver": "slack", "group_wait": "0s"}],
            "tick": "50ms",
        }
    )

    async def scenario() -> None:
        async with Scenario(tmp_path) as book:
            service = await book.use(AlertService(cfg, book.store, book.findings))
            book.report(finding())
            await until(lambda: service.outbox.counts().get("failed"), what="slack attempts exhausted")

    with caplog.at_level("DEBUG"):
        asyncio.run(scenario())
    assert "XXXXSECRETXXXX" not in caplog.text
    assert caplog.text  # the failure itself was logged, without the URL
    raw = (tmp_path / "mlvigil.duckdb").read_bytes()
    assert b"XXXXSECRETXXXX" not in raw and SECRET.encode() not in raw
    assert "XXXXSECRETXXXX" not in repr(cfg)
