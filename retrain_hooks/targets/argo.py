"""Argo Workflows: the run name is the workflow's ``metadata.name``; a second submit of the
same name gets 409 from the Argo Server, which means "already started"."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import aiohttp

from mlvigil.core.outbox import Message, Outcome
from retrain_hooks.config import ArgoTarget
from retrain_hooks.targets.base import RetrainTarget, SessionOf, bearer, connection_failed, failed
from retrain_hooks.trigger import Trigger

ARGO_PHASES = {
    "": "running",
    "Pending": "running",
    "Running": "running",
    "Succeeded": "succeeded",
    "Failed": "failed",
    "Error": "failed",
}


def argo_submit_body(
    cfg: ArgoTarget, run_name: str, parameters: dict[str, Any], labels: dict[str, str]
) -> dict[str, Any]:
    """The ``POST /api/v1/workflows/<ns>/submit`` body.

    >>> cfg = ArgoTarget(url="http://argo", namespace="ml", template="retrain")
    >>> argo_submit_body(cfg, "mlvigil-1", {"a": "1"}, {"k": "v"})["submitOptions"]
    {'name': 'mlvigil-1', 'labels': 'k=v', 'parameters': ['a=1']}
    """
    opts: dict[str, Any] = {
        "name": run_name,
        "labels": ",".join(f"{k}={v}" for k, v in sorted({**cfg.labels, **labels}.items())),
        "parameters": [f"{k}={v}" for k, v in parameters.items()],
    }
    if cfg.service_account:
        opts["serviceAccount"] = cfg.service_account
    return {
        "namespace": cfg.namespace,
        "resourceKind": cfg.kind,
        "resourceName": cfg.template,
        "submitOptions": opts,
    }


class ArgoRetrainTarget(RetrainTarget):
    kind = "argo"

    def __init__(self, name: str, cfg: ArgoTarget, session_of: SessionOf) -> None:
        super().__init__(name, session_of)
        self.cfg = cfg
        self.workflows_url = f"{cfg.url.rstrip('/')}/api/v1/workflows/{quote(cfg.namespace)}"

    def _headers(self) -> dict[str, str]:
        return bearer(self.cfg.token, self.cfg.in_cluster)

    async def submit(self, msg: Message) -> Outcome:
        req = self.request_of(msg)
        body = argo_submit_body(self.cfg, req.run_name, req.parameters, req.labels)
        headers = {"content-type": "application/json", **self._headers()}
        try:
            async with self.session_of().post(
                self.workflows_url + "/submit", json=body, headers=headers
            ) as resp:
                text = await resp.text()
                if resp.status == 409:  # that name exists: this trigger's workflow already started
                    return Outcome(ok=True, status=409, result={"run_name": req.run_name, "existing": True})
                if resp.status >= 300:
                    return failed("argo submit", resp.status, text, resp.headers.get("Retry-After"))
                name = json.loads(text).get("metadata", {}).get("name", req.run_name)
                return Outcome(ok=True, status=resp.status, result={"run_name": name})
        except (aiohttp.ClientError, OSError) as exc:
            return connection_failed("argo", exc)

    def preview(self, trigger: Trigger) -> dict[str, Any]:
        body = argo_submit_body(self.cfg, trigger.run_name, trigger.parameters, trigger.labels)
        # The namespace unquoted, as the preview has always shown it.
        url = f"{self.cfg.url.rstrip('/')}/api/v1/workflows/{self.cfg.namespace}/submit"
        return {"method": "POST", "url": url, "body": body}

    async def state(self, trigger: Trigger) -> tuple[str, str] | None:
        name = (trigger.run or {}).get("run_name") or trigger.run_name
        async with self.session_of().get(
            f"{self.workflows_url}/{quote(name)}", headers=self._headers()
        ) as resp:
            if resp.status != 200:
                return None
            phase = str(((await resp.json()).get("status") or {}).get("phase") or "")
            return ARGO_PHASES.get(phase, "running"), phase or "Pending"
