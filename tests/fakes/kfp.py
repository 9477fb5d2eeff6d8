"""A Kubeflow Pipelines v2 API fake on 127.0.0.1 that checks every request against the
published v2beta1 models (``kfp_server_api``, generated from KFP's swagger) and simulates
run states.

Checked: request bodies may only use fields of the model (recursively, with their types and
enum values), output-only fields of a run (run_id, state, created_at, ...) are refused on
create, a run needs display_name and a pipeline_version_reference to a known pipeline
version, the list filter is a JSON ``V2beta1Filter``, and the bearer token when one is set.
"""

from __future__ import annotations

import importlib
import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

_MODELS = importlib.import_module("kfp_server_api.models")
_PRIMITIVES: dict[str, type | tuple[type, ...]] = {
    "str": str,
    "int": int,
    "bool": bool,
    "float": (int, float),
    "object": object,
    "datetime": str,
}
# Fields of V2beta1Run that the server sets; a create request must not carry them.
RUN_OUTPUT_ONLY = {
    "run_id",
    "storage_state",
    "created_at",
    "scheduled_at",
    "finished_at",
    "state",
    "error",
    "run_details",
    "state_history",
    "plugins_output",
}


def _model_class(name: str) -> Any:
    snake = re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
    module = importlib.import_module(f"kfp_server_api.models.{snake}")
    return getattr(module, name)


def validate(value: Any, type_name: str, path: str = "$") -> list[str]:
    """Errors of ``value`` against a kfp_server_api type name ("V2beta1Run", "list[str]", ...)."""
    if value is None:
        return []
    if type_name.startswith("list["):
        if not isinstance(value, list):
            return [f"{path}: expected a list"]
        return [e for i, v in enumerate(value) for e in validate(v, type_name[5:-1], f"{path}[{i}]")]
    if type_name.startswith("dict("):
        if not isinstance(value, dict):
            return [f"{path}: expected an object"]
        inner = type_name[type_name.index(",") + 1 : -1].strip()
        return [e for k, v in value.items() for e in validate(v, inner, f"{path}.{k}")]
    if type_name in _PRIMITIVES:
        ok = isinstance(value, _PRIMITIVES[type_name]) and not (
            type_name == "int" and isinstance(value, bool)
        )
        return [] if ok else [f"{path}: expected {type_name}, got {type(value).__name__}"]
    cls = _model_class(type_name)
    allowed = getattr(cls, "allowable_values", None)
    if allowed is not None:  # an enum
        return [] if value in allowed else [f"{path}: {value!r} is not one of {allowed}"]
    if not isinstance(value, dict):
        return [f"{path}: expected a {type_name} object"]
    json_to_attr = {v: k for k, v in cls.attribute_map.items()}
    errors = []
    for key, v in value.items():
        if key not in json_to_attr:
            errors.append(f"{path}.{key}: not a field of {type_name}")
            continue
        errors.extend(validate(v, cls.openapi_types[json_to_attr[key]], f"{path}.{key}"))
    return errors


@dataclass
class FakeKfp:
    pipelines: dict[str, set[str]] = field(default_factory=lambda: {"pipe-1": {"ver-1"}})
    experiments: set[str] = field(default_factory=lambda: {"exp-1"})
    token: str | None = None
    # States a run goes through, one step per GET of the run.
    script: list[str] = field(default_factory=lambda: ["PENDING", "RUNNING", "SUCCEEDED"])
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    creates: int = 0
    lists: int = 0
    port: int = 0
    _runner: web.AppRunner | None = None
    _steps: dict[str, int] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _refuse(self, status: int, message: str) -> web.Response:
        self.violations.append(message)
        # google.rpc.Status, as the KFP API server answers errors.
        return web.json_response({"code": 3, "message": message, "details": []}, status=status)

    def _auth_ok(self, request: web.Request) -> bool:
        return self.token is None or request.headers.get("Authorization") == f"Bearer {self.token}"

    async def create_run(self, request: web.Request) -> web.Response:
        if not self._auth_ok(request):
            return self._refuse(401, "missing or wrong bearer token")
        try:
            body = await request.json()
        except ValueError:
            return self._refuse(400, "body is not JSON")
        errors = validate(body, "V2beta1Run")
        errors += [f"$.{k}: output only" for k in body if k in RUN_OUTPUT_ONLY]
        if not body.get("display_name"):
            errors.append("$.display_name: required")
        ref = body.get("pipeline_version_reference") or {}
        if not ref and not body.get("pipeline_spec"):
            errors.append("$: pipeline_version_reference or pipeline_spec required")
        elif ref and ref.get("pipeline_version_id") not in self.pipelines.get(
            ref.get("pipeline_id", ""), set()
        ):
            errors.append(f"$.pipeline_version_reference: unknown pipeline version {ref}")
        if body.get("experiment_id") and body["experiment_id"] not in self.experiments:
            errors.append(f"$.experiment_id: unknown experiment {body['experiment_id']}")
        if errors:
            return self._refuse(400, "; ".join(errors))
        self.creates += 1
        run_id = str(uuid.uuid4())
        run = {
            **body,
            "run_id": run_id,
            "state": "PENDING",
            "created_at": "2024-01-01T00:00:00Z",
            "storage_state": "AVAILABLE",
        }
        self.runs[run_id] = run
        self._steps[run_id] = 0
        return web.json_response(run)

    async def list_runs(self, request: web.Request) -> web.Response:
        if not self._auth_ok(request):
            return self._refuse(401, "missing or wrong bearer token")
        self.lists += 1
        allowed = {"experiment_id", "namespace", "page_token", "page_size", "sort_by", "filter"}
        unknown = set(request.query) - allowed
        if unknown:
            return self._refuse(400, f"unknown query parameters {sorted(unknown)}")
        runs = list(self.runs.values())
        if "filter" in request.query:
            try:
                flt = json.loads(request.query["filter"])
            except ValueError:
                return self._refuse(400, "filter is not JSON")
            errors = validate(flt, "V2beta1Filter")
            if errors:
                return self._refuse(400, "; ".join(errors))
            for pred in flt.get("predicates", []):
                if pred.get("operation") != "EQUALS" or "string_value" not in pred:
                    return self._refuse(400, f"fake supports EQUALS on strings only, got {pred}")
                runs = [r for r in runs if str(r.get(pred["key"])) == pred["string_value"]]
        if "experiment_id" in request.query:
            runs = [r for r in runs if r.get("experiment_id") == request.query["experiment_id"]]
        return web.json_response({"runs": runs, "total_size": len(runs)} if runs else {})

    async def get_run(self, request: web.Request) -> web.Response:
        run_id = request.match_info["run_id"]
        if run_id not in self.runs:
            return web.json_response({"code": 5, "message": "run not found"}, status=404)
        step = min(self._steps[run_id], len(self.script) - 1)
        self._steps[run_id] += 1
        self.runs[run_id]["state"] = self.script[step]
        return web.json_response(self.runs[run_id])

    async def start(self) -> FakeKfp:
        app = web.Application()
        app.router.add_post("/apis/v2beta1/runs", self.create_run)
        app.router.add_get("/apis/v2beta1/runs", self.list_runs)
        app.router.add_get("/apis/v2beta1/runs/{run_id}", self.get_run)
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
