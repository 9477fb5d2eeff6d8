"""The agent: OTLP settings from OTEL_EXPORTER_OTLP_*, its export request, /metrics, and
the agent-to-server path end to end (a Finding at GET /api/v1/findings)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from collector.normalize import NormaliseOptions, normalise_metrics
from gpu_health import names as n
from gpu_health.agent import GpuAgent, Sink, _start_http
from gpu_health.fake import FakeBackend, FakeClock, Scenario, builtin_scenario
from gpu_health.otlp import OtlpHttpExporter, OtlpHttpSettings, build_request, resource_attributes
from gpu_health.sampler import Sampler
from tests.harness import REPO, ServiceHandle


def test_settings_follow_the_otlp_exporter_variables() -> None:
    s = OtlpHttpSettings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://srv:4318/"})
    assert (
        s.endpoint == "http://srv:4318/v1/metrics" and s.protocol == "http/protobuf" and s.timeout_s == 10.0
    )
    s = OtlpHttpSettings.from_env(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://srv:4318",
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://other:9999/custom",
            "OTEL_EXPORTER_OTLP_HEADERS": "Authorization=Bearer%20abc,x-tenant=a",
            "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT": "2500",
            "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
        }
    )
    assert s.endpoint == "http://other:9999/custom"
    assert s.headers == {"Authorization": "Bearer abc", "x-tenant": "a"}
    assert (s.timeout_s, s.compression) == (2.5, "gzip")
    with pytest.raises(ValueError, match="OTLP/HTTP"):
        OtlpHttpSettings.from_env({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    assert OtlpHttpSettings.from_env({}, endpoint="http://x/v1/metrics").endpoint == "http://x/v1/metrics"


def test_request_has_one_resource_per_gpu_and_normalises_to_rows() -> None:
    clock = FakeClock()
    sampler = Sampler(FakeBackend(Scenario.load(builtin_scenario("healthy")), clock), clock=clock.wall)
    sampler.open()
    clock.advance(1)
    samples = sampler.sample()
    shared = resource_attributes(
        "node-7", {"NODE_NAME": "node-7", "OTEL_RESOURCE_ATTRIBUTES": "k8s.cluster.name=c1"}
    )
    req = build_request(samples, shared, clock.epoch)
    assert len(req.resource_metrics) == 2
    res = {kv.key: kv.value.string_value for kv in req.resource_metrics[0].resource.attributes}
    assert (
        res["hw.id"] == samples[0].uuid and res["host.name"] == "node-7" and res["k8s.node.name"] == "node-7"
    )
    assert res["k8s.cluster.name"] == "c1" and res["service.name"] == "mlvigil-agent"
    cols = normalise_metrics(req, NormaliseOptions()).batch.columns["metric_points"]
    rows = list(zip(cols["hw_id"], cols["host"], cols["name"], cols["kind"], cols["monotonic"], strict=True))
    assert {r[0] for r in rows} == {s.uuid for s in samples} and {r[1] for r in rows} == {"node-7"}
    energy = [r for r in rows if r[2] == n.ENERGY]
    assert energy and all(r[3] == "sum" and r[4] for r in energy)
    assert all(r[3] == "gauge" for r in rows if r[2] == n.UTILIZATION)


def _fake_agent(scenario: Path | str, registry: CollectorRegistry, sink: Sink | None = None) -> GpuAgent:
    clock = FakeClock()
    sampler = Sampler(FakeBackend(Scenario.load(scenario), clock), clock=clock.wall)
    sampler.open()
    return GpuAgent(sampler, interval=0.01, node="node-a", sink=sink, registry=registry, env={})


def test_metrics_endpoint_serves_the_latest_pass_with_dcgm_like_labels() -> None:
    async def scenario() -> str:
        registry = CollectorRegistry()
        agent = _fake_agent(builtin_scenario("healthy"), registry)
        await agent.step()
        runner = await _start_http(registry, agent, "127.0.0.1:0")
        try:
            port = runner.addresses[0][1]
            body = await asyncio.to_thread(
                lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
            )
        finally:
            await runner.cleanup()
        return body

    text = asyncio.run(scenario())
    families = {f.name: f for f in text_string_to_metric_families(text)}
    util = families["mlvigil_gpu_utilization_ratio"].samples
    assert {s.labels["gpu"] for s in util} == {"0", "1"} and all(s.labels["host"] == "node-a" for s in util)
    clocks = families["mlvigil_gpu_sm_clock_hertz"].samples
    assert max(s.value for s in clocks) == pytest.approx(2520e6)
    assert families["mlvigil_gpu_energy_joules"].type == "counter"
    assert families["mlvigil_gpu_agent_passes"].samples[0].value == 1.0


def test_export_failures_never_stop_sampling() -> None:
    async def scenario() -> tuple[int, float]:
        registry = CollectorRegistry()
        exporter = OtlpHttpExporter(OtlpHttpSettings("http://127.0.0.1:9/v1/metrics", timeout_s=2))
        agent = _fake_agent(builtin_scenario("healthy"), registry, exporter.export)
        stop = asyncio.Event()
        passes = await agent.run(stop, max_passes=3)
        await exporter.close()
        return passes, registry.get_sample_value(
            "mlvigil_gpu_agent_exports_total", {"outcome": "failed"}
        ) or 0

    passes, failed = asyncio.run(scenario())
    assert (passes, failed) == (3, 3.0)


def test_agent_ships_to_an_otlp_http_server_with_gzip_and_headers() -> None:
    async def scenario() -> tuple[dict[str, str], int]:
        got: list[tuple[dict[str, str], bytes]] = []

        async def receive(request: web.Request) -> web.Response:
            got.append((dict(request.headers), await request.read()))
            return web.Response(body=b"", content_type="application/x-protobuf")

        app = web.Application()
        app.router.add_post("/v1/metrics", receive)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        settings = OtlpHttpSettings.from_env(
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
                "OTEL_EXPORTER_OTLP_HEADERS": "Authorization=Bearer%20t0k",
                "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
            }
        )
        exporter = OtlpHttpExporter(settings)
        agent = _fake_agent(builtin_scenario("healthy"), CollectorRegistry(), exporter.export)
        await agent.run(asyncio.Event(), max_passes=2)
        await exporter.close()
        await runner.cleanup()
        return got[0][0], len(got)

    headers, count = asyncio.run(scenario())
    assert count == 2
    assert headers["Authorization"] == "Bearer t0k" and headers["Content-Encoding"] == "gzip"
    assert headers["Content-Type"] == "application/x-protobuf"


# -- end to end through the real service ---------------------------------------------------
FAST_FAULT = {
    "description": "XID 79 then GpuIsLost on GPU 1 within two seconds",
    "gpus": [{"count": 2}],
    "timeline": [{"at": "0.5s", "gpu": 1, "xid": 79}, {"at": "1s", "gpu": 1, "lost": True}],
}


def _gpu_faults(h: ServiceHandle) -> list[dict[str, Any]]:
    h.evaluate()
    return [f for f in h.findings(kind="gpu_fault") if f["state"] == "firing"]


def _two_faults(h: ServiceHandle) -> list[dict[str, Any]]:
    faults = _gpu_faults(h)
    return faults if len(faults) >= 2 else []


def test_agent_to_server_ends_in_a_finding(
    service_factory: Callable[..., ServiceHandle], tmp_path: Path
) -> None:
    scenario = tmp_path / "fault.yaml"
    scenario.write_text(yaml.safe_dump(FAST_FAULT))
    h = service_factory()
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": h.otlp_http, "NODE_NAME": "gpu-node-1", "PATH": "/usr/bin:/bin"}
    agent = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlvigil",
            "agent",
            "--backend",
            "fake",
            "--scenario",
            str(scenario),
            "--interval",
            "200ms",
            "--listen",
            "none",
            "--duration",
            "3s",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        faults = h.wait_for(lambda: _two_faults(h), timeout=30)
    finally:
        out, _ = agent.communicate(timeout=30)
    assert agent.returncode == 0, out
    keys = {f["key"] for f in faults}
    assert keys == {"xid:fault", "gpu_lost:lost"}
    for f in faults:
        assert f["subject"]["host"] == "gpu-node-1" and f["subject"]["gpu_index"] == "1"
    xid = next(f for f in faults if f["key"] == "xid:fault")
    assert xid["evidence"]["xids"] == [79]
    stats = h.stats()
    assert stats["metric_points"] > 0


def test_serve_runs_the_agent_in_process(
    service_factory: Callable[..., ServiceHandle], tmp_path: Path
) -> None:
    scenario = tmp_path / "fault.yaml"
    scenario.write_text(yaml.safe_dump(FAST_FAULT))
    h = service_factory(
        {"gpu": {"enabled": True, "backend": "fake", "scenario": str(scenario), "interval": "200ms"}}
    )
    faults = h.wait_for(lambda: _two_faults(h), timeout=30)
    assert {f["key"] for f in faults} == {"xid:fault", "gpu_lost:lost"}
    status, _, body = h.request("GET", "/metrics")
    assert status == 200 and b"mlvigil_gpu_utilization_ratio" in body


def test_serve_without_a_driver_keeps_running(service_factory: Callable[..., ServiceHandle]) -> None:
    h = service_factory({"gpu": {"enabled": True, "backend": "nvml"}})
    assert h.get("/healthz") is not None
    assert any("GPU agent not started" in line for line in h.output), "".join(h.output[-20:])
    json.dumps(h.stats())


def test_a_failed_pass_never_stops_the_agent() -> None:
    """A sampler error in one pass (a driver hiccup) is logged; the next passes still run."""

    async def scenario() -> tuple[int, int]:
        agent = _fake_agent(builtin_scenario("healthy"), CollectorRegistry())
        real = agent.pass_once
        calls = 0

        def flaky() -> Any:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("NVML: GPU is lost")
            return real()

        agent.pass_once = flaky  # type: ignore[method-assign]
        passes = await agent.run(asyncio.Event(), max_passes=3)
        return passes, calls

    assert asyncio.run(scenario()) == (3, 3)
