"""Training detectors over long runs: evaluation time and peak memory.

    python -m bench.detection.training [--steps 20000] [--evals 8] [--before DIR]

Two stores of ``training_steps`` rows as a DDP job's ranks write them (0.6 s steps, a
checkpoint every 500 steps, clock skew between nodes):

- ``64x1``: one run of 64 ranks x ``--steps`` steps;
- ``8x20``: twenty runs of 8 ranks x ``--steps`` steps each.

Each store is evaluated in a fresh process by every training detector (the service's
defaults): a first evaluation right after a start (reads ``history``), then ``--evals``
steady evaluations 15 s apart, each after appending the 15 s of steps that arrived
meanwhile. Printed per store: rows stored, first and steady (median, max) evaluation time,
peak RSS of the evaluating process above its RSS once the store was open, and the findings
(which must not differ between code versions).

``--before DIR`` also runs the evaluating process on the code checked out in ``DIR`` (for
instance ``git worktree add /tmp/before <commit>``), on the same stores, in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from mlvigil.core.records import RecordBatch
from mlvigil.core.store.duckdb import DuckDBStore

STEP_S = 0.5
INTERVAL_S = 15.0
START = 1.7e9
REPO = Path(__file__).resolve().parents[2]


def job_columns(run_id: str, ranks: int, first: int, last: int, seed: int) -> dict[str, list[Any]]:
    """``training_steps`` columns of steps ``first..last-1`` of one synchronous run."""
    rng = np.random.default_rng([seed, first])
    steps = np.arange(first, last)
    n_steps = len(steps)
    compute = 0.85 * STEP_S * rng.lognormal(0.0, 0.04, (n_steps, ranks))
    wait = 0.03 * STEP_S * rng.lognormal(0.0, 0.5, (n_steps, ranks))
    ckpt = np.where((steps % 500 == 0) & (steps > 0), 4 * STEP_S, 0.0)
    wall = (compute + wait).max(axis=1) + 0.1 * STEP_S + ckpt
    # Each step starts on a fixed timeline (a step slot, plus the checkpoints before it), so
    # that any range of steps is generated alike.
    begin = START + steps * 1.2 * STEP_S + (steps // 500) * 4 * STEP_S
    skew = np.random.default_rng(seed).uniform(-2.0, 2.0, (ranks + 3) // 4)
    rank = np.tile(np.arange(ranks), n_steps)
    node = rank // 4
    loss = 2.5 * np.exp(-steps / 3000.0) + 1.2 + rng.normal(0.0, 0.02, n_steps)
    n = n_steps * ranks
    step_time = np.repeat(wall, ranks)
    return {
        "ts": (np.repeat(begin, ranks) + skew[node]).tolist(),
        "service": ["trainer"] * n,
        "run_id": [run_id] * n,
        "step": np.repeat(steps, ranks).tolist(),
        "rank": rank.tolist(),
        "world_size": [ranks] * n,
        "host": [f"{run_id}-node-{k}" for k in node.tolist()],
        "k8s_pod": [f"{run_id}-worker-{r}" for r in rank.tolist()],
        "gpu_uuid": [f"GPU-{run_id}-{r:03d}" for r in rank.tolist()],
        "step_time_s": step_time.tolist(),
        "loss": (np.repeat(loss, ranks) + rng.normal(0.0, 0.01, n)).tolist(),
        "grad_norm": np.abs(rng.normal(1.0, 0.1, n)).tolist(),
        "learning_rate": [3e-4] * n,
        "samples": [8.0] * n,
        "tokens": [4096.0] * n,
        "data_wait_s": wait.ravel().tolist(),
        "forward_s": (compute.ravel() / 3).tolist(),
        "backward_s": (2 * compute.ravel() / 3).tolist(),
        "optimizer_s": [0.0] * n,
        "comm_s": (step_time - compute.ravel() - wait.ravel() - np.repeat(ckpt, ranks)).tolist(),
        "checkpoint_s": np.repeat(ckpt, ranks).tolist(),
    }


def append_steps(store: DuckDBStore, runs: list[tuple[str, int]], first: int, last: int) -> None:
    chunk = max(1, 250_000 // max(r for _, r in runs))
    for i, (run_id, ranks) in enumerate(runs):
        for lo in range(first, last, chunk):
            cols = job_columns(run_id, ranks, lo, min(last, lo + chunk), seed=i)
            store.append(RecordBatch(columns={"training_steps": cols}))


# The evaluating process: only APIs that every version of the code has, so that ``--before``
# can run it on an older checkout.
CHILD = textwrap.dedent(
    """
    import json, resource, statistics, sys, time
    sys.path.insert(0, {bench!r})
    from bench_detection_training_gen import append_steps
    from detectors.training import TrainingConfig, build_detectors
    from mlvigil.core.store.duckdb import DuckDBStore

    def rss():
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    runs, steps, evals, data = {runs!r}, {steps!r}, {evals!r}, {data!r}
    store = DuckDBStore(data, min_free_bytes=0)
    store.query("training_steps", columns=["ts"], last=1)
    base = rss()
    dets = build_detectors(TrainingConfig())
    now = max(store.query("training_steps", columns=["ts"], last=1)["ts"]) + 1.0
    t0 = time.perf_counter()
    found = [f for d in dets for f in d.evaluate(store, now)]
    first = time.perf_counter() - t0
    first_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    per = int({interval!r} / (1.2 * {step_s!r}))
    steady = []
    for k in range(evals):
        append_steps(store, runs, steps + k * per, steps + (k + 1) * per)
        now += {interval!r}
        t0 = time.perf_counter()
        found += [f for d in dets for f in d.evaluate(store, now)]
        steady.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    store.close()
    kinds = sorted({{(f.kind, json.dumps(f.subject, sort_keys=True)) for f in found}})
    print(json.dumps({{"first_s": first, "steady_s": steady, "base_rss": base,
                      "first_peak_rss": first_peak, "peak_rss": peak, "findings": kinds}}))
    """
)


def evaluate(code: Path, data: Path, runs: list[tuple[str, int]], steps: int, evals: int) -> dict[str, Any]:
    """Runs the evaluations in a fresh process importing the code in ``code``."""
    with tempfile.TemporaryDirectory(prefix="mlvigil-bench-") as tmp:
        # The generator travels as its own module, so an older checkout can import it.
        Path(tmp, "bench_detection_training_gen.py").write_text(_generator_source())
        script = CHILD.format(
            bench=tmp,
            runs=runs,
            steps=steps,
            evals=evals,
            data=str(data),
            interval=INTERVAL_S,
            step_s=STEP_S,
        )
        env = {**os.environ, "PYTHONPATH": str(code)}
        out = subprocess.run(
            [sys.executable, "-c", script], env=env, cwd=code, capture_output=True, text=True, check=False
        )
    if out.returncode != 0:
        raise RuntimeError(f"evaluation on {code} failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _generator_source() -> str:
    src = Path(__file__).read_text()
    head, _, _ = src.partition("\n# The evaluating process")
    return head


def _mb(n: float) -> str:
    return f"{n / 2**20:.0f} MB"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.detection.training", description=(__doc__ or "").split("\n")[0]
    )
    ap.add_argument("--steps", type=int, default=20_000)
    ap.add_argument("--evals", type=int, default=8)
    ap.add_argument("--before", type=Path, help="a checkout of the code to compare with")
    ap.add_argument("--only", choices=("64x1", "8x20"), help="one store only")
    args = ap.parse_args(argv)
    stores = {"64x1": [("run-64", 64)], "8x20": [(f"run-{i:02d}", 8) for i in range(20)]}
    versions = [("after", REPO)] + ([("before", args.before.resolve())] if args.before else [])
    with tempfile.TemporaryDirectory(prefix="mlvigil-training-") as tmp:
        for name, runs in stores.items():
            if args.only and name != args.only:
                continue
            seed_dir = Path(tmp) / name
            store = DuckDBStore(seed_dir, min_free_bytes=0)
            append_steps(store, runs, 0, args.steps)
            rows = store.counts()["training_steps"]
            store.close()
            print(f"{name}: {len(runs)} run(s) x {runs[0][1]} ranks x {args.steps:,} steps = {rows:,} rows")
            results = {}
            for label, code in versions:
                work = Path(tmp) / f"{name}-{label}"
                work.mkdir()
                (work / "mlvigil.duckdb").write_bytes((seed_dir / "mlvigil.duckdb").read_bytes())
                r = results[label] = evaluate(code, work, runs, args.steps, args.evals)
                steady = sorted(r["steady_s"])
                print(
                    f"  {label:6s} first evaluation {r['first_s']:.2f} s;"
                    f" steady median {steady[len(steady) // 2]:.3f} s, max {steady[-1]:.3f} s;"
                    f" peak RSS +{_mb(r['first_peak_rss'] - r['base_rss'])} (first),"
                    f" +{_mb(r['peak_rss'] - r['base_rss'])} (all);"
                    f" {len(r['findings'])} finding subject(s)"
                )
            if len(results) == 2:
                same = results["after"]["findings"] == results["before"]["findings"]
                print(f"  findings identical before and after: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
