"""``mlvigil demo``: the whole story on one machine, in under three minutes.

It starts the real service (embedded store, in-process GPU agent on a scripted 8-GPU node)
and runs simulated workloads against it over OTLP and CloudEvents, as real producers would:

- a model server whose inputs drift (data drift -> alert -> retraining trigger, dry run);
- an LLM app traced by traceloop-sdk against a built-in fake OpenAI server, whose traffic
  changes shape (LLM traffic drift);
- a 4-rank training run in which rank 2's GPU starts throttling (straggler attributed to
  that GPU; the GPU's own slowdown finding);
- the same node's GPU 6 logging XID 79 and falling off the bus (GPU fault);
- the training job heading past its carbon budget (forecast overrun, from NVML energy).

Findings are printed as they fire, alerts as the local webhook sink receives them, and the
retraining trigger as it is recorded. Exit code 0 when every story beat produced its finding.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import random
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported in run_demo, so `mlvigil demo --help` stays fast
    from mlvigil.app.demo.fake_llm import FakeLLM
    from mlvigil.app.demo.supervise import ServiceProcess
    from mlvigil.app.demo.webhook_sink import WebhookSink

NODE = "demo-gpu-node"
RUN_ID = "demo-train"
WEBHOOK_SECRET = "whsec_ZGVtby13ZWJob29rLXNlY3JldA=="
DEFAULT_PORTS = {"api": 9710, "otlp_http": 4318, "otlp_grpc": 4317}
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def gpu_uuid(index: int) -> str:
    return f"GPU-6d6c7669-6700-4000-8000-{index:012d}"


@dataclass(frozen=True)
class Timing:
    """Seconds and steps for the full story and the short one CI runs."""

    steps: int
    step_period: float
    slow_from_step: int
    throttle_at: float
    xid_at: float
    traffic_shift_at: float
    deadline: float


FULL = Timing(
    steps=420,
    step_period=0.25,
    slow_from_step=160,
    throttle_at=38.0,
    xid_at=45.0,
    traffic_shift_at=40.0,
    deadline=170.0,
)
SHORT = Timing(
    steps=260,
    step_period=0.12,
    slow_from_step=110,
    throttle_at=12.0,
    xid_at=15.0,
    traffic_shift_at=14.0,
    deadline=110.0,
)


@dataclass
class Beat:
    name: str
    story: str
    kinds: tuple[str, ...]
    accept: Callable[[dict[str, Any]], bool] = lambda f: True
    seen_at: float | None = None
    detail: str = ""


def beats() -> list[Beat]:
    return [
        Beat("data drift", "the model server's inputs drift", ("data_drift",)),
        Beat("llm drift", "the LLM app's traffic changes shape", ("llm_drift",)),
        Beat(
            "straggler",
            "rank 2 slows down and is blamed on its throttling GPU",
            ("straggler",),
            lambda f: f["subject"].get("rank") == "2",
        ),
        Beat(
            "gpu slowdown",
            "GPU 2 is held under its clocks",
            ("gpu_degraded",),
            lambda f: f["subject"].get("gpu_uuid") == gpu_uuid(2),
        ),
        Beat(
            "xid",
            "GPU 6 logs XID 79 and falls off the bus",
            ("gpu_fault",),
            lambda f: f["subject"].get("gpu_uuid") == gpu_uuid(6),
        ),
        Beat(
            "carbon",
            "the training job heads past its carbon budget",
            ("carbon_forecast_overrun", "carbon_overrun"),
        ),
    ]


def gpu_scenario(t: Timing) -> dict[str, Any]:
    gpus = [
        {
            "uuid": gpu_uuid(i),
            "count": 1,
            "state": {"processes": [{"pid": 4000 + i, "used_memory": 60 << 30}]},
        }
        for i in range(8)
    ]
    return {
        "description": "mlvigil demo: an 8-GPU node; GPU 2 throttles, GPU 6 logs XID 79 and is lost",
        "gpus": gpus,
        "timeline": [
            {
                "at": f"{t.throttle_at}s",
                "gpu": 2,
                "set": {"clock_events": ["hw_slowdown"]},
                "ramp": {"clocks.sm": {"to": 1500, "over": "4s"}},
            },
            {"at": f"{t.xid_at}s", "gpu": 6, "xid": 79},
            {"at": f"{t.xid_at + 1}s", "gpu": 6, "lost": True},
        ],
    }


def service_config(t: Timing, sink: WebhookSink, scenario_path: Path, short: bool) -> dict[str, Any]:
    window = "40s" if short else "90s"
    return {
        "detectors": {
            "interval": "2s",
            "carbon": {
                "country_iso_code": "USA",
                "budgets": [
                    {
                        "name": "demo-train-budget",
                        "run_id": RUN_ID,
                        "kg_co2e": 0.012,
                        "planned_steps": t.steps * 4,
                        "source": "nvml",
                    }
                ],
            },
            "drift": drift_config(short),
        },
        "gpu": {
            "enabled": True,
            "backend": "fake",
            "scenario": str(scenario_path),
            "interval": "1s",
            "rules": {
                "slowdown": {"window": window, "min_samples": 5},
                "clocks": {"window": window, "min_samples": 5},
            },
        },
        "alerts": {
            "receivers": [
                {
                    "name": "sink",
                    "webhook": {"url": sink.url + "/alerts", "secret": {"env": "DEMO_HOOK_SECRET"}},
                }
            ],
            "routes": [
                {
                    "receiver": "sink",
                    "group_by": ["alertname"],
                    "group_wait": "1s",
                    "group_interval": "2s",
                    "repeat_interval": "1h",
                }
            ],
            "tick": "250ms",
        },
        "retrain": {
            "targets": [{"name": "retrain-pipeline", "webhook": {"url": sink.url + "/retrain"}}],
            "policies": [
                {
                    "name": "retrain-on-drift",
                    "target": "retrain-pipeline",
                    "kinds": ["data_drift"],
                    "severities": ["warning", "critical"],
                    "dry_run": True,
                    "cooldown": "1h",
                }
            ],
            "poll_interval": "2s",
        },
    }


def drift_config(short: bool) -> dict[str, Any]:
    """Monitors for the model server and the LLM app (see docs/drift.md); both compare live
    traffic with a reference dataset the demo posts through the API at start."""
    llm_window = {"size": 60 if short else 120, "min_size": 40}
    return {
        "monitors": [
            {
                "name": "fraud-features",
                "kind": "data",
                "service": "fraud-model",
                "model": "fraud",
                "features": ["amount", "country", "age"],
                "reference": {"dataset": True},
                # Every request goes through a sequential detector calibrated to one false
                # alarm per ~20k requests with no drift (docs/drift.md, streaming monitors).
                "streaming": {
                    "window_size": 100,
                    "stride": 20,
                    "ert": 20_000,
                    "n_bootstraps": 10_000,
                    "lag": "2s",
                    "hold": 200,
                },
                "severity": "warning",
            },
            {
                "name": "support-bot-traffic",
                "kind": "llm",
                "service": "support-bot",
                "signals": ["input_tokens", "output_tokens", "finish_reason"],
                "reference": {"dataset": True},
                "window": llm_window,
                "alpha": 0.001,
                "severity": "warning",
            },
        ]
    }


def fraud_features(rng: random.Random, shifted: bool) -> dict[str, Any]:
    """One request's features; after the shift amounts grow and the country mix moves."""
    weights = [1, 1, 2, 6] if shifted else [4, 3, 2, 1]
    return {
        "amount": rng.lognormvariate(3.0 + (0.8 if shifted else 0.0), 0.6),
        "country": rng.choices(["DE", "FR", "US", "BR"], weights=weights)[0],
        "age": rng.gauss(40, 12),
    }


