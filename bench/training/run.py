"""Straggler detection delay and false alarms vs. a fixed threshold and a Megatron-style
min/max report, on the same synthetic runs; ingest and detector cost per step span.

    python -m bench.training [--seeds 20] [--steps 400] [--ranks 8]

Peers, on identical data:
- fixed threshold: a rank is flagged at any step whose compute time exceeds 1.10x that
  step's median rank (what a simple alert rule on per-step times does);
- Megatron-LM's straggler detector: every ``log_interval`` steps it reports the min and max
  rank throughput; a straggler is called when max/min time exceeds 1.10, naming the max rank.
Ingest cost is compared with the physical floor of decoding the same OTLP request.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from collector.normalize import NormaliseOptions, normalise_traces
from detectors.training import TrainingConfig, build_detectors
from detectors.training.straggler import StragglerScorer
from detectors.training.synthetic import RunSpec, simulate, to_batch
from mlvigil.store.duckdb import DuckDBStore

ONSET = 150
Steps = dict[int, dict[int, float]]


def compute_by_step(spec: RunSpec) -> Steps:
    out: Steps = defaultdict(dict)
    for r in simulate(spec):
        out[r["step"]][r["rank"]] = r["step_time_s"] - r["comm_s"]
    return out


def mlvigil_flags(steps: Steps) -> list[tuple[int, int]]:
    scorer = StragglerScorer()
    flags = []
    for step in sorted(steps):
        for rank, s in scorer.update(step, steps[step]).items():
            if s.flagged:
                flags.append((step, rank))
    return flags


def fixed_threshold_flags(steps: Steps, ratio: float = 1.10) -> list[tuple[int, int]]:
    flags: list[tuple[int, int]] = []
    for step in sorted(steps):
        med = statistics.median(steps[step].values())
        flags.extend((step, r) for r, v in steps[step].items() if v > ratio * med)
    return flags


def megatron_flags(steps: Steps, log_interval: int = 10, ratio: float = 1.10) -> list[tuple[int, int]]:
    flags: list[tuple[int, int]] = []
    acc: dict[int, float] = defaultdict(float)
    for step in sorted(steps):
        for r, v in steps[step].items():
            acc[r] += v
        if (step + 1) % log_interval == 0:
            slowest = max(acc, key=lambda r: acc[r])
            if acc[slowest] > ratio * min(acc.values()):
                flags.append((step, slowest))
            acc.clear()
    return flags


def score(
    method: Callable[[Steps], list[tuple[int, int]]], seeds: int, n_steps: int, ranks: int
) -> dict[str, float]:
    delays, missed, false_runs, wrong = [], 0, 0, 0
    for seed in range(seeds):
        slow = compute_by_step(
            RunSpec(
                world_size=ranks,
                steps=n_steps,
                seed=seed,
                jitter=0.04,
                blip_prob=0.01,
                slow_rank=seed % ranks,
                slow_from=ONSET,
                slow_factor=1.15,
            )
        )
        flags = method(slow)
        hits = [s for s, r in flags if r == seed % ranks and s >= ONSET]
        wrong += any(r != seed % ranks or s < ONSET for s, r in flags)
        if hits:
            delays.append(hits[0] - ONSET)
        else:
            missed += 1
        clean = compute_by_step(
            RunSpec(world_size=ranks, steps=n_steps, seed=10_000 + seed, jitter=0.04, blip_prob=0.01)
        )
        false_runs += bool(method(clean))
    return {
        "median_delay_steps": statistics.median(delays) if delays else float("nan"),
        "max_delay_steps": max(delays) if delays else float("nan"),
        "missed": missed,
        "clean_runs_with_alarm": false_runs / seeds,
        "slow_runs_with_wrong_flag": wrong / seeds,
    }


def ingest_cost(n_spans: int = 4000) -> tuple[float, float, float]:
    """Seconds per step span: protobuf decode floor, decode + normalise, and + durable store append."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from mlvigil.instrument.training import TrainingTelemetry

    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "bench", "host.name": "n0"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tel = TrainingTelemetry("bench", rank=0, world_size=8, gpu_uuid="GPU-0", tracer_provider=provider)
    for step in range(n_spans):
        with tel.step(step) as s:
            s.add_time("forward", 0.1)
            s.add_time("backward", 0.2)
            s.add_time("comm", 0.05)
            s.set(loss=2.0, grad_norm=1.0, samples=32, tokens=32768, learning_rate=3e-4)
    payload = encode_spans(exporter.get_finished_spans()).SerializeToString()
    reps = 3
    t = time.perf_counter()
    for _ in range(reps):
        ExportTraceServiceRequest.FromString(payload)
    floor = (time.perf_counter() - t) / reps / n_spans
    t = time.perf_counter()
    for _ in range(reps):
        out = normalise_traces(
            ExportTraceServiceRequest.FromString(payload), NormaliseOptions(keep_raw_spans=False)
        )
    norm = (time.perf_counter() - t) / reps / n_spans
    with tempfile.TemporaryDirectory() as d:
        store = DuckDBStore(d)
        t = time.perf_counter()
        for _ in range(reps):
            store.append(
                normalise_traces(
                    ExportTraceServiceRequest.FromString(payload), NormaliseOptions(keep_raw_spans=False)
                ).batch
            )
        full = (time.perf_counter() - t) / reps / n_spans
        store.close()
    assert out.batch.rows("training_steps") == n_spans
    return floor, norm, full


