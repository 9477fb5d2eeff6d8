"""Every alert integration and every retrain target keeps the same contract: one class per
config section, named by its config key, built from config alone, and (for alerts) each
sender delivers one recorded message to a real listener and reports it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from alerts.config import INTEGRATION_FIELDS, ReceiverConfig
from alerts.receivers import INTEGRATIONS, Receiver, build_receiver
from mlvigil.core.outbox import Message
from retrain_hooks.config import TARGET_FIELDS, TargetConfig
from retrain_hooks.targets import TARGET_TYPES, RetrainTarget, build_target
from retrain_hooks.trigger import FindingRef, Trigger
from tests.fakes.alerting import Scenario
from tests.fakes.receiver import RecordingReceiver


def _no_session() -> aiohttp.ClientSession:
    raise AssertionError("a preview sends nothing")


def _receiver_section(kind: str, url: str) -> dict[str, Any]:
    sections: dict[str, dict[str, Any]] = {
        "alertmanager": {"urls": [url]},
        "webhook": {"url": url + "/hook"},
        "slack": {"webhook_url": {"env": "CONTRACT_SLACK_URL"}},
    }
    return sections[kind]


def _target_section(kind: str) -> dict[str, Any]:
    return {
        "kfp": {"url": "http://kfp", "pipeline_id": "p", "pipeline_version_id": "v"},
        "argo": {"url": "http://argo", "namespace": "ml", "template": "retrain"},
        "webhook": {"url": "http://hook/run"},
    }[kind]


def test_every_config_key_has_exactly_one_class_named_after_it() -> None:
    assert sorted(cls.kind for cls in INTEGRATIONS.values()) == sorted(INTEGRATION_FIELDS)
    assert sorted(cls.kind for cls in TARGET_TYPES.values()) == sorted(TARGET_FIELDS)
    assert all(issubclass(cls, Receiver) for cls in INTEGRATIONS.values())
    assert all(issubclass(cls, RetrainTarget) for cls in TARGET_TYPES.values())


@pytest.mark.parametrize("kind", INTEGRATION_FIELDS)
def test_each_alert_integration_delivers_a_recorded_message(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario() -> None:
        async with Scenario(tmp_path) as stack:
            listener = await stack.use(RecordingReceiver())
            monkeypatch.setenv("CONTRACT_SLACK_URL", listener.url + "/slack")
            cfg = ReceiverConfig.model_validate({"name": "r", kind: _receiver_section(kind, listener.url)})
            async with aiohttp.ClientSession() as session:
                receiver = build_receiver(cfg, lambda: session)
                assert receiver.kind == kind and receiver.name == "r"
                senders = receiver.senders()
                assert senders
                for target, send in senders.items():
                    msg = Message(
                        id=f"id-{target}",
                        target=target,
                        payload={"alerts": [{"labels": {"alertname": "x"}}]},
                        state="pending",
                        created_at=0.0,
                        expires_at=1.0,
                        next_attempt_at=0.0,
                    )
                    outcome = await send(msg)
                    assert outcome.ok, outcome.error
            assert len(listener.received) == len(senders)

    asyncio.run(scenario())


@pytest.mark.parametrize("kind", TARGET_FIELDS)
def test_each_retrain_target_previews_the_run_it_would_start(kind: str) -> None:
    target = build_target(
        TargetConfig.model_validate({"name": "t", kind: _target_section(kind)}), _no_session
    )
    trigger = Trigger(
        id="abc",
        policy="p",
        target="t",
        target_kind=kind,
        model="churn",
        run_name="mlvigil-abc",
        parameters={"dataset": "s3://x"},
        labels={"mlvigil.io/trigger-id": "abc"},
        finding=FindingRef("f", "data_drift", "critical", {}, "drift", {}, 1.0),
        created_at=1.0,
    )
    preview = target.preview(trigger)
    assert target.kind == kind and preview["method"] == "POST" and preview["url"].startswith("http://")
    assert "mlvigil-abc" in str(preview["body"])