def post_references(svc: ServiceProcess) -> None:
    """The fraud model's training features, and last week's LLM traffic, as references."""
    rng = random.Random(3)
    svc.post(
        "/api/v1/monitors/fraud-features/reference",
        {"rows": [fraud_features(rng, shifted=False) for _ in range(1000)]},
    )
    llm_rows = []
    for _ in range(400):
        n = rng.randint(5, 15)
        llm_rows.append({"input_tokens": n, "output_tokens": n + 3, "finish_reason": "stop"})
    svc.post("/api/v1/monitors/support-bot-traffic/reference", {"rows": llm_rows})


# -- workloads ---------------------------------------------------------------------------------


def _provider(endpoint: str, service: str, **resource: str) -> Any:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service, **resource}))
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces"), schedule_delay_millis=500)
    )
    return provider


def training_run(endpoint: str, t: Timing, stop: threading.Event) -> None:
    """4 ranks, one step every ``step_period`` s; rank 2 is 15% slower from ``slow_from_step``."""
    rng = random.Random(7)
    providers = [
        _provider(endpoint, "demo-trainer", **{"host.name": NODE, "k8s.pod.name": f"{RUN_ID}-{rank}"})
        for rank in range(4)
    ]
    tracers = [p.get_tracer("mlvigil.demo.training") for p in providers]
    start = time.monotonic()
    try:
        for step in range(t.steps):
            if stop.is_set():
                break
            now = time.time_ns()
            for rank, tracer in enumerate(tracers):
                step_time = 1.0 * (1 + rng.gauss(0, 0.02))
                if rank == 2 and step >= t.slow_from_step:
                    step_time *= 1.15
                span = tracer.start_span(
                    "train_step",
                    start_time=now,
                    attributes={
                        "mlvigil.train.run_id": RUN_ID,
                        "mlvigil.train.step": step,
                        "mlvigil.train.rank": rank,
                        "mlvigil.train.world_size": 4,
                        "mlvigil.train.gpu_uuid": gpu_uuid(rank),
                        "mlvigil.train.step_time_seconds": step_time,
                        "mlvigil.train.loss": 3.0 * (0.995**step) + rng.gauss(0, 0.01),
                        "mlvigil.train.samples": 256,
                        "mlvigil.train.tokens": 256 * 2048,
                        "mlvigil.train.data_wait_seconds": 0.02,
                        "mlvigil.train.comm_seconds": 0.1,
                    },
                )
                span.end(end_time=now + int(t.step_period * 1e9))
            # The producer's own pace: one step per period of wall time.
            delay = start + (step + 1) * t.step_period - time.monotonic()
            if delay > 0:
                stop.wait(delay)
    finally:
        for p in providers:
            p.shutdown()


