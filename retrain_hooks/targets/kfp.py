"""Kubeflow Pipelines v2. KFP has no idempotency key: the run's ``display_name`` is looked up
(``GET /apis/v2beta1/runs?filter=...``) before ``POST /apis/v2beta1/runs``."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import aiohttp

from mlvigil.core.outbox import Message, Outcome
from retrain_hooks.config import KfpTarget
from retrain_hooks.targets.base import (
    KFP_TOKEN_FILES,
    RetrainTarget,
    SessionOf,
    bearer,
    connection_failed,
    failed,
)
from retrain_hooks.trigger import Trigger

# KFP run states, mapped onto the trigger's vocabulary.
KFP_STATES = {
    "PENDING": "running",
    "RUNNING": "running",
    "PAUSED": "running",
    "CANCELING": "running",
    "RUNTIME_STATE_UNSPECIFIED": "running",
    "SUCCEEDED": "succeeded",
    "SKIPPED": "succeeded",
    "FAILED": "failed",
    "CANCELED": "canceled",
}


def kfp_run_body(
    cfg: KfpTarget, run_name: str, parameters: dict[str, Any], description: str
) -> dict[str, Any]:
    """The ``POST /apis/v2beta1/runs`` body.

    >>> cfg = KfpTarget(url="http://kfp", pipeline_id="p", pipeline_version_id="v")
    >>> kfp_run_body(cfg, "mlvigil-1", {"a": "1"}, "why")["pipeline_version_reference"]
    {'pipeline_id': 'p', 'pipeline_version_id': 'v'}
    """
    body: dict[str, Any] = {
        "display_name": run_name,
        "description": description,
        "pipeline_version_reference": {
            "pipeline_id": cfg.pipeline_id,
            "pipeline_version_id": cfg.pipeline_version_id,
        },
        "runtime_config": {"parameters": parameters},
    }
    if cfg.experiment_id:
        body["experiment_id"] = cfg.experiment_id
    if cfg.service_account:
        body["service_account"] = cfg.service_account
    return body


class KfpRetrainTarget(RetrainTarget):
    kind = "kfp"

    def __init__(self, name: str, cfg: KfpTarget, session_of: SessionOf) -> None:
        super().__init__(name, session_of)
        self.cfg = cfg
        self.runs_url = cfg.url.rstrip("/") + "/apis/v2beta1/runs"

    def _headers(self) -> dict[str, str]:
        return bearer(self.cfg.token, self.cfg.in_cluster, KFP_TOKEN_FILES)

    async def submit(self, msg: Message) -> Outcome:
        req = self.request_of(msg)
        headers = {"content-type": "application/json", **self._headers()}
        found = await self.find_run(req.run_name, headers)
        if isinstance(found, Outcome):
            return found
        if found is not None:
            return Outcome(
                ok=True, status=200, result={"run_id": found, "run_name": req.run_name, "existing": True}
            )
        body = kfp_run_body(self.cfg, req.run_name, req.parameters, req.description)
        try:
            async with self.session_of().post(self.runs_url, json=body, headers=headers) as resp:
                text = await resp.text()
                if resp.status >= 300:
                    return failed("kfp create run", resp.status, text, resp.headers.get("Retry-After"))
                run = json.loads(text)
                return Outcome(
                    ok=True, status=resp.status, result={"run_id": run["run_id"], "run_name": req.run_name}
                )
        except (aiohttp.ClientError, OSError) as exc:
            return connection_failed("kfp", exc)

    async def find_run(self, run_name: str, headers: dict[str, str]) -> str | Outcome | None:
        """The id of the run named ``run_name`` if one exists (an Outcome when the lookup failed)."""
        flt = json.dumps(
            {"predicates": [{"operation": "EQUALS", "key": "display_name", "string_value": run_name}]}
        )
        params = {"filter": flt, "page_size": "1"}
        if self.cfg.experiment_id:
            params["experiment_id"] = self.cfg.experiment_id
        if self.cfg.namespace:
            params["namespace"] = self.cfg.namespace
        try:
            async with self.session_of().get(self.runs_url, params=params, headers=headers) as resp:
                text = await resp.text()
                if resp.status >= 300:
                    return failed("kfp list runs", resp.status, text, resp.headers.get("Retry-After"))
                runs = json.loads(text).get("runs") or []
                return str(runs[0]["run_id"]) if runs else None
        except (aiohttp.ClientError, OSError) as exc:
            return connection_failed("kfp", exc)

    def preview(self, trigger: Trigger) -> dict[str, Any]:
        body = kfp_run_body(self.cfg, trigger.run_name, trigger.parameters, trigger.finding.summary)
        return {"method": "POST", "url": self.runs_url, "body": body}

    async def state(self, trigger: Trigger) -> tuple[str, str] | None:
        run_id = (trigger.run or {}).get("run_id")
        if not run_id:
            return None
        async with self.session_of().get(f"{self.runs_url}/{quote(run_id)}", headers=self._headers()) as resp:
            if resp.status != 200:
                return None
            state = str((await resp.json()).get("state") or "RUNTIME_STATE_UNSPECIFIED")
            return KFP_STATES.get(state, "running"), state
