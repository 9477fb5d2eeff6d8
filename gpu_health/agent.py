"""``mlvigil agent``: the per-node GPU agent, and the same agent inside ``mlvigil serve``.

Each pass samples every GPU (in a worker thread: NVML calls block), keeps the result for
``/metrics`` and ships it as one OTLP export request. Passes run on a fixed schedule
(``start + k * interval``), skipping a beat rather than drifting when one runs late.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pynvml
from aiohttp import web
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from gpu_health.backend import GpuBackend, nvml_error_name
from gpu_health.config import GpuConfig
from gpu_health.exit_codes import EXIT_NOPERM, EXIT_UNAVAILABLE, EXIT_USAGE
from gpu_health.fake import FakeBackend, Scenario, ScenarioError, builtin_scenario
from gpu_health.otlp import (
    ExportError,
    OtlpHttpExporter,
    OtlpHttpSettings,
    build_request,
    resource_attributes,
)
from gpu_health.prom import GpuCollector
from gpu_health.record import Recorder
from gpu_health.sampler import GpuSample, NoGpuError, Sampler, node_name
from mlvigil.core.aio import stop_task, wait_event
from mlvigil.core.config import split_addr

if TYPE_CHECKING:
    from mlvigil.core.context import ServiceContext

log = logging.getLogger(__name__)

Sink = Callable[[ExportMetricsServiceRequest], Awaitable[Any]]


class AgentTelemetry:
    """The agent's own metrics, next to the GPU families on the same registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.passes = Counter("mlvigil_gpu_agent_passes", "Sampling passes over all GPUs.", registry=registry)
        self.pass_duration = Histogram(
            "mlvigil_gpu_agent_pass_duration_seconds",
            "Wall time of one sampling pass over all GPUs.",
            registry=registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
        )
        self.exports = Counter(
            "mlvigil_gpu_agent_exports", "OTLP export requests by outcome.", ["outcome"], registry=registry
        )
        self.field_errors = Counter(
            "mlvigil_gpu_agent_field_errors",
            "NVML errors on one field group (NotSupported excluded).",
            ["group", "error"],
            registry=registry,
        )
        self.gpus = Gauge("mlvigil_gpu_agent_gpus", "GPUs this agent samples.", registry=registry)