def model_server(endpoint: str, t: Timing, stop: threading.Event) -> None:
    """Inference spans of a fraud model; from ``traffic_shift_at`` its inputs drift."""
    rng = random.Random(11)
    provider = _provider(endpoint, "fraud-model", **{"service.version": "v3"})
    tracer = provider.get_tracer("mlvigil.demo.model")
    start = time.monotonic()
    i = 0
    try:
        while not stop.is_set() and time.monotonic() - start < t.deadline:
            shifted = time.monotonic() - start >= t.traffic_shift_at
            for _ in range(20):
                i += 1
                feats = fraud_features(rng, shifted)
                score = min(0.999, max(0.001, 0.02 * feats["amount"] / 20 + rng.random() * 0.1))
                with tracer.start_as_current_span("predict") as span:
                    span.set_attributes(
                        {
                            "mlvigil.model.name": "fraud",
                            "mlvigil.model.version": "v3",
                            "mlvigil.inference.request_id": f"req-{i}",
                            "mlvigil.feature.amount": feats["amount"],
                            "mlvigil.feature.country": feats["country"],
                            "mlvigil.feature.age": feats["age"],
                            "mlvigil.inference.prediction": "fraud" if score > 0.5 else "legit",
                            "mlvigil.inference.score": score,
                        }
                    )
            stop.wait(0.5)
    finally:
        provider.shutdown()


def init_llm_tracing(endpoint: str) -> None:
    """traceloop-sdk for the LLM app, set up before the workloads start.

    ``Traceloop.init`` prints colour codes (a bare ``Fore.RESET`` line even when all is well):
    its output is captured and shown, uncoloured, only when it says something.
    """
    from traceloop.sdk import Traceloop
    from traceloop.sdk.instruments import Instruments

    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        Traceloop.init(
            app_name="support-bot",
            api_endpoint=endpoint,
            disable_batch=False,
            telemetry_enabled=False,
            instruments={Instruments.OPENAI},
        )
    said = ANSI_ESCAPE.sub("", captured.getvalue()).strip()
    if said:
        print(f"  traceloop-sdk: {said}", flush=True)


def llm_app(endpoint: str, llm: FakeLLM, t: Timing, stop: threading.Event) -> None:
    """A support bot traced by traceloop-sdk (``init_llm_tracing`` first); from
    ``traffic_shift_at`` its prompts grow long."""
    from openai import OpenAI
    from opentelemetry import metrics, trace

    client = OpenAI(base_url=llm.base_url, api_key="sk-demo", max_retries=0)
    rng = random.Random(5)
    words = ["how", "do", "I", "reset", "my", "password", "order", "refund", "invoice", "shipping", "account"]
    start = time.monotonic()
    while not stop.is_set() and time.monotonic() - start < t.deadline:
        shifted = time.monotonic() - start >= t.traffic_shift_at
        n = rng.randint(60, 120) if shifted else rng.randint(5, 15)
        prompt = " ".join(rng.choice(words) for _ in range(n))
        with contextlib.suppress(Exception):
            client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": prompt}],
                max_tokens=64 if shifted else 256,
                temperature=0.2,
            )
        stop.wait(0.1)
    # Flush and stop the app's exporters while the service is still there to take them.
    for provider in (trace.get_tracer_provider(), metrics.get_meter_provider()):
        shutdown = getattr(provider, "shutdown", None)
        if shutdown is not None:
            shutdown()


