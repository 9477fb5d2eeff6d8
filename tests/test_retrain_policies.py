"""Retraining policies: cooldown, one run in flight per model, approval through the API,
dry-run, minimum time firing, and the audit trail."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from retrain_hooks.api import routes
from retrain_hooks.config import RetrainConfig
from retrain_hooks.service import RetrainService
from tests.fakes.alerting import Scenario, finding, until
from tests.fakes.retrain import argo_fake, argo_target, retrain_config

WHEN = {"severities": ["warning", "critical"]}


def _cfg(url: str, **policy: Any) -> RetrainConfig:
    return retrain_config(argo_target(url), **WHEN, **policy)


def test_in_flight_limit_then_cooldown(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Scenario(tmp_path) as book:
            argo = await book.use(argo_fake(phases=["Running"]))  # stays running until we say otherwise
            service = await book.use(RetrainService(_cfg(argo.url, cooldown="1s"), book.store, book.findings))
            book.report(finding(kind="data_drift"))
            await until(lambda: service.triggers(status="running"), what="first run running")
            # Another finding on the same model while the run is in flight: no second run.
            book.report(finding(kind="data_drift"), finding(kind="prediction_drift"))
            skipped = service.triggers(status="skipped")
            assert len(skipped) == 1 and skipped[0]["reason"].startswith("in_flight")
            # A different model is not held up.
            book.report(finding(kind="data_drift"), finding(kind="prediction_drift"), finding(model="other"))
            await until(lambda: argo.submits == 2, what="second model's run")

            argo.phases = ["Succeeded"]
            await until(lambda: len(service.triggers(status="succeeded")) == 2, what="runs done")
            # Run done, but within the cooldown: still no run for the skipped finding.
            book.report(finding(kind="data_drift"), finding(kind="prediction_drift"), finding(model="other"))
            (s,) = service.triggers(status="skipped")
            assert s["reason"].startswith("cooldown") and argo.submits == 2
            # After the cooldown, the same still-firing finding starts its run (its trigger id is stable).
            await asyncio.sleep(1.1)
            book.report(finding(kind="data_drift"), finding(kind="prediction_drift"), finding(model="other"))
            await until(lambda: argo.submits == 3, what="run after cooldown")
            t = next(t for t in service.triggers() if t["id"] == s["id"])
            assert [h["status"] for h in t["history"]][:3] == ["skipped", "skipped", "queued"]
            assert argo.violations == []

    asyncio.run(scenario())


def test_approval_through_the_api_and_rejection(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Scenario(tmp_path) as book:
            argo = await book.use(argo_fake(phases=["Succeeded"]))
            service = await book.use(
                RetrainService(_cfg(argo.url, approval=True, cooldown="0s"), book.store, book.findings)
            )
            app = web.Application()
            app.add_routes(routes(service))
            async with TestClient(TestServer(app)) as client:
                book.report(finding())
                listed = await (await client.get("/api/v1/retrain/triggers")).json()
                (t,) = listed["triggers"]
                assert t["status"] == "pending_approval" and argo.submits == 0
                assert (
                    t["finding"]["evidence"]["score"] == 0.31
                    and t["parameters"]["mlvigil_finding_kind"] == "data_drift"
                )
                r = await client.post(f"/api/v1/retrain/triggers/{t['id']}/approve", json={"by": "alice"})
                assert r.status == 200
                await until(lambda: argo.submits == 1, what="run after approval")
                r = await client.post(f"/api/v1/retrain/triggers/{t['id']}/approve")
                assert r.status == 409  # already decided
                assert (await client.post("/api/v1/retrain/triggers/nope/approve")).status == 404

                await until(lambda: service.triggers(status="succeeded"), what="approved run done")
                book.report(finding(), finding(model="b"))
                (pending,) = service.triggers(status="pending_approval")
                r = await client.post(
                    f"/api/v1/retrain/triggers/{pending['id']}/reject", json={"by": "bob", "note": "noise"}
                )
                assert (await r.json())["status"] == "rejected"
                await asyncio.sleep(0.2)
                assert argo.submits == 1
                history = [h["reason"] for h in (await r.json())["history"]]
                assert history[-1] == "rejected by bob: noise"

    asyncio.run(scenario())


def test_dry_run_records_the_request_and_starts_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Scenario(tmp_path) as book:
            argo = await book.use(argo_fake(phases=["Succeeded"]))
            service = await book.use(RetrainService(_cfg(argo.url, dry_run=True), book.store, book.findings))
            book.report(finding())
            book.report(finding())
            await asyncio.sleep(0.2)
            (t,) = service.triggers()
            assert t["status"] == "dry_run" and argo.submits == 0
            assert t["would_send"]["body"]["submitOptions"]["name"] == t["run_name"]

    asyncio.run(scenario())


def test_min_firing_and_subject_matchers(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Scenario(tmp_path) as book:
            argo = await book.use(argo_fake(phases=["Succeeded"]))
            cfg = _cfg(argo.url, min_firing="10m", matchers=['model=~"churn.*"'])
            service = await book.use(RetrainService(cfg, book.store, book.findings))
            t0 = time.time()
            book.report(finding(), finding(model="fraud"), now=t0)
            book.report(finding(), finding(model="fraud"), now=t0 + 300)
            assert service.triggers() == []  # firing 5 minutes: not yet
            book.report(finding(), finding(model="fraud"), now=t0 + 601)
            (t,) = service.triggers()
            assert t["model"] == "churn"  # fraud does not match the policy's subject matcher
            await until(lambda: argo.submits == 1, what="run")

    asyncio.run(scenario())


def test_restart_requeues_a_trigger_queued_before_a_crash(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Scenario(tmp_path) as book:
            argo = await book.use(argo_fake(phases=["Succeeded"]))
            cfg = _cfg(argo.url)
            service = RetrainService(
                cfg, book.store, book.findings
            )  # never started: "crashed" before sending
            book.report(finding())
            assert service.triggers(status="queued")
            book.reopen()

            service = await book.use(RetrainService(cfg, book.store, book.findings))
            await until(lambda: service.triggers(status="succeeded"), what="run after restart")
            book.report(finding())  # same episode again: no second trigger
            await asyncio.sleep(0.2)
            assert argo.submits == 1 and len(service.triggers()) == 1

    asyncio.run(scenario())
