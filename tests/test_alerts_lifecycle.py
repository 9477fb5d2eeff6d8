"""Alert lifecycle: mutes, repeat interval, routes, restart without re-notifying, a receiver
that is down for a while, Slack messages, and the API through the real service."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from alerts.config import AlertsConfig
from alerts.pipeline import AlertService
from tests.fakes.alerting import Scenario, finding, until
from tests.fakes.receiver import RecordingReceiver
from tests.harness import ServiceHandle

FAST = {"initial_backoff": "20ms", "max_backoff": "100ms"}


def _cfg(receivers: list[dict[str, Any]], routes: list[dict[str, Any]]) -> AlertsConfig:
    return AlertsConfig.model_validate({"receivers": receivers, "routes": routes, "tick": "20ms"})


def _hook(name: str, url: str) -> dict[str, Any]:
    return {"name": name, "webhook": {"url": url}, "retry": FAST}


def _route(receiver: str, **kw: Any) -> dict[str, Any]:
    return {
        "receiver": receiver,
        "group_wait": "100ms",
        "group_interval": "200ms",
        "repeat_interval": "1h",
        **kw,
    }


def test_mute_routes_and_repeat(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Scenario(tmp_path) as book:
            crit, rest = await book.use(RecordingReceiver()), await book.use(RecordingReceiver())
            cfg = _cfg(
                [_hook("crit", crit.url), _hook("rest", rest.url)],
                [_route("crit", matchers=['severity="critical"'], repeat_interval="600ms"), _route("rest")],
            )
            service = await book.use(AlertService(cfg, book.store, book.findings))
            mute = service.add_mute(['model="b"'], duration=60)
            book.report(finding(model="a", severity="critical"), finding(model="b"), finding(model="c"))
            (c1,) = await crit.wait_for(1)
            (r1,) = await rest.wait_for(1)
            assert [x["labels"]["model"] for x in c1.json()["alerts"]] == ["a"]
            assert [x["labels"]["model"] for x in r1.json()["alerts"]] == ["c"]  # b is muted
            # Still firing and unchanged: the critical route repeats after its repeat_interval.
            got = await crit.wait_for(2, timeout=5)
            assert (
                got[1].json()["alerts"] == c1.json()["alerts"]
                and got[1].headers["webhook-id"] != c1.headers["webhook-id"]
            )
            # Unmuting makes b new to its group: notified once, with c.
            assert service.delete_mute(mute.id)
            got = await rest.wait_for(2)
            assert sorted(x["labels"]["model"] for x in got[1].json()["alerts"]) == ["b", "c"]
            await asyncio.sleep(0.5)
            assert len(rest.received) == 2

    asyncio.run(scenario())


def test_restart_neither_repeats_nor_forgets(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Scenario(tmp_path) as book:
            hook = await book.use(RecordingReceiver())
            cfg = _cfg([_hook("hook", hook.url)], [_route("hook")])
            service = await book.use(AlertService(cfg, book.store, book.findings))
            book.report(finding(model="a"), finding(model="b"))
            await hook.wait_for(1)
            await service.stop()
            book.report(finding(model="a"))  # b resolves while alerts are down
            book.reopen()

            service = await book.use(AlertService(cfg, book.store, book.findings))
            got = await hook.wait_for(2)
            await asyncio.sleep(0.5)
            assert len(hook.received) == 2  # a is not re-announced, b's resolution is not lost
            assert {(x["labels"]["model"], x["status"]) for x in got[1].json()["alerts"]} == {
                ("a", "firing"),
                ("b", "resolved"),
            }

    asyncio.run(scenario())


def test_receiver_down_for_a_while_gets_everything_once_in_order(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Scenario(tmp_path) as book:
            hook = await book.use(RecordingReceiver(status=503))
            cfg = _cfg(
                [_hook("hook", hook.url)],
                [_route("hook", group_by=["model"], group_wait="0s", group_interval="50ms")],
            )
            service = await book.use(AlertService(cfg, book.store, book.findings))
            models = [f"m{i}" for i in range(5)]
            book.report(*(finding(model=m) for m in models))
            await until(lambda: service.outbox.counts().get("pending") == 5, what="5 recorded")
            await asyncio.sleep(0.1)
            book.report()  # all resolve while the receiver is still down
            await until(lambda: service.outbox.counts().get("pending") == 10, what="10 recorded")
            await until(lambda: hook.refused >= 10, what="retries while down")
            hook.status = 200
            got = await hook.wait_for(10)
            await asyncio.sleep(0.4)
            assert len(hook.received) == 10 and len({r.headers["webhook-id"] for r in got}) == 10
            for m in models:  # per group: firing, then resolved
                seq = [r.json()["status"] for r in got if r.json()["groupLabels"] == {"model": m}]
                assert seq == ["firing", "resolved"]

    asyncio.run(scenario())


def test_slack_message_is_actionable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> dict[str, Any]:
        async with Scenario(tmp_path) as book:
            slack = await book.use(RecordingReceiver())
            monkeypatch.setenv("SLACK_URL", slack.url + "/services/T/B/X")
            cfg = AlertsConfig.model_validate(
                {
                    "receivers": [
                        {"name": "slack", "slack": {"webhook_url": {"env": "SLACK_URL"}}, "retry": FAST}
                    ],
                    "routes": [_route("slack")],
                    "tick": "20ms",
                    "dashboard_url": "http://grafana/d/mlvigil",
                }
            )
            await book.use(AlertService(cfg, book.store, book.findings, external_url="http://mlvigil:9710"))
            book.report(finding(model="churn", severity="critical"))
            (msg,) = await slack.wait_for(1)
            assert msg.path == "/services/T/B/X"
            return dict(msg.json())

    body = asyncio.run(scenario())
    text = " ".join(b["text"]["text"] for b in body["blocks"] if b["type"] == "section")
    assert "[FIRING:1]" in text and "data_drift" in text and "model=churn" in text  # what, where
    assert "score=0.31" in text and "threshold=0.2" in text  # the evidence
    urls = [e["url"] for b in body["blocks"] if b["type"] == "actions" for e in b["elements"]]
    # One click from the message to the finding's page in the console, then the dashboard, the JSON.
    assert urls[0].startswith("http://mlvigil:9710/ui/findings/")
    assert urls[1].startswith("http://grafana/d/mlvigil?var-model=churn")
    assert urls[2].startswith("http://mlvigil:9710/api/v1/findings?kind=data_drift")
    assert body["text"].startswith("[FIRING]")


def test_alerts_api_through_the_real_service(service_factory: Callable[..., ServiceHandle]) -> None:
    h = service_factory(
        {"alerts": {"receivers": [{"name": "hook", "webhook": {"url": "http://127.0.0.1:9/x"}}]}}
    )
    created = h.post(
        "/api/v1/alerts/mutes", {"matchers": ['model="churn"'], "duration": "30m", "comment": "deploy"}
    )
    assert created["ends_at"] - created["starts_at"] == pytest.approx(1800)
    assert [m["id"] for m in h.get("/api/v1/alerts/mutes")["mutes"]] == [created["id"]]
    status, _, _ = h.request(
        "POST", "/api/v1/alerts/mutes", b'{"matchers": ["model~bad"]}', {"Content-Type": "application/json"}
    )
    assert status == 400
    listed = h.get("/api/v1/alerts")
    assert listed["alerts"] == [] and listed["notifications"] == []
    h.restart()  # mutes are durable
    assert [m["id"] for m in h.get("/api/v1/alerts/mutes")["mutes"]] == [created["id"]]
    status, _, _ = h.request("DELETE", f"/api/v1/alerts/mutes/{created['id']}")
    assert status == 200 and h.get("/api/v1/alerts/mutes")["mutes"] == []
    assert h.get("/api/v1/retrain/triggers") == {"triggers": []}
