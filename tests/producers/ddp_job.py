"""A data-parallel training job as a user runs it: one process per rank, each with its own
OpenTelemetry SDK and the default ``BatchSpanProcessor`` exporting to mlvigil over OTLP/HTTP,
stepping in lockstep (synchronous all-reduce) and reporting steps with
``mlvigil_producer.training``.

The job and its transients are ``detectors.training.arrival.JobSpec`` (the in-process arrival
model is this harness's twin): every rank process draws the same job from the seed, so all
know every rank's compute time and step in lockstep without talking to each other. Per node:
its clock is off by the spec's skew (the SDK's timestamps), and its telemetry starts late by the
spec's offset (its exporter cannot deliver until then; spans wait in the SDK's queue). Exports
are occasionally sent twice (stored, but the answer lost) or held back and sent after the next
one (a failed export retried after a backoff).

    python -m tests.producers.ddp_job ENDPOINT --ranks 8 --steps 200 --step-time 0.05 \
        --seed 1 --spike-at 120 --nan-at 100 --straggler-at 150 --stall-at 75

runs every rank as a subprocess and exits non-zero if one failed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from detectors.training.arrival import JobSpec, job_rows

SPEC_FIELDS = (
    "run_id",
    "ranks",
    "ranks_per_node",
    "steps",
    "step_time",
    "seed",
    "node_offset",
    "clock_skew",
    "retry_prob",
    "duplicate_prob",
    "spike_at",
    "nan_at",
    "straggler_at",
    "stall_at",
)


# Phases reported from the job's model; communication is measured (see run_rank).
PHASES = (
    ("data_wait", "data_wait_s"),
    ("forward", "forward_s"),
    ("backward", "backward_s"),
    ("checkpoint", "checkpoint_s"),
)


def _exporter(endpoint: str, opens_at: float, spec: JobSpec, rng: random.Random) -> Any:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import SpanExportResult

    class FlakyLateExporter(OTLPSpanExporter):
        """The SDK's OTLP/HTTP exporter behind a link that opens late, sometimes delivers a
        request twice and sometimes delivers one after the next."""

        def __init__(self) -> None:
            super().__init__(endpoint=f"{endpoint.rstrip('/')}/v1/traces")
            self._held: list[Any] = []

        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            wait = opens_at - time.time()
            if wait > 0:
                time.sleep(wait)  # the node's telemetry is not up yet: spans queue in the SDK
            if rng.random() < spec.retry_prob and not self._held:
                self._held = list(spans)  # this request fails; the SDK's retry lands later
                return SpanExportResult.SUCCESS
            result = super().export(spans)
            if rng.random() < spec.duplicate_prob:
                super().export(spans)  # stored, answer lost: sent again
            if self._held:
                held, self._held = self._held, []
                super().export(held)
            return result

        def shutdown(self) -> None:
            if self._held:
                super().export(self._held)
                self._held = []
            super().shutdown()

    return FlakyLateExporter()


def run_rank(endpoint: str, spec: JobSpec, rank: int) -> None:
    """One rank's process: say it is ready, read the common start time, then step and report."""
    import opentelemetry.sdk.trace as sdk_trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from mlvigil_producer.training import TrainingTelemetry

    rows = job_rows(spec)[rank]
    node = spec.node(rank)
    skew_ns = int(spec.skews[node] * 1e9)
    real_time_ns = time.time_ns
    # This node's clock: the SDK stamps spans with it.
    sdk_trace.time_ns = lambda: real_time_ns() + skew_ns
    rng = random.Random(spec.seed * 1000 + rank)
    provider = TracerProvider(
        resource=Resource.create(
            {
                "service.name": "ddp-job",
                "host.name": f"node-{node}",
                "k8s.pod.name": f"{spec.run_id}-worker-{rank}",
            }
        )
    )
    # Ready (imports done, like a rendezvous); the launcher answers with the common start.
    print("ready", flush=True)
    start_at = float(sys.stdin.readline())
    provider.add_span_processor(
        BatchSpanProcessor(_exporter(endpoint, start_at + spec.offsets[node], spec, rng))
    )
    tel = TrainingTelemetry(
        spec.run_id,
        rank=rank,
        world_size=spec.ranks,
        gpu_uuid=f"GPU-{spec.run_id}-{rank:03d}",
        tracer_provider=provider,
    )
    while time.time() < start_at:
        time.sleep(min(0.05, max(start_at - time.time(), 0.0)))  # the job's common start
    for row in rows:
        # Lockstep: a step ends when the slowest rank's work and the all-reduce are done.
        step_end = start_at + (row["ts"] - spec.skews[node] - spec.start) + row["step_time_s"]
        with tel.step(row["step"]) as s:
            began = time.perf_counter()
            work = 0.0
            for phase, key in PHASES:
                if row[key]:
                    s.add_time(phase, row[key])
                    work += row[key]
            s.set(loss=row["loss"], grad_norm=row["grad_norm"], samples=row["samples"], tokens=row["tokens"])
            # Keep to the job's schedule, but never shorten a step: a rank this machine's load
            # delayed runs late (its spans arrive late), it does not squeeze its next steps.
            pause = max(step_end - time.time(), row["step_time_s"] - (time.perf_counter() - began))
            if pause > 0:
                time.sleep(pause)  # the step's work
            # The rest of the step is the all-reduce and waiting in it, as a real rank measures
            # it; so a moment this process lost to the test machine's load is not computing.
            s.add_time("comm", max(time.perf_counter() - began - work, 0.0))
    provider.shutdown()


