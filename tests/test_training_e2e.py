"""End to end: a data-parallel job of 8 rank processes (tests/producers/ddp_job.py) with the real
OTel SDK reporting to a real service, and the Alibaba PAI mini-batch times replayed as OTel SDK
step spans over OTLP/HTTP (the straggler detector flags job_1's worker 6 and resolves it)."""

from __future__ import annotations

import csv
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from detectors.training.arrival import JobSpec
from tests.harness import ServiceHandle
from tests.producers.ddp_job import launch, wait_all

ALIBABA = Path(__file__).resolve().parents[2] / "shared" / "data" / "alibaba-pai-minibatch"


def _stored(h: ServiceHandle, n: int) -> Callable[[], bool]:
    return lambda: h.stats().get("training_steps", 0) >= n


@pytest.mark.skipif(not ALIBABA.is_dir(), reason="shared Alibaba PAI data not beside the checkout")
def test_alibaba_job1_replayed_over_otlp(service_factory: Callable[..., ServiceHandle]) -> None:
    h = service_factory({"detectors": {"interval": "1h", "training": {}}})
    per_iter: dict[int, dict[int, float]] = defaultdict(dict)
    with (ALIBABA / "job_1_norm.csv").open() as fh:
        for rec in csv.DictReader(fh):
            per_iter[int(rec["time"])][int(rec["worker"])] = float(rec["batch_time_norm"])
    # One provider per worker, as each rank exports on its own; a step lasts batch_time_norm ms
    # and its span duration is the step time (no explicit step_time attribute).
    providers = {}
    for worker in range(10):
        p = TracerProvider(
            resource=Resource.create(
                {
                    "service.name": "pai-job-1",
                    "host.name": f"pai-node-{worker}",
                    "k8s.pod.name": f"job-1-worker-{worker}",
                }
            )
        )
        p.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{h.otlp_http}/v1/traces")))
        providers[worker] = p
    tracers = {w: p.get_tracer("replay") for w, p in providers.items()}
    t0 = time.time() - 3100.0
    sent = 0
    firing_at: list[int] = []
    iterations = sorted(per_iter)
    try:
        for i, it in enumerate(iterations):
            for worker, value in per_iter[it].items():
                start = int((t0 + it) * 1e9)
                span = tracers[worker].start_span(
                    "train.step",
                    start_time=start,
                    attributes={
                        "mlvigil.train.run_id": "job_1",
                        "mlvigil.train.step": it,
                        "mlvigil.train.rank": worker,
                        "mlvigil.train.world_size": 10,
                    },
                )
                span.end(end_time=start + int(value * 1e6))
                sent += 1
            if i % 5 == 4 or i == len(iterations) - 1:
                for p in providers.values():
                    p.force_flush()
                h.wait_for(_stored(h, sent), timeout=30)
                h.evaluate()
                firing = h.findings(kind="straggler", state="firing")
                if firing:
                    assert {f["subject"]["rank"] for f in firing} == {"6"}
                    firing_at.append(it)
    finally:
        for p in providers.values():
            p.shutdown()
    assert firing_at and 1811 <= firing_at[0] <= 1951 and firing_at[-1] <= 2051
    found = h.findings(kind="straggler")
    assert len(found) == 1 and found[0]["state"] == "resolved"
    f = found[0]
    assert f["subject"] == {"run_id": "job_1", "rank": "6", "host": "pai-node-6", "k8s_pod": "job-1-worker-6"}
    assert f["evidence"]["verdict"] == "degraded with no reported fault"
    metrics = h.request("GET", "/metrics")[2].decode()
    assert 'mlvigil_training_straggler_score{rank="6",run_id="job_1",score="relative"}' in metrics


def test_ddp_job_of_8_rank_processes_every_transient_fires_then_resolves_naming_its_first_step(
    service_factory: Callable[..., ServiceHandle],
) -> None:
    # Evaluations every 5 s: far longer than loss.hold (20 steps) x 0.1 s, so a transient is
    # over long before anyone looks (the defect was: found, then dropped).
    h = service_factory({"detectors": {"interval": "5s", "training": {}}})
    spec = JobSpec(
        run_id="ddp-1",
        ranks=8,
        ranks_per_node=4,
        steps=185,
        step_time=0.1,
        seed=4,
        node_offset=3.0,
        clock_skew=1.5,
        retry_prob=0.1,
        duplicate_prob=0.1,
        stall_at=75,
        nan_at=100,
        spike_at=125,
        straggler_at=150,
    )
    procs = launch(h.otlp_http, spec)
    assert wait_all(procs, timeout=120.0) == [0] * spec.ranks
    h.wait_for(lambda: h.stats().get("training_steps", 0) >= spec.ranks * spec.steps, timeout=30)
    expected = {
        ("loss_anomaly", "loss_spike", None),
        ("loss_anomaly", "non_finite", None),
        ("straggler", "", "2"),
        ("dataloader_stall", "", "3"),
    }

    def settled() -> list[dict[str, Any]]:
        h.evaluate()
        found = h.findings()
        got = {(f["kind"], f["key"], f["subject"].get("rank")) for f in found}
        done = expected <= got and all(f["state"] == "resolved" for f in found)
        return found if done else []

    found = h.wait_for(settled, timeout=60, interval=0.5)
    by = {(f["kind"], f["key"], f["subject"].get("rank")): f for f in found}
    assert by[("loss_anomaly", "loss_spike", None)]["evidence"]["began_step"] == 125
    nan = by[("loss_anomaly", "non_finite", None)]["evidence"]
    assert nan["step"] == 100 and nan["rank"] == spec.nan_rank
    assert 150 <= by[("straggler", "", "2")]["evidence"]["began_step"] <= 152
    assert by[("straggler", "", "2")]["subject"]["host"] == "node-0"
    assert by[("dataloader_stall", "", "3")]["evidence"]["began_step"] == 75
    # Nothing else but the ten slow steps the straggler imposed on every rank.
    for key, f in by.items():
        if key not in expected:
            assert f["kind"] in ("training_slowdown", "throughput_drop"), f["summary"]
            assert 145 <= f["evidence"]["began_step"] < 160, f["summary"]