# -- the story ---------------------------------------------------------------------------------


@dataclass
class Story:
    svc: ServiceProcess
    sink: WebhookSink
    t0: float = field(default_factory=time.monotonic)
    seen: set[tuple[str, str]] = field(default_factory=set)
    alerts_seen: int = 0
    triggers_seen: set[str] = field(default_factory=set)

    def say(self, tag: str, text: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.1f}s] {tag:<9} {text}", flush=True)

    def poll(self, story_beats: list[Beat]) -> None:
        for f in reversed(self.svc.findings(limit=200)):
            key = (f["id"], f["state"])
            if key in self.seen:
                continue
            self.seen.add(key)
            where = ", ".join(f"{k}={v}" for k, v in sorted(f["subject"].items()))
            self.say(
                "FIRED" if f["state"] == "firing" else "RESOLVED", f"{f['severity']:<8} {f['kind']} [{where}]"
            )
            if f["state"] == "firing":
                print(f"{'':20}{f['summary']}", flush=True)
            for beat in story_beats:
                if beat.seen_at is None and f["kind"] in beat.kinds and beat.accept(f):
                    beat.seen_at = time.monotonic() - self.t0
                    beat.detail = f["summary"]
        for d in self.sink.deliveries[self.alerts_seen :]:
            self.alerts_seen += 1
            if d.path == "/alerts" and isinstance(d.body, dict):
                names = sorted({a["labels"].get("alertname", "?") for a in d.body.get("alerts", [])})
                signed = "signature verified" if d.signature_ok else "SIGNATURE INVALID"
                self.say("ALERT", f"webhook sink got {d.body.get('status')} {', '.join(names)} ({signed})")
        for trig in self.svc.get("/api/v1/retrain/triggers").get("triggers", []):
            if trig["id"] not in self.triggers_seen:
                self.triggers_seen.add(trig["id"])
                self.say(
                    "RETRAIN",
                    f"policy {trig.get('policy')} -> {trig.get('status')} ({trig.get('reason', '')})",
                )


def busy_ports(ports: dict[str, int]) -> list[str]:
    """Which of these loopback ports something else is listening on."""
    busy = []
    for name, port in ports.items():
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                busy.append(f"{port} ({name})")
    return busy


def run_demo(args: argparse.Namespace) -> int:
    import yaml

    from mlvigil.app.demo.fake_llm import FakeLLM
    from mlvigil.app.demo.supervise import ServiceProcess
    from mlvigil.app.demo.webhook_sink import WebhookSink

    timing = SHORT if args.short else FULL
    data_root = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="mlvigil-demo-"))
    data_root.mkdir(parents=True, exist_ok=True)
    scenario_path = data_root / "gpu-scenario.yaml"
    scenario_path.write_text(yaml.safe_dump(gpu_scenario(timing)))
    print("mlvigil demo: starting the service (embedded store, fake 8-GPU node) ...", flush=True)
    ports: dict[str, int] | None = None
    if not args.random_ports:
        busy = busy_ports(DEFAULT_PORTS)
        if busy:
            print(f"  ports {', '.join(busy)} are in use: the service takes free ones", flush=True)
        else:
            ports = DEFAULT_PORTS
    sink = WebhookSink(secret=WEBHOOK_SECRET).start()
    llm = FakeLLM(latency_s=0.05).start()
    svc = ServiceProcess(
        data_root / "data",
        service_config(timing, sink, scenario_path, args.short),
        env={"DEMO_HOOK_SECRET": WEBHOOK_SECRET, "NODE_NAME": NODE, "MLVIGIL_LOG_LEVEL": "warning"},
        ports=ports,
    )
    keep = False
    try:
        try:
            svc.start()
        except RuntimeError:
            print(f"mlvigil demo: the service did not start: {svc.failure}", file=sys.stderr, flush=True)
            return 1
        ok = _tell_story(svc, sink, llm, timing)
        keep = args.keep_running
        _where_next(svc, data_root, keep=keep, kept_data=bool(args.data_dir))
        if keep:
            with contextlib.suppress(KeyboardInterrupt):
                while svc.proc and svc.proc.poll() is None:
                    time.sleep(1.0)  # idle until interrupted
        return 0 if ok else 1
    finally:
        svc.stop()
        sink.stop()
        llm.stop()
        if not args.data_dir and not keep:
            shutil.rmtree(data_root, ignore_errors=True)


