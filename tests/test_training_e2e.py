"""End to end: Alibaba PAI mini-batch times replayed as OTel SDK step spans over OTLP/HTTP
into a real service; the straggler detector flags job_1's worker 6 and resolves it."""

from __future__ import annotations

import csv
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from tests.harness import ServiceHandle

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