def detector_cost(ranks: int = 8, steps: int = 400, chunk: int = 20) -> float:
    """Seconds of detector evaluation per step row (all five detectors, evaluated every ``chunk`` steps)."""
    rows = simulate(RunSpec(world_size=ranks, steps=steps, seed=1, slow_rank=2, slow_from=ONSET))
    with tempfile.TemporaryDirectory() as d:
        store = DuckDBStore(d)
        dets = build_detectors(TrainingConfig())
        spent = 0.0
        for s in range(0, steps, chunk):
            batch = [r for r in rows if s <= r["step"] < s + chunk]
            store.append(to_batch("training_steps", batch))
            now = batch[-1]["ts"] + 1
            t = time.perf_counter()
            for det in dets:
                det.evaluate(store, now)
            spent += time.perf_counter() - t
        store.close()
    return spent / len(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--ranks", type=int, default=8)
    args = ap.parse_args(argv)
    print(
        f"straggler: one rank 15% slower from step {ONSET}; {args.seeds} slow + {args.seeds} clean runs,"
        f" {args.ranks} ranks x {args.steps} steps, 4% jitter, 1% GC blips"
    )
    print(
        f"{'method':<22}{'median delay':>13}{'max delay':>10}{'missed':>8}{'clean FA':>10}{'wrong flag':>11}"
    )
    results = {}
    methods: list[tuple[str, Callable[[Steps], list[tuple[int, int]]]]] = [
        ("mlvigil", mlvigil_flags),
        ("fixed 1.10x per step", fixed_threshold_flags),
        ("fixed 1.20x per step", lambda s: fixed_threshold_flags(s, 1.20)),
        ("megatron min/max", megatron_flags),
        ("megatron min/max 1.2x", lambda s: megatron_flags(s, ratio=1.20)),
    ]
    for name, method in methods:
        r = results[name] = score(method, args.seeds, args.steps, args.ranks)
        print(
            f"{name:<22}{r['median_delay_steps']:>13.1f}{r['max_delay_steps']:>10.0f}{r['missed']:>8d}"
            f"{r['clean_runs_with_alarm']:>10.2f}{r['slow_runs_with_wrong_flag']:>11.2f}"
        )
    floor, norm, full = ingest_cost()
    print(
        f"ingest per step span: protobuf decode floor {floor * 1e6:.1f} us;"
        f" decode+normalise {norm * 1e6:.1f} us ({norm / floor:.1f}x floor);"
        f" + durable DuckDB append {full * 1e6:.1f} us ({full / floor:.1f}x floor)"
    )
    per_row = detector_cost()
    print(
        f"detectors (all five) per step row: {per_row * 1e6:.1f} us ({per_row / floor:.1f}x the decode floor)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