def _tell_story(svc: ServiceProcess, sink: WebhookSink, llm: FakeLLM, timing: Timing) -> bool:
    """Runs the workloads and prints findings, alerts and triggers as they come; True when
    every beat of the story happened."""
    post_references(svc)
    init_llm_tracing(svc.otlp_http)
    story = Story(svc, sink)
    story_beats = beats()
    story.say("START", f"service up: API {svc.api}, OTLP {svc.otlp_http} / {svc.otlp_grpc}")
    story.say(
        "START", "workloads: model server, LLM app (traceloop-sdk), 4-rank training, GPU node, carbon budget"
    )
    stop = threading.Event()
    workloads = [
        threading.Thread(
            target=training_run, args=(svc.otlp_http, timing, stop), name="training", daemon=True
        ),
        threading.Thread(target=model_server, args=(svc.otlp_http, timing, stop), name="model", daemon=True),
        threading.Thread(target=llm_app, args=(svc.otlp_http, llm, timing, stop), name="llm", daemon=True),
    ]
    for w in workloads:
        w.start()
    deadline = time.monotonic() + timing.deadline
    try:
        while time.monotonic() < deadline:
            story.poll(story_beats)
            if all(b.seen_at is not None for b in story_beats) and story.alerts_seen and story.triggers_seen:
                break
            stop.wait(1.0)
        story.poll(story_beats)
    finally:
        stop.set()
        for w in workloads:
            w.join(10)
    return _report(story, story_beats, svc)


def _report(story: Story, story_beats: list[Beat], svc: ServiceProcess) -> bool:
    print("\nThe story:", flush=True)
    ok = True
    for b in story_beats:
        mark = "ok " if b.seen_at is not None else "MISSING"
        when = f"at {b.seen_at:5.1f}s" if b.seen_at is not None else ""
        print(f"  [{mark}] {b.name:<13} {b.story} {when}")
        ok &= b.seen_at is not None
    alerts = sum(1 for d in story.sink.deliveries if d.path == "/alerts")
    print(
        f"  [{'ok ' if alerts else 'MISSING'}] {'alerts':<13} {alerts} signed webhook deliveries"
        " to the local sink"
    )
    print(
        f"  [{'ok ' if story.triggers_seen else 'MISSING'}] {'retraining':<13} "
        f"{len(story.triggers_seen)} trigger(s) recorded (dry run: nothing was started)"
    )
    ok &= bool(alerts) and bool(story.triggers_seen)
    stats = svc.stats()
    print("\nRecords stored: " + ", ".join(f"{n} {table}" for table, n in stats.items()), flush=True)
    return ok


def _where_next(svc: ServiceProcess, data_root: Path, keep: bool, kept_data: bool) -> None:
    if not keep:
        gone = f"its data is kept in {data_root}" if kept_data else "its data folder was deleted"
        print(
            f"\nThe service has stopped and {gone}. To explore findings, alerts,\n"
            "metrics and the API afterwards, run `bash scripts/run.sh demo --keep-running`: the\n"
            "service stays up and the demo lists where to look.",
            flush=True,
        )
        return
    print("\nThe service keeps running (--keep-running); Ctrl-C stops it. Where to look:")
    print(f"  console         {svc.api}/ui/   (every finding with its evidence drawn; docs/console.md)")
    print(f"  findings        {svc.api}/api/v1/findings")
    print(f"  alerts sent     {svc.api}/api/v1/alerts")
    print(f"  retrain         {svc.api}/api/v1/retrain/triggers")
    print(f"  metrics         {svc.api}/metrics   (scrape with Prometheus; dashboards/ has the Grafana JSON)")
    print(f"  API reference   {svc.api}/openapi.json")
    print(f"  OTLP            {svc.otlp_http} (HTTP), {svc.otlp_grpc} (gRPC): send your own telemetry")
    print(f"  data            {data_root}", flush=True)


def add_cli(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo",
        help="the whole story on this machine with simulated workloads and GPUs",
        description=(
            "Starts the service and runs simulated workloads against it (a model server whose"
            " inputs drift, an LLM app traced by traceloop-sdk, a 4-rank training run on a"
            " scripted 8-GPU node); prints each finding, alert and retraining trigger as it"
            " comes. Exit code 0 when every part of the story happened."
        ),
    )
    p.add_argument("--short", action="store_true", help="the short version CI runs (about a minute)")
    p.add_argument(
        "--keep-running",
        action="store_true",
        help="leave the service running at the end and list where to look (Ctrl-C stops it)",
    )
    p.add_argument("--data-dir", help="keep the demo's store and files here (default: a temporary folder)")
    p.add_argument("--random-ports", action="store_true", help="free ports instead of 9710/4318/4317")
    p.set_defaults(func=run_demo)


if __name__ == "__main__":
    from mlvigil.app.cli import main

    sys.exit(main(["demo", *sys.argv[1:]]))
