"""Straggler detection delay and false alarms vs. a fixed threshold and a Megatron-style
min/max report, on the same synthetic runs; the same under realistic telemetry arrival (the
harness's model: per-rank batch exporters, a late node, clock skew, retried and duplicated
exports, evaluations every 15 s) through every detector, with transients injected and a
study of clean runs; the Alibaba PAI job_1 trace through the same model; ingest and detector
cost per step span.

    python -m bench.training [--seeds 20] [--steps 400] [--ranks 8] [--clean-runs 200]

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
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from collector.normalize import NormaliseOptions, normalise_traces
from detectors.training import TrainingConfig, build_detectors
from detectors.training.arrival import JobSpec, replay, trace_rows
from detectors.training.straggler import StragglerScorer
from detectors.training.synthetic import RunSpec, simulate, to_batch
from mlvigil.core.findings import Finding
from mlvigil.core.store.duckdb import DuckDBStore

ALIBABA = Path(__file__).resolve().parents[3] / "shared" / "data" / "alibaba-pai-minibatch"

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


def _first_step(f: Finding) -> int | None:
    ev = f.evidence
    for key in ("began_step", "step", "since_step"):
        if ev.get(key) is not None:
            return int(ev[key])
    return None


def _step_time(seed: int) -> float:
    """Step times spread log-uniformly over 0.05-5 s."""
    return float(10 ** (-1.3 + 2.0 * ((seed * 0.618034) % 1.0)))


def harness_straggler(seeds: int, n_steps: int, ranks: int) -> dict[str, float]:
    """A rank 15 % slower from ONSET to the end, through every detector under the arrival
    model; delay = steps the job had run past the onset when the straggler Finding fired."""
    delays, missed, wrong = [], 0, 0
    for seed in range(seeds):
        slow = seed % ranks
        spec = JobSpec(
            ranks=ranks,
            steps=n_steps,
            step_time=_step_time(seed),
            seed=seed,
            straggler_at=ONSET,
            straggler_rank=slow,
            straggler_steps=n_steps,
            straggler_factor=1.15,
        )
        r = replay(spec, build_detectors(TrainingConfig()))
        fired = [(t, f) for t, f, what in r.transitions if what == "fired" and f.kind == "straggler"]
        wrong += any(f.subject.get("rank") != str(slow) for _, f in fired)
        hits = [t for t, f in fired if f.subject.get("rank") == str(slow)]
        at = r.step_at(hits[0]) if hits else None
        if at is None:
            missed += 1
        else:
            delays.append(at - ONSET)
    return {
        "median_delay_steps": statistics.median(delays) if delays else float("nan"),
        "max_delay_steps": max(delays) if delays else float("nan"),
        "missed": missed,
        "slow_runs_with_wrong_flag": wrong / seeds,
    }


TRANSIENTS = {
    "one-step loss spike x8": ("spike_at", "loss_anomaly", "loss_spike", None),
    "single NaN (rank 1)": ("nan_at", "loss_anomaly", "non_finite", None),
    "straggler 10 steps x1.6 (rank 2)": ("straggler_at", "straggler", "", "2"),
    "data-loader stall 3 steps (rank 3)": ("stall_at", "dataloader_stall", "", "3"),
}


def harness_transients(seeds: int, ranks: int) -> dict[str, tuple[float, float]]:
    """Per transient: share of runs with a Finding of it, and share naming its first step."""
    found: Counter[str] = Counter()
    named: Counter[str] = Counter()
    at = 120
    for seed in range(seeds):
        for name, (field, kind, key, rank) in TRANSIENTS.items():
            spec = JobSpec(ranks=ranks, steps=170, step_time=_step_time(seed), seed=seed)
            setattr(spec, field, at)
            fs = [
                f
                for f in replay(spec, build_detectors(TrainingConfig())).fired(kind)
                if f.key == key and f.subject.get("rank") == rank
            ]
            found[name] += bool(fs)
            named[name] += any(_first_step(f) == at for f in fs)
    return {name: (found[name] / seeds, named[name] / seeds) for name in TRANSIENTS}


def harness_clean(runs: int, ranks: int) -> tuple[Counter[str], float]:
    """Clean runs (warm-up, checkpoints every 50 steps, jitter, GC blips, late node, skew,
    retries): runs with a Finding, per kind."""
    kinds: Counter[str] = Counter()
    t = time.perf_counter()
    for seed in range(runs):
        spec = JobSpec(ranks=ranks, steps=260, step_time=_step_time(seed), seed=20_000 + seed)
        for kind in {f.kind for f in replay(spec, build_detectors(TrainingConfig())).fired()}:
            kinds[kind] += 1
    return kinds, time.perf_counter() - t


def harness_alibaba(seeds: int) -> list[str]:
    out = []
    for job in ("job_1", "job_2"):
        path = ALIBABA / f"{job}_norm.csv"
        if not path.exists():
            return [f"(Alibaba PAI data not at {ALIBABA})"]
        for seed in range(seeds):
            spec = JobSpec(run_id=job, ranks_per_node=5, seed=seed, clock_skew=30.0)
            r = replay(spec, build_detectors(TrainingConfig()), per_rank=trace_rows(spec, path))
            out.append(
                f"{job} seed {seed}: "
                + (
                    "; ".join(
                        f"{f.kind} rank {f.subject.get('rank')} steps {_first_step(f)}-"
                        f"{f.evidence.get('last_step')} {f.state}"
                        for f in r.fired()
                    )
                    or "no findings"
                )
            )
    return out


def ingest_cost(n_spans: int = 4000) -> tuple[float, float, float]:
    """Seconds per step span: protobuf decode floor, decode + normalise, and + durable store append."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from mlvigil_producer.training import TrainingTelemetry

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
    ap.add_argument("--clean-runs", type=int, default=200, help="clean runs of the arrival study")
    ap.add_argument("--transient-seeds", type=int, default=10)
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
    print(
        "\nunder the arrival model (per-rank batch exporters, a node up to 10 s late, +-2 s clock"
        " skew, 5% retried / 3% duplicated exports, evaluations every 15 s; step times 0.05-5 s):"
    )
    h = harness_straggler(args.seeds, args.steps, args.ranks)
    print(
        f"{'mlvigil (all detectors)':<22}{h['median_delay_steps']:>13.1f}{h['max_delay_steps']:>10.0f}"
        f"{h['missed']:>8d}{'':>10}{h['slow_runs_with_wrong_flag']:>11.2f}"
    )
    print(f"transients, {args.transient_seeds} runs each, {args.ranks} ranks: found / naming its first step")
    for name, (found, named) in harness_transients(args.transient_seeds, args.ranks).items():
        print(f"  {name:<36}{found:>6.2f}{named:>7.2f}")
    kinds, spent = harness_clean(args.clean_runs, args.ranks)
    rates = ", ".join(f"{k} {n / args.clean_runs:.3f}" for k, n in sorted(kinds.items())) or "none"
    print(
        f"clean runs: {args.clean_runs} x {args.ranks} ranks x 260 steps ({spent:.0f} s):"
        f" runs with a finding, per detector: {rates}"
    )
    for line in harness_alibaba(2):
        print(f"alibaba {line}")
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
