"""Retraining targets: submit a run idempotently, and follow its state.

Idempotency rests on the run's deterministic name (``mlvigil-<trigger id>``):

* Argo Workflows: the name is the workflow's ``metadata.name``; a second submit of the same
  name gets 409 from the Argo Server, which means "already started".
* Kubeflow Pipelines v2 has no idempotency key: the run's ``display_name`` is looked up
  (``GET /apis/v2beta1/runs?filter=...``) before ``POST /apis/v2beta1/runs``.
* A webhook carries the name in its body and the trigger id as ``webhook-id``.

So a retry after a crash between "sent" and "recorded as sent" never starts a second run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import aiohttp

from alerts.signing import webhook_headers
from mlvigil.config import Secret
from mlvigil.outbox import Outcome, Sender
from retrain_hooks.config import KFP_IN_CLUSTER_TOKEN, SA_TOKEN, ArgoTarget, KfpTarget, WebhookTarget

SessionOf = Callable[[], aiohttp.ClientSession]

# Terminal run states, mapped onto the trigger's vocabulary.
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
ARGO_PHASES = {
    "": "running",
    "Pending": "running",
    "Running": "running",
    "Succeeded": "succeeded",
    "Failed": "failed",
    "Error": "failed",
}


def _auth(token: Secret | None, in_cluster: bool, kfp: bool) -> dict[str, str]:
    value = token.resolve() if token else None
    if value is None and in_cluster:
        for path in (KFP_IN_CLUSTER_TOKEN, SA_TOKEN) if kfp else (SA_TOKEN,):
            if path.exists():
                value = path.read_text().strip()
                break
    return {"authorization": f"Bearer {value}"} if value else {}


def _failed(where: str, status: int, text: str, retry_after: str | None = None) -> Outcome:
    outcome = Outcome.from_http(status, text, retry_after)
    outcome.error = f"{where}: HTTP {status}: {text[:200]}"
    return outcome


def kfp_run_body(
    cfg: KfpTarget, run_name: str, parameters: dict[str, Any], description: str
) -> dict[str, Any]:
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


def kfp_sender(session_of: SessionOf, cfg: KfpTarget) -> Sender:
    base = cfg.url.rstrip("/") + "/apis/v2beta1/runs"

    async def send(doc: dict[str, Any]) -> Outcome:
        p = doc["payload"]
        headers = {"content-type": "application/json", **_auth(cfg.token, cfg.in_cluster, kfp=True)}
        found = await kfp_find_run(session_of(), cfg, p["run_name"], headers)
        if isinstance(found, Outcome):
            return found
        if found is not None:
            return Outcome(
                ok=True, status=200, result={"run_id": found, "run_name": p["run_name"], "existing": True}
            )
        body = kfp_run_body(cfg, p["run_name"], p["parameters"], p.get("description", ""))
        try:
            async with session_of().post(base, json=body, headers=headers) as resp:
                text = await resp.text()
                if resp.status >= 300:
                    return _failed("kfp create run", resp.status, text, resp.headers.get("Retry-After"))
                run = json.loads(text)
                return Outcome(
                    ok=True, status=resp.status, result={"run_id": run["run_id"], "run_name": p["run_name"]}
                )
        except (aiohttp.ClientError, OSError) as exc:
            return Outcome(ok=False, error=f"kfp: connection failed: {type(exc).__name__}")

    return send


async def kfp_find_run(
    session: aiohttp.ClientSession, cfg: KfpTarget, run_name: str, headers: dict[str, str]
) -> str | Outcome | None:
    """The id of the run named ``run_name`` if one exists (an Outcome when the lookup failed)."""
    flt = json.dumps(
        {"predicates": [{"operation": "EQUALS", "key": "display_name", "string_value": run_name}]}
    )
    params = {"filter": flt, "page_size": "1"}
    if cfg.experiment_id:
        params["experiment_id"] = cfg.experiment_id
    if cfg.namespace:
        params["namespace"] = cfg.namespace
    try:
        async with session.get(
            cfg.url.rstrip("/") + "/apis/v2beta1/runs", params=params, headers=headers
        ) as resp:
            text = await resp.text()
            if resp.status >= 300:
                return _failed("kfp list runs", resp.status, text, resp.headers.get("Retry-After"))
            runs = json.loads(text).get("runs") or []
            return str(runs[0]["run_id"]) if runs else None
    except (aiohttp.ClientError, OSError) as exc:
        return Outcome(ok=False, error=f"kfp: connection failed: {type(exc).__name__}")


async def kfp_state(session: aiohttp.ClientSession, cfg: KfpTarget, run_id: str) -> tuple[str, str] | None:
    """(trigger state, KFP state) of a run; None when it cannot be read now."""
    headers = _auth(cfg.token, cfg.in_cluster, kfp=True)
    async with session.get(
        f"{cfg.url.rstrip('/')}/apis/v2beta1/runs/{quote(run_id)}", headers=headers
    ) as resp:
        if resp.status != 200:
            return None
        state = str((await resp.json()).get("state") or "RUNTIME_STATE_UNSPECIFIED")
        return KFP_STATES.get(state, "running"), state


def argo_submit_body(
    cfg: ArgoTarget, run_name: str, parameters: dict[str, Any], labels: dict[str, str]
) -> dict[str, Any]:
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


def argo_sender(session_of: SessionOf, cfg: ArgoTarget) -> Sender:
    url = f"{cfg.url.rstrip('/')}/api/v1/workflows/{quote(cfg.namespace)}/submit"

    async def send(doc: dict[str, Any]) -> Outcome:
        p = doc["payload"]
        body = argo_submit_body(cfg, p["run_name"], p["parameters"], p.get("labels", {}))
        headers = {"content-type": "application/json", **_auth(cfg.token, cfg.in_cluster, kfp=False)}
        try:
            async with session_of().post(url, json=body, headers=headers) as resp:
                text = await resp.text()
                if resp.status == 409:  # that name exists: this trigger's workflow already started
                    return Outcome(ok=True, status=409, result={"run_name": p["run_name"], "existing": True})
                if resp.status >= 300:
                    return _failed("argo submit", resp.status, text, resp.headers.get("Retry-After"))
                name = json.loads(text).get("metadata", {}).get("name", p["run_name"])
                return Outcome(ok=True, status=resp.status, result={"run_name": name})
        except (aiohttp.ClientError, OSError) as exc:
            return Outcome(ok=False, error=f"argo: connection failed: {type(exc).__name__}")

    return send


async def argo_state(session: aiohttp.ClientSession, cfg: ArgoTarget, name: str) -> tuple[str, str] | None:
    headers = _auth(cfg.token, cfg.in_cluster, kfp=False)
    url = f"{cfg.url.rstrip('/')}/api/v1/workflows/{quote(cfg.namespace)}/{quote(name)}"
    async with session.get(url, headers=headers) as resp:
        if resp.status != 200:
            return None
        phase = str(((await resp.json()).get("status") or {}).get("phase") or "")
        return ARGO_PHASES.get(phase, "running"), phase or "Pending"


def webhook_sender(session_of: SessionOf, cfg: WebhookTarget) -> Sender:
    async def send(doc: dict[str, Any]) -> Outcome:
        body = json.dumps(doc["payload"], separators=(",", ":"), sort_keys=True).encode()
        headers = webhook_headers(doc["id"], body, cfg.secret.resolve() if cfg.secret else None)
        try:
            async with session_of().post(cfg.url, data=body, headers=headers) as resp:
                text = await resp.text()
                if resp.status >= 300:
                    return _failed("retrain webhook", resp.status, text, resp.headers.get("Retry-After"))
                return Outcome(ok=True, status=resp.status, result={"run_name": doc["payload"]["run_name"]})
        except (aiohttp.ClientError, OSError) as exc:
            return Outcome(ok=False, error=f"webhook: connection failed: {type(exc).__name__}")

    return send