class GpuAgent:
    """Samples through ``sampler`` every ``interval`` seconds and hands each pass to ``sink``."""

    def __init__(
        self,
        sampler: Sampler,
        *,
        interval: float,
        node: str,
        sink: Sink | None = None,
        registry: CollectorRegistry | None = None,
        recorder: Recorder | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.sampler = sampler
        self.interval = interval
        self.node = node
        self.sink = sink
        self.recorder = recorder
        self.latest: list[GpuSample] = []
        self.shared = resource_attributes(node, dict(os.environ) if env is None else env)
        self.start_time = time.time()
        self.telemetry: AgentTelemetry | None = None
        self._export_ok: bool | None = None
        if registry is not None:
            self.telemetry = AgentTelemetry(registry)
            registry.register(GpuCollector(lambda: self.latest, node))

    def pass_once(self) -> tuple[list[GpuSample], ExportMetricsServiceRequest]:
        started = time.perf_counter()
        samples = self.sampler.sample()
        if self.recorder is not None and samples:
            self.recorder.end_pass(samples[0].ts)
        req = build_request(samples, self.shared, self.start_time)
        self.latest = samples
        if self.telemetry is not None:
            self.telemetry.passes.inc()
            self.telemetry.pass_duration.observe(time.perf_counter() - started)
            self.telemetry.gpus.set(len(samples))
            for s in samples:
                for group, err in s.errors.items():
                    self.telemetry.field_errors.labels(group, err).inc()
        return samples, req

    async def step(self) -> list[GpuSample]:
        samples, req = await asyncio.to_thread(self.pass_once)
        if self.sink is not None:
            await self._ship(req)
        return samples

    async def _ship(self, req: ExportMetricsServiceRequest) -> None:
        assert self.sink is not None
        try:
            await self.sink(req)
        except ExportError as exc:
            self._outcome(False, str(exc))
            return
        except Exception as exc:
            self._outcome(False, f"{type(exc).__name__}: {exc}")
            return
        self._outcome(True, "")

    def _outcome(self, ok: bool, message: str) -> None:
        if self.telemetry is not None:
            self.telemetry.exports.labels("ok" if ok else "failed").inc()
        # Log on a change of state only: a server that is down must not flood the log.
        if ok != self._export_ok:
            if ok:
                log.info("GPU agent: shipping metrics")
            else:
                log.warning("GPU agent: export failed (will retry with the next pass): %s", message)
        self._export_ok = ok

    async def run(self, stop: asyncio.Event, max_passes: int | None = None) -> int:
        """Pass after pass until ``stop`` is set (or ``max_passes`` ran); returns passes run."""
        start = time.monotonic()
        k = 0
        while not stop.is_set() and (max_passes is None or k < max_passes):
            try:
                await self.step()
            except Exception:
                # One failed pass (a sampler error) must not end the agent: the next one may work.
                log.exception("GPU agent: pass failed; trying again at the next interval")
            k += 1
            behind = time.monotonic() - start
            # Next slot on the grid; skip the ones a slow pass overran.
            k_next = max(k, int(behind / self.interval) + 1)
            delay = start + k_next * self.interval - time.monotonic()
            await wait_event(stop, delay)
        return k


def make_backend(kind: str, scenario: str | None) -> GpuBackend:
    """The backend a config or the CLI names; the fake plays its scenario in wall time."""
    if kind == "fake":
        if not scenario:
            raise ScenarioError("the fake backend needs a scenario (a file, or a built-in name such as demo)")
        path = Path(scenario)
        if not path.exists() and builtin_scenario(scenario).exists():
            path = builtin_scenario(scenario)
        t0 = time.monotonic()
        return FakeBackend(Scenario.load(path), clock=lambda: time.monotonic() - t0)
    from gpu_health.nvml import NvmlBackend

    return NvmlBackend()


def explain_open_error(exc: BaseException) -> tuple[int, str]:
    """A one-line reason and exit code for an NVML start-up failure (never a traceback)."""
    if isinstance(exc, NoGpuError):
        return EXIT_UNAVAILABLE, "no NVIDIA GPU on this node: nothing to sample"
    if isinstance(exc, pynvml.NVMLError_LibraryNotFound):
        return EXIT_UNAVAILABLE, (
            "NVIDIA driver library libnvidia-ml.so.1 not found: this node has no NVIDIA driver"
            " (or the container lacks the NVIDIA runtime); nothing to sample"
        )
    if isinstance(exc, pynvml.NVMLError_DriverNotLoaded):
        return EXIT_UNAVAILABLE, "the NVIDIA kernel driver is not loaded on this node: nothing to sample"
    if isinstance(exc, pynvml.NVMLError_NoPermission):
        return EXIT_NOPERM, "not permitted to query NVML (run the agent with access to /dev/nvidia*)"
    if isinstance(exc, pynvml.NVMLError_LibRmVersionMismatch):
        return (
            EXIT_UNAVAILABLE,
            "NVML and the loaded kernel driver differ in version: reboot or reload the driver",
        )
    if isinstance(exc, pynvml.NVMLError):
        return 1, f"NVML failed to start: {exc} ({nvml_error_name(exc)})"
    return 1, f"{type(exc).__name__}: {exc}"


# -- CLI (the parser lives in gpu_health.cli, which `mlvigil agent --help` imports alone) --------


def run_cli(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=os.environ.get("MLVIGIL_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        backend = make_backend(args.backend, args.scenario)
    except ScenarioError as exc:
        print(f"mlvigil agent: {exc}", file=sys.stderr)
        return EXIT_USAGE
    recorder = Recorder() if args.record else None
    sampler = Sampler(backend, observer=recorder)
    try:
        sampler.open()
    except (pynvml.NVMLError, NoGpuError) as exc:
        code, message = explain_open_error(exc)
        print(f"mlvigil agent: {message}", file=sys.stderr)
        sampler.close()
        return code
    if recorder is not None:
        recorder.system = sampler.system
    try:
        if args.once:
            samples = sampler.sample()
            if recorder is not None:
                recorder.end_pass(samples[0].ts)
                recorder.write(args.record)
            print(json.dumps([s.to_json() for s in samples], indent=1))
            return 0
        settings = None
        if not args.no_export:
            try:
                settings = OtlpHttpSettings.from_env(endpoint=args.endpoint)
            except (ValueError, OSError) as exc:
                print(f"mlvigil agent: {exc}", file=sys.stderr)
                return EXIT_USAGE
        return asyncio.run(_serve(args, sampler, settings, recorder))
    finally:
        sampler.close()


async def _serve(
    args: argparse.Namespace, sampler: Sampler, settings: OtlpHttpSettings | None, recorder: Recorder | None
) -> int:
    registry = CollectorRegistry(auto_describe=True)
    exporter = OtlpHttpExporter(settings) if settings else None
    node = args.node_name or node_name()
    agent = GpuAgent(
        sampler,
        interval=args.interval,
        node=node,
        sink=exporter.export if exporter else None,
        registry=registry,
        recorder=recorder,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner: web.AppRunner | None = None
    if args.listen and args.listen.lower() != "none":
        runner = await _start_http(registry, agent, args.listen)
    if args.duration is not None:
        loop.call_later(args.duration, stop.set)
    log.info(
        "GPU agent on %s: %d GPU(s), every %gs, shipping to %s",
        node,
        len(sampler.gpus),
        args.interval,
        settings.endpoint if settings else "nowhere (--no-export)",
    )
    try:
        await agent.run(stop)
    finally:
        if recorder is not None and args.record:
            recorder.write(args.record)
            log.info("recorded %d passes to %s", recorder.passes, args.record)
        if exporter is not None:
            await exporter.close()
        if runner is not None:
            await runner.cleanup()
    return 0


async def _start_http(registry: CollectorRegistry, agent: GpuAgent, listen: str) -> web.AppRunner:
    async def metrics(_: web.Request) -> web.Response:
        body = await asyncio.to_thread(generate_latest, registry)
        return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def healthz(_: web.Request) -> web.Response:
        lost = [s.uuid for s in agent.latest if s.lost]
        return web.json_response({"status": "ok", "gpus": len(agent.latest), "lost": lost})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, port = split_addr(listen)
    await web.TCPSite(runner, host, port).start()
    return runner


# -- in-process (mlvigil serve) ----------------------------------------------------------------
class GpuAgentComponent:
    """The agent inside ``mlvigil serve``: same sampling, points handed to the server's ingest.

    With ``ctx.services["ingest"]`` offering ``submit_metrics(request)`` the points go
    straight in; otherwise they are posted to the server's own OTLP/HTTP receiver. No driver
    or no GPU logs one line and leaves the rest of the service running.
    """

    name = "gpu-agent"

    def __init__(self, cfg: GpuConfig, ctx: ServiceContext) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.agent: GpuAgent | None = None
        self._sampler: Sampler | None = None
        self._exporter: OtlpHttpExporter | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[int] | None = None

    async def start(self) -> None:
        try:
            backend = make_backend(self.cfg.backend, self.cfg.scenario)
        except ScenarioError as exc:
            log.error("GPU agent not started: %s", exc)
            return
        sampler = Sampler(backend)
        try:
            await asyncio.to_thread(sampler.open)
        except (pynvml.NVMLError, NoGpuError) as exc:
            log.warning("GPU agent not started: %s", explain_open_error(exc)[1])
            sampler.close()
            return
        self._sampler = sampler
        self.agent = GpuAgent(
            sampler,
            interval=self.cfg.interval,
            node=node_name(),
            sink=self._sink(),
            registry=self.ctx.telemetry.registry if self.cfg.prometheus else None,
        )
        self._stop.clear()
        self._task = asyncio.create_task(self.agent.run(self._stop), name="gpu-agent")

    def _sink(self) -> Sink:
        ingest = self.ctx.services.get("ingest")
        submit = getattr(ingest, "submit_metrics", None)
        if submit is not None:
            return submit
        server = self.ctx.config.server
        host, port = split_addr(server.otlp_http_addr)
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        headers = {}
        token = server.auth_token.resolve() if server.auth_token else None
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._exporter = OtlpHttpExporter(
            OtlpHttpSettings(f"http://{host}:{port}/v1/metrics", headers=headers)
        )
        return self._exporter.export

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            # The loop ends at its next wake; a pass stuck past the grace period is cancelled.
            await asyncio.wait({self._task}, timeout=10.0)
            await stop_task(self._task)
            self._task = None
        if self._exporter is not None:
            await self._exporter.close()
        if self._sampler is not None:
            self._sampler.close()
