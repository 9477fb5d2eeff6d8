"""The scaled deployment (deploy-scale-out/, a kustomize overlay of deploy/), rendered by
kubectl's built-in kustomize and checked against the Kubernetes OpenAPI models: three
replicas on PostgreSQL, a rolling update that keeps every ready replica, no embedded volume."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client import ApiClient

from mlvigil.app.plugins import build_config
from mlvigil.core.config import Secret

OVERLAY = Path(__file__).resolve().parents[1] / "deploy-scale-out"
MODELS = {
    ("v1", "Namespace"): "V1Namespace",
    ("v1", "ConfigMap"): "V1ConfigMap",
    ("v1", "Service"): "V1Service",
    ("apps/v1", "Deployment"): "V1Deployment",
    ("apps/v1", "DaemonSet"): "V1DaemonSet",
    ("apps/v1", "StatefulSet"): "V1StatefulSet",
    ("policy/v1", "PodDisruptionBudget"): "V1PodDisruptionBudget",
}

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (kustomize) not installed")


def _rendered() -> list[dict[str, Any]]:
    out = subprocess.run(
        ["kubectl", "kustomize", str(OVERLAY)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def _prune_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _prune_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_prune_nulls(v) for v in value]
    return value


def test_rendered_objects_match_the_openapi_models() -> None:
    for obj in _rendered():
        typed = ApiClient().deserialize(
            json.dumps(obj), MODELS[(obj["apiVersion"], obj["kind"])], "application/json"
        )
        assert _prune_nulls(ApiClient().sanitize_for_serialization(typed)) == _prune_nulls(obj), obj["kind"]


def test_replicas_share_postgres_and_roll_without_losing_capacity() -> None:
    objs = _rendered()
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objs}
    assert ("PersistentVolumeClaim", "mlvigil-data") not in kinds
    assert ("StatefulSet", "mlvigil-postgres") in kinds and ("PodDisruptionBudget", "mlvigil") in kinds
    dep = next(o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == "mlvigil")
    assert dep["spec"]["replicas"] == 3
    assert dep["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    pod = dep["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    env = {e["name"]: e for e in server["env"]}
    assert env["MLVIGIL_STORE_DSN"]["valueFrom"]["secretKeyRef"] == {"name": "mlvigil-postgres", "key": "dsn"}
    assert all("persistentVolumeClaim" not in v for v in pod["volumes"])
    # The ConfigMap's config with the Secret's DSN selects the PostgreSQL store.
    cm = next(o for o in objs if o["kind"] == "ConfigMap")
    config = build_config(
        yaml.safe_load(cm["data"]["config.yaml"]), env={"MLVIGIL_STORE_DSN": "postgresql://x@db/mlvigil"}
    )
    assert config.storage.backend == "postgres"
    assert isinstance(config.storage.dsn, Secret) and config.storage.dsn.env == "MLVIGIL_STORE_DSN"
