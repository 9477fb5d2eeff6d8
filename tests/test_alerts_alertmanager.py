"""Integration with a real Alertmanager (Debian's prometheus-alertmanager), started here.

mlvigil posts alerts to Alertmanager's API v2 (to an HA pair's both members where
configured); Alertmanager groups them and delivers to this test's webhook receiver. Firing
and resolved must each arrive once, grouped, even though mlvigil re-sends firing alerts.
If the binary is missing the test FAILS: install it with
``apt-get install -y prometheus-alertmanager``.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import yaml

from alerts.config import AlertsConfig
from alerts.pipeline import AlertService
from tests.fakes.alerting import Scenario, finding
from tests.fakes.receiver import RecordingReceiver

BINARY = "/usr/bin/prometheus-alertmanager"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def alertmanager(tmp_path: Path, webhook_url: str) -> Iterator[str]:
    binary = (
        BINARY
        if Path(BINARY).exists()
        else shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    )
    if not binary:
        pytest.fail(
            f"Alertmanager binary not found at {BINARY} (nor on PATH): "
            "run `apt-get install -y prometheus-alertmanager`; this test does not skip."
        )
    config = {
        "route": {
            "receiver": "test",
            "group_by": ["alertname"],
            "group_wait": "300ms",
            "group_interval": "1s",
            "repeat_interval": "1h",
        },
        "receivers": [{"name": "test", "webhook_configs": [{"url": webhook_url, "send_resolved": True}]}],
    }
    (tmp_path / "am.yml").write_text(yaml.safe_dump(config))
    port = _free_port()
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp_path / 'am.yml'}",
            f"--storage.path={tmp_path / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


async def _ready(url: str) -> None:
    async def ok() -> bool:
        try:
            async with aiohttp.ClientSession() as s, s.get(url + "/-/ready") as r:
                return r.status == 200
        except aiohttp.ClientError:
            return False

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while not await ok():
        assert loop.time() < deadline, "alertmanager did not become ready"
        await asyncio.sleep(0.1)


def test_real_alertmanager_delivers_firing_and_resolved_once_each(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Scenario(tmp_path / "data") as book:
            receiver = await book.use(RecordingReceiver())
            with alertmanager(tmp_path, receiver.url + "/am") as am_url:
                await _ready(am_url)
                cfg = AlertsConfig.model_validate(
                    {
                        "receivers": [
                            {
                                "name": "am",
                                # An unreachable second member: an HA pair where one is down
                                # must not hold up the other.
                                "alertmanager": {
                                    "urls": [am_url, f"http://127.0.0.1:{_free_port()}"],
                                    "resend_interval": "300ms",
                                },
                                "retry": {"initial_backoff": "50ms", "max_backoff": "200ms", "timeout": "2s"},
                            }
                        ],
                        "tick": "50ms",
                    }
                )
                service = await book.use(AlertService(cfg, book.store, book.findings))
                a, b = finding(model="a", severity="critical"), finding(model="b", severity="critical")
                book.report(a, b)
                got = await receiver.wait_for(1, timeout=15)
                # Keep it firing through several re-sends (300ms) and Alertmanager group intervals (1s).
                for _ in range(4):
                    book.report(a, b)
                    await asyncio.sleep(0.5)
                assert len(receiver.received) == 1, [r.json()["status"] for r in receiver.received]
                book.report()  # both resolve
                got = await receiver.wait_for(2, timeout=15)
                await asyncio.sleep(2.5)  # two more group intervals: nothing else may arrive
                assert len(receiver.received) == 2

                alerts_seen = await _am_alerts(am_url)
                # A re-send to the working member may still be in flight: let it land before stopping.
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 20

                def am0_settled() -> bool:
                    msgs = service.outbox.messages(target="am#0")
                    return bool(msgs) and all(m.state in ("delivered", "expired") for m in msgs)

                while not am0_settled():
                    assert loop.time() < deadline, "messages to the working Alertmanager still open"
                    await asyncio.sleep(0.1)
                await service.stop()
                first, second = (r.json() for r in got)
                assert first["status"] == "firing" and first["groupLabels"] == {"alertname": "data_drift"}
                assert sorted(x["labels"]["model"] for x in first["alerts"]) == ["a", "b"]
                assert {x["labels"]["severity"] for x in first["alerts"]} == {"critical"}
                assert first["alerts"][0]["annotations"]["summary"].startswith("data_drift on ")
                assert second["status"] == "resolved"
                assert sorted(x["labels"]["model"] for x in second["alerts"]) == ["a", "b"]
                assert all(x["status"] == "resolved" for x in second["alerts"])
                assert alerts_seen == []  # resolved alerts are no longer active in Alertmanager
                # The working member got them all; the dead one's messages are still pending retry.
                # A re-send that could not leave within its own interval (a loaded machine)
                # expires instead: the next re-send carries the same alerts. Every firing and
                # resolution must have been delivered.
                am0 = service.outbox.messages(target="am#0")
                transitions = [m for m in am0 if m.meta["kind"] == "alert"]
                assert len(transitions) == 4 and all(m.state == "delivered" for m in transitions)
                assert all(m.meta["kind"] == "resend" for m in am0 if m.state != "delivered")
                assert any(m.state == "pending" for m in service.outbox.messages(target="am#1"))

    asyncio.run(scenario())


async def _am_alerts(url: str) -> list[dict]:
    async with aiohttp.ClientSession() as s, s.get(url + "/api/v2/alerts", params={"active": "true"}) as r:
        assert r.status == 200
        return list(await r.json())


def test_alertmanager_binary_missing_fails_loudly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tests.test_alerts_alertmanager as mod

    monkeypatch.setattr(mod, "BINARY", str(tmp_path / "nope"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with (
        pytest.raises(pytest.fail.Exception, match="apt-get install -y prometheus-alertmanager"),
        alertmanager(tmp_path, "http://127.0.0.1:9/"),
    ):
        pass
