"""Kubernetes manifests and the container build file, validated as far as this machine allows:
each object deserializes into the Kubernetes client's OpenAPI models (unknown or mistyped
fields fail), the ConfigMap's config passes mlvigil's validation, ports agree with it, the
agent DaemonSet targets NVIDIA nodes, and the image runs real CLI commands. Docker and a
cluster are not available here, so the image is not built and nothing is applied."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client import ApiClient

from mlvigil.app.cli import build_parser
from mlvigil.app.plugins import build_config
from mlvigil.core.config import split_addr

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
MODELS = {
    ("v1", "Namespace"): "V1Namespace",
    ("v1", "ConfigMap"): "V1ConfigMap",
    ("v1", "Service"): "V1Service",
    ("v1", "PersistentVolumeClaim"): "V1PersistentVolumeClaim",
    ("apps/v1", "Deployment"): "V1Deployment",
    ("apps/v1", "DaemonSet"): "V1DaemonSet",
}


def _to_camel_keys(model: Any) -> Any:
    return ApiClient().sanitize_for_serialization(model)


def _objects() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    objs = []
    for res in kustomization["resources"]:
        objs += [d for d in yaml.safe_load_all((DEPLOY / res).read_text()) if d]
    return objs


def _by_kind(kind: str, name: str) -> dict[str, Any]:
    return next(o for o in _objects() if o["kind"] == kind and o["metadata"]["name"] == name)


def _prune_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _prune_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_prune_nulls(v) for v in value]
    return value


@pytest.mark.parametrize("obj", _objects(), ids=lambda o: f"{o['kind']}/{o['metadata']['name']}")
def test_objects_match_the_kubernetes_openapi_models(obj: dict[str, Any]) -> None:
    model = MODELS[(obj["apiVersion"], obj["kind"])]
    typed = ApiClient().deserialize(json.dumps(obj), model, "application/json")
    # A field the model does not know is dropped by deserialize: a round trip must give the
    # document back unchanged, so typos (containerport, mountpath) fail here.
    assert _prune_nulls(_to_camel_keys(typed)) == _prune_nulls(obj)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    manifests = {p.name for p in DEPLOY.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == manifests
    assert kustomization["namespace"] == "mlvigil"
    assert {i["name"] for i in kustomization["images"]} == {"mlvigil"}


def _config() -> Any:
    raw = yaml.safe_load(_by_kind("ConfigMap", "mlvigil-config")["data"]["config.yaml"])
    return build_config(raw, env={})


def test_configmap_config_is_valid_and_ports_agree() -> None:
    config = _config()
    ports = {
        split_addr(config.server.otlp_grpc_addr)[1]: "otlp-grpc",
        split_addr(config.server.otlp_http_addr)[1]: "otlp-http",
        split_addr(config.server.api_addr)[1]: "api",
    }
    deployment = _by_kind("Deployment", "mlvigil")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert {p["containerPort"]: p["name"] for p in container["ports"]} == ports
    service = _by_kind("Service", "mlvigil")
    assert {p["port"]: p["targetPort"] for p in service["spec"]["ports"]} == ports
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    # The config's data_dir is the mounted volume, and the probes hit the API port.
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["data"] == str(config.storage.data_dir)
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "api"}
    assert deployment["spec"]["strategy"]["type"] == "Recreate" and deployment["spec"]["replicas"] == 1
    config_vol = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "config")
    assert config_vol["configMap"]["name"] == "mlvigil-config"
    assert mounts["config"] + "/config.yaml" == container["args"][container["args"].index("--config") + 1]


def test_agent_daemonset_runs_on_nvidia_nodes_with_what_nvml_needs() -> None:
    ds = _by_kind("DaemonSet", "mlvigil-agent")
    pod = ds["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert any(t["key"] == "nvidia.com/gpu" and t["operator"] == "Exists" for t in pod["tolerations"])
    assert pod["runtimeClassName"] == "nvidia" and pod["hostPID"] is True
    container = pod["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["NVIDIA_VISIBLE_DEVICES"]["value"] == "all"
    assert "utility" in env["NVIDIA_DRIVER_CAPABILITIES"]["value"]  # NVML is the utility capability
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    # It must not claim GPUs from workloads.
    assert "nvidia.com/gpu" not in json.dumps(container.get("resources", {}))
    # Ships to the server's OTLP/HTTP port and serves /metrics where the Service scrapes.
    otlp_http = split_addr(_config().server.otlp_http_addr)[1]
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == f"http://mlvigil.mlvigil.svc:{otlp_http}"
    listen_port = split_addr(env["MLVIGIL_GPU_LISTEN"]["value"])[1]
    assert container["ports"][0]["containerPort"] == listen_port
    svc = _by_kind("Service", "mlvigil-agent")
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["ports"][0]["targetPort"] == "metrics"


def _dockerfile() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        word, _, rest = line.partition(" ")
        if word in ("ENTRYPOINT", "CMD"):
            out[word] = json.loads(rest)
    return out


def _parses(argv: list[str]) -> Any:
    return build_parser().parse_args(argv)


def test_image_commands_are_real_cli_commands() -> None:
    docker = _dockerfile()
    assert docker["ENTRYPOINT"] == ["mlvigil"]
    assert _parses(docker["CMD"]).command == "serve"
    server = _by_kind("Deployment", "mlvigil")["spec"]["template"]["spec"]["containers"][0]
    agent = _by_kind("DaemonSet", "mlvigil-agent")["spec"]["template"]["spec"]["containers"][0]
    assert server["image"] == agent["image"] == "mlvigil"
    assert _parses(server["args"]).command == "serve"
    assert _parses(agent["args"]).command == "agent"
    with pytest.raises(SystemExit):
        _parses(shlex.split("serve --no-such-flag"))