def launch(endpoint: str, spec: JobSpec, *, ready_timeout: float = 60.0) -> list[subprocess.Popen[str]]:
    """Start one process per rank (as torchrun would); once all are ready they step together."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    spec_json = json.dumps({k: getattr(spec, k) for k in SPEC_FIELDS})
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.producers.ddp_job",
                endpoint,
                "--rank",
                str(rank),
                "--spec",
                spec_json,
            ],
            env={**env, "RANK": str(rank), "WORLD_SIZE": str(spec.ranks)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for rank in range(spec.ranks)
    ]
    ready = threading.Barrier(len(procs) + 1)

    def await_ready(p: subprocess.Popen[str]) -> None:
        assert p.stdout is not None
        p.stdout.readline()
        ready.wait()

    for p in procs:
        threading.Thread(target=await_ready, args=(p,), daemon=True).start()
    try:
        ready.wait(timeout=ready_timeout)
    except threading.BrokenBarrierError:
        for p in procs:
            p.kill()
        raise RuntimeError(f"rank processes not ready within {ready_timeout}s") from None
    start_at = time.time() + 0.5
    for p in procs:
        assert p.stdin is not None
        p.stdin.write(f"{start_at!r}\n")
        p.stdin.flush()
    return procs


def wait_all(procs: list[subprocess.Popen[str]], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=max(deadline - time.monotonic(), 0.1)))
        except subprocess.TimeoutExpired:
            p.kill()
            codes.append(p.wait())
    return codes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("endpoint", help="OTLP/HTTP base URL, e.g. http://127.0.0.1:4318")
    ap.add_argument("--rank", type=int, help="(internal) run this one rank")
    ap.add_argument("--spec", help="(internal) the job as JSON")
    for name in SPEC_FIELDS:
        default = getattr(JobSpec, name, None)
        kind = type(default) if default is not None else int
        ap.add_argument(f"--{name.replace('_', '-')}", type=kind, default=default)
    args = ap.parse_args(argv)
    if args.rank is not None:
        spec = JobSpec(**json.loads(args.spec))
        run_rank(args.endpoint, spec, args.rank)
        return 0
    spec = JobSpec(**{k: getattr(args, k) for k in SPEC_FIELDS})
    procs = launch(args.endpoint, spec)
    codes = wait_all(procs, timeout=30.0 + 3 * spec.steps * spec.step_time + spec.node_offset)
    return max(codes, default=0)


if __name__ == "__main__":
    raise SystemExit(main())
