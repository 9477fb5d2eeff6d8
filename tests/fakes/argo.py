"""An Argo Workflows Server fake on 127.0.0.1: ``POST /api/v1/workflows/{namespace}/submit``
and ``GET /api/v1/workflows/{namespace}/{name}``, checked against the schema below (written
from Argo's OpenAPI spec, ``io.argoproj.workflow.v1alpha1.WorkflowSubmitRequest`` and
``SubmitOpts``), with workflow phases simulated.

Like the real server, a second workflow with an existing name is refused with 409
(``AlreadyExists``), labels must be ``k=v`` pairs of valid Kubernetes label syntax, and
parameters ``name=value`` naming parameters the template declares.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

# From argo-workflows api/openapi-spec/swagger.json (v3.5): JSON property -> type.
WORKFLOW_SUBMIT_REQUEST = {"namespace": str, "resourceKind": str, "resourceName": str, "submitOptions": dict}
SUBMIT_OPTS = {
    "annotations": str,
    "dryRun": bool,
    "entryPoint": str,
    "generateName": str,
    "labels": str,
    "name": str,
    "ownerReference": dict,
    "parameters": list,
    "podPriorityClassName": str,
    "priority": int,
    "serverDryRun": bool,
    "serviceAccount": str,
}
RESOURCE_KINDS = {"WorkflowTemplate", "ClusterWorkflowTemplate", "CronWorkflow"}
_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


def check_submit(body: Any, namespace: str) -> list[str]:
    if not isinstance(body, dict):
        return ["$: expected an object"]
    errors = [
        f"$.{k}: not a field of WorkflowSubmitRequest" for k in body if k not in WORKFLOW_SUBMIT_REQUEST
    ]
    errors += [
        f"$.{k}: expected {t.__name__}"
        for k, t in WORKFLOW_SUBMIT_REQUEST.items()
        if k in body and not isinstance(body[k], t)
    ]
    if body.get("namespace") not in (None, namespace):
        errors.append("$.namespace: differs from the path's namespace")
    if body.get("resourceKind") not in RESOURCE_KINDS:
        errors.append(f"$.resourceKind: {body.get('resourceKind')!r} not one of {sorted(RESOURCE_KINDS)}")
    if not body.get("resourceName"):
        errors.append("$.resourceName: required")
    opts = body.get("submitOptions") or {}
    errors += [f"$.submitOptions.{k}: not a field of SubmitOpts" for k in opts if k not in SUBMIT_OPTS]
    for k, t in SUBMIT_OPTS.items():
        if k in opts and (not isinstance(opts[k], t) or (t is int and isinstance(opts[k], bool))):
            errors.append(f"$.submitOptions.{k}: expected {t.__name__}")
    name = opts.get("name") or ""
    if name and (len(name) > 63 or not _DNS1123.match(name)):
        errors.append(f"$.submitOptions.name: {name!r} is not a DNS-1123 name")
    for pair in filter(None, str(opts.get("labels") or "").split(",")):
        key, sep, value = pair.partition("=")
        if not sep or not _LABEL_KEY.match(key) or not _LABEL_VALUE.match(value):
            errors.append(f"$.submitOptions.labels: bad label {pair!r}")
    for p in opts.get("parameters") or []:
        if not isinstance(p, str) or "=" not in p:
            errors.append(f"$.submitOptions.parameters: {p!r} is not name=value")
    return errors


@dataclass
class FakeArgo:
    namespace: str = "ml"
    # Templates and the parameters each declares.
    templates: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    token: str | None = None
    phases: list[str] = field(default_factory=lambda: ["Pending", "Running", "Succeeded"])
    workflows: dict[str, dict[str, Any]] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    submits: int = 0
    conflicts: int = 0
    port: int = 0
    _runner: web.AppRunner | None = None
    _steps: dict[str, int] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _error(self, status: int, code: int, message: str, violation: bool = True) -> web.Response:
        if violation:
            self.violations.append(message)
        return web.json_response({"code": code, "message": message}, status=status)

    async def submit(self, request: web.Request) -> web.Response:
        if self.token and request.headers.get("Authorization") != f"Bearer {self.token}":
            return self._error(401, 16, "token not valid")
        ns = request.match_info["namespace"]
        try:
            body = await request.json()
        except ValueError:
            return self._error(400, 3, "body is not JSON")
        errors = check_submit(body, ns)
        if errors:
            return self._error(400, 3, "; ".join(errors))
        declared = self.templates.get((body["resourceKind"], body["resourceName"]))
        if declared is None:
            return self._error(404, 5, f"{body['resourceKind']} {body['resourceName']!r} not found")
        opts = body.get("submitOptions") or {}
        params = dict(p.split("=", 1) for p in opts.get("parameters") or [])
        undeclared = sorted(set(params) - declared)
        if undeclared:
            return self._error(400, 3, f"parameters {undeclared} are not declared by the template")
        name = opts.get("name") or (opts.get("generateName") or "wf-") + uuid.uuid4().hex[:5]
        if name in self.workflows:
            self.conflicts += 1
            return self._error(409, 6, f'workflows.argoproj.io "{name}" already exists', violation=False)
        labels = dict(p.split("=", 1) for p in filter(None, str(opts.get("labels") or "").split(",")))
        self.submits += 1
        wf = {
            "metadata": {"name": name, "namespace": ns, "labels": labels, "uid": str(uuid.uuid4())},
            "spec": {
                "arguments": {"parameters": [{"name": k, "value": v} for k, v in params.items()]},
                "workflowTemplateRef": {
                    "name": body["resourceName"],
                    "clusterScope": body["resourceKind"] == "ClusterWorkflowTemplate",
                },
            },
            "status": {},
        }
        self.workflows[name] = wf
        self._steps[name] = 0
        return web.json_response(wf)

    async def get(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        wf = self.workflows.get(name)
        if wf is None or wf["metadata"]["namespace"] != request.match_info["namespace"]:
            return self._error(404, 5, "not found", violation=False)
        step = min(self._steps[name], len(self.phases) - 1)
        self._steps[name] += 1
        wf["status"] = {"phase": self.phases[step]}
        return web.json_response(wf)

    async def start(self) -> FakeArgo:
        app = web.Application()
        app.router.add_post("/api/v1/workflows/{namespace}/submit", self.submit)
        app.router.add_get("/api/v1/workflows/{namespace}/{name}", self.get)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner:
            runner, self._runner = self._runner, None
            await runner.cleanup()
