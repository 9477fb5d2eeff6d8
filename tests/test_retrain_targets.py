"""Retraining targets against contract fakes of Argo Workflows and Kubeflow Pipelines v2."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from retrain_hooks.config import RetrainConfig
from retrain_hooks.service import RetrainService
from tests.fakes.alerting import Book, finding, until
from tests.fakes.argo import FakeArgo
from tests.fakes.kfp import FakeKfp

MLVIGIL_PARAMS = {
    "mlvigil_trigger_id",
    "mlvigil_finding_id",
    "mlvigil_finding_kind",
    "mlvigil_severity",
    "mlvigil_model",
    "mlvigil_summary",
    "mlvigil_evidence",
}
FAST_RETRY = {"initial_backoff": "20ms", "max_backoff": "100ms", "timeout": "2s"}


def _cfg(target: dict[str, Any], **policy: Any) -> RetrainConfig:
    return RetrainConfig.model_validate(
        {
            "targets": [{"name": "t", **target, "retry": FAST_RETRY}],
            "policies": [
                {
                    "name": "drift-retrain",
                    "target": "t",
                    "kinds": ["data_drift"],
                    "severities": ["critical"],
                    "parameters": {"dataset": "s3://bucket/churn"},
                    **policy,
                }
            ],
            "poll_interval": "50ms",
        }
    )


def test_argo_submit_follow_and_duplicate_is_409(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARGO_TOKEN", "s3cret")

    async def scenario() -> None:
        argo = await FakeArgo(
            templates={("WorkflowTemplate", "retrain"): MLVIGIL_PARAMS | {"dataset"}}, token="s3cret"
        ).start()
        book = Book(tmp_path)
        cfg = _cfg(
            {
                "argo": {
                    "url": argo.url,
                    "namespace": "ml",
                    "template": "retrain",
                    "labels": {"team": "ds"},
                    "token": {"env": "ARGO_TOKEN"},
                }
            }
        )
        service = RetrainService(cfg, book.store, book.book)
        await service.start()
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
        outcome = await service.dispatcher._targets["t"].sender(msg)
        assert (
            outcome.ok
            and outcome.status == 409
            and outcome.result == {"run_name": t["run_name"], "existing": True}
        )
        assert argo.submits == 1 and argo.conflicts == 1
        await service.stop()
        await argo.stop()
        book.close()

    asyncio.run(scenario())


def test_kfp_create_is_looked_up_by_name_first_and_followed(tmp_path: Path) -> None:
    async def scenario() -> None:
        kfp = await FakeKfp(script=["PENDING", "RUNNING", "FAILED"]).start()
        book = Book(tmp_path)
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
        service = RetrainService(cfg, book.store, book.book)
        await service.start()
        book.report(finding(severity="critical"))
        (t,) = await until(
            lambda: [t for t in service.triggers() if t["status"] == "failed"], what="run failed"
        )
        assert kfp.violations == [] and kfp.creates == 1 and kfp.lists == 1
        (run,) = kfp.runs.values()
        assert run["display_name"] == t["run_name"] and t["run"]["run_id"] == run["run_id"]
        assert run["runtime_config"]["parameters"]["dataset"] == "s3://bucket/churn"
        assert run["pipeline_version_reference"] == {"pipeline_id": "pipe-1", "pipeline_version_id": "ver-1"}
        assert "kfp reports FAILED" in t["reason"]

        # Crash after KFP created the run but before it was recorded: the retry finds it by name.
        msg = service.outbox.get(t["id"])
        assert msg is not None
        outcome = await service.dispatcher._targets["t"].sender(msg)
        assert outcome.ok and outcome.result is not None and outcome.result["existing"] is True
        assert outcome.result["run_id"] == run["run_id"] and kfp.creates == 1
        await service.stop()
        await kfp.stop()
        book.close()

    asyncio.run(scenario())


def test_kfp_fake_refuses_requests_off_the_published_api(tmp_path: Path) -> None:
    """The fake is strict: a wrong body is a 400 with the violation named (guards the guard)."""
    import aiohttp

    async def scenario() -> None:
        kfp = await FakeKfp().start()
        async with (
            aiohttp.ClientSession() as s,
            s.post(
                kfp.url + "/apis/v2beta1/runs",
                json={
                    "display_name": "x",
                    "pipeline_version_reference": {"pipeline_id": "pipe-1", "pipeline_version_id": "ver-1"},
                    "parameters": {"a": 1},
                    "state": "RUNNING",
                },
            ) as r,
        ):
            assert r.status == 400
        assert any("parameters: not a field of V2beta1Run" in v for v in kfp.violations)
        assert any("state: output only" in v for v in kfp.violations)
        await kfp.stop()

    asyncio.run(scenario())
