"""Retraining targets against contract fakes of Argo Workflows and Kubeflow Pipelines v2."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from retrain_hooks.config import RetrainConfig
from retrain_hooks.service import RetrainService
from tests.fakes.alerting import Scenario, finding, until
from tests.fakes.kfp import FakeKfp
from tests.fakes.retrain import argo_fake, argo_target, retrain_config

POLICY = {
    "name": "drift-retrain",
    "kinds": ["data_drift"],
    "severities": ["critical"],
    "parameters": {"dataset": "s3://bucket/churn"},
}


def _cfg(target: dict[str, Any], **policy: Any) -> RetrainConfig:
    return retrain_config(target, **{**POLICY, **policy})


def test_argo_submit_follow_and_duplicate_is_409(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARGO_TOKEN", "s3cret")

    async def scenario() -> None:
        async with Scenario(tmp_path) as book:
            argo = await book.use(argo_fake("dataset", token="s3cret"))
            cfg = _cfg(argo_target(argo.url, labels={"team": "ds"}, token={"env": "ARGO_TOKEN"}))
            service = await book.use(RetrainService(cfg, book.store, book.findings))
            f = finding(severity="critical")
            book.report(f)
            trig = await until(
                lambda: [t for t in service.triggers() if t["status"] == "succeeded"], what="succeeded"
            )
            assert argo.violations == [] and argo.submits == 1
            (wf,) = argo.workflows.values()
            t = trig[0]
            assert wf["metadata"]["name"] == t["run_name"] == f"mlvigil-{t['id']}"
            assert wf["metadata"]["labels"] == {
                "team": "ds",
                "mlvigil.io/trigger-id": t["id"],
                "mlvigil.io/policy": "drift-retrain",
            }
            params = {p["name"]: p["value"] for p in wf["spec"]["arguments"]["parameters"]}
            assert params["dataset"] == "s3://bucket/churn" and params["mlvigil_model"] == "churn"
            assert json.loads(params["mlvigil_evidence"])["score"] == 0.31
            assert [h["status"] for h in t["history"]] == ["queued", "submitted", "running", "succeeded"]

            # A retry after a crash re-sends the same message: Argo answers 409, no second workflow.
            msg = service.outbox.get(t["id"])
            assert msg is not None
            outcome = await service.targets["t"].submit(msg)
            assert (
                outcome.ok
                and outcome.status == 409
                and outcome.result == {"run_name": t["run_name"], "existing": True}
            )
            assert argo.submits == 1 and argo.conflicts == 1

    asyncio.run(scenario())


def test_kfp_create_is_looked_up_by_name_first_and_followed(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Scenario(tmp_path) as book:
            kfp = await book.use(FakeKfp(script=["PENDING", "RUNNING", "FAILED"]))
            cfg = _cfg(
                {
                    "kfp": {
                        "url": kfp.url,
                        "pipeline_id": "pipe-1",
                        "pipeline_version_id": "ver-1",
                        "experiment_id": "exp-1",
                    }
                }
            )
            service = await book.use(RetrainService(cfg, book.store, book.findings))
            book.report(finding(severity="critical"))
            (t,) = await until(
                lambda: [t for t in service.triggers() if t["status"] == "failed"], what="run failed"
            )
            assert kfp.violations == [] and kfp.creates == 1 and kfp.lists == 1
            (run,) = kfp.runs.values()
            assert run["display_name"] == t["run_name"] and t["run"]["run_id"] == run["run_id"]
            assert run["runtime_config"]["parameters"]["dataset"] == "s3://bucket/churn"
            assert run["pipeline_version_reference"] == {
                "pipeline_id": "pipe-1",
                "pipeline_version_id": "ver-1",
            }
            assert "kfp reports FAILED" in t["reason"]

            # Crash after KFP created the run but before it was recorded: the retry finds it by name.
            msg = service.outbox.get(t["id"])
            assert msg is not None
            outcome = await service.targets["t"].submit(msg)
            assert outcome.ok and outcome.result is not None and outcome.result["existing"] is True
            assert outcome.result["run_id"] == run["run_id"] and kfp.creates == 1

    asyncio.run(scenario())


def test_kfp_fake_refuses_requests_off_the_published_api(tmp_path: Path) -> None:
    """The fake is strict: a wrong body is a 400 with the violation named (guards the guard)."""
    import aiohttp

    async def scenario() -> None:
        async with Scenario(tmp_path) as stack:
            kfp = await stack.use(FakeKfp())
            async with (
                aiohttp.ClientSession() as s,
                s.post(
                    kfp.url + "/apis/v2beta1/runs",
                    json={
                        "display_name": "x",
                        "pipeline_version_reference": {
                            "pipeline_id": "pipe-1",
                            "pipeline_version_id": "ver-1",
                        },
                        "parameters": {"a": 1},
                        "state": "RUNNING",
                    },
                ) as r,
            ):
                assert r.status == 400
            assert any("parameters: not a field of V2beta1Run" in v for v in kfp.violations)
            assert any("state: output only" in v for v in kfp.violations)

    asyncio.run(scenario())
