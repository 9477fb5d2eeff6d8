"""Carbon benchmarks: forecast error on simulated runs, and the codecarbon handler's overhead.

1. Forecast error. Simulated training runs whose power draw changes (warm-up ramp, a phase
   change of x0.6..x1.5 somewhere in 20..80% of the run, evaluation pauses that use energy
   without progress, noise), measured every ``sample_steps`` steps as codecarbon would. At
   10%, 25% and 50% progress, mlvigil's projection (``detectors.carbon.forecast``: total /
   progress, re-done on every measurement) and the peer, Carbontracker's prediction
   (Anthony et al. 2020: energy of the first epoch x planned epochs, made once after epoch 1),
   are compared with the final total. Also: how often the final total lies inside mlvigil's
   band, and the band's width.
2. Handler overhead per measurement: ``MlvigilOutput.live_out`` (encode + POST over loopback
   HTTP) against codecarbon's own CSV ``FileOutput.out`` on the same EmissionsData, and
   against codecarbon's measurement itself (``_measure_power_and_energy``), which is what the
   job pays every ``measure_power_secs`` anyway.

Run: ``python -m bench.carbon`` (``--runs``, ``--seed``; default well under a minute).
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from detectors.carbon.forecast import forecast

CHECKPOINTS = (0.10, 0.25, 0.50)


# -- 1. forecast error ---------------------------------------------------------------------
def simulate_run(rng: random.Random, steps: int, sample_steps: int) -> tuple[list[float], list[float], float]:
    """(progress, cumulative joules) at each measurement, and the final total."""
    base = rng.uniform(150.0, 400.0)  # W
    warmup = int(steps * rng.uniform(0.02, 0.08))
    change_at = int(steps * rng.uniform(0.2, 0.8))
    factor = rng.uniform(0.6, 1.5)
    eval_every = steps // 10
    eval_len_s = rng.uniform(5.0, 30.0)
    step_s = 1.0
    total = 0.0
    progress, energy = [0.0], [0.0]
    for k in range(1, steps + 1):
        p = base * (0.4 + 0.6 * k / warmup if k <= warmup else 1.0)
        if k > change_at:
            p *= factor
        total += p * step_s * rng.uniform(0.95, 1.05)
        if k % eval_every == 0 and k < steps:
            total += 0.3 * base * eval_len_s  # evaluation: energy, no steps
        if k % sample_steps == 0 or k == steps:
            progress.append(k / steps)
            energy.append(total)
    return progress, energy, total


def bench_forecast(runs: int, seed: int, steps: int = 2000, sample_steps: int = 20) -> dict[str, Any]:
    rng = random.Random(seed)
    err: dict[str, dict[float, list[float]]] = {
        "mlvigil": {c: [] for c in CHECKPOINTS},
        "carbontracker": {c: [] for c in CHECKPOINTS},
    }
    covered = {c: 0 for c in CHECKPOINTS}
    width: dict[float, list[float]] = {c: [] for c in CHECKPOINTS}
    t0 = time.perf_counter()
    for _ in range(runs):
        progress, energy, final = simulate_run(rng, steps, sample_steps)
        # Carbontracker: first of 10 epochs measured, x10, fixed thereafter.
        i_epoch = next(i for i, p in enumerate(progress) if p >= 0.1)
        ct = energy[i_epoch] / progress[i_epoch]
        for c in CHECKPOINTS:
            i = next(i for i, p in enumerate(progress) if p >= c)
            f = forecast(progress[: i + 1], energy[: i + 1])
            assert f is not None
            err["mlvigil"][c].append(abs(f.projected - final) / final)
            err["carbontracker"][c].append(abs(ct - final) / final)
            covered[c] += f.lower <= final <= f.upper
            width[c].append((f.upper - f.lower) / final)
    elapsed = time.perf_counter() - t0
    return {"err": err, "covered": covered, "width": width, "runs": runs, "seconds": elapsed}


# -- 2. handler overhead -------------------------------------------------------------------
class _Sink(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def _per_call(fn: Callable[[], object], n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def bench_handler(n: int) -> dict[str, float]:
    from codecarbon import OfflineEmissionsTracker
    from codecarbon.output_methods.file import FileOutput

    from mlvigil_producer.codecarbon_output import MlvigilOutput

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    out = MlvigilOutput(url, run_id="bench", model="m", team="t")
    tracker = OfflineEmissionsTracker(
        country_iso_code="FRA",
        output_methods=[],
        output_handlers=[],
        log_level="error",
        allow_multiple_runs=True,
        measure_power_secs=3600,
    )
    tracker.start()
    sum(i * i for i in range(200_000))
    measure = _per_call(tracker._measure_power_and_energy, max(10, n // 20))
    data = tracker._prepare_emissions_data()
    out.set_progress(steps_done=10, steps_planned=100)
    encode = _per_call(lambda: out.build_request([(data, None)]).SerializeToString(), n)
    send = _per_call(lambda: out.live_out(data, data), n)
    with tempfile.TemporaryDirectory() as tmp:
        csv = FileOutput("emissions.csv", tmp)
        csv_out = _per_call(lambda: csv.out(data, data), max(10, n // 10))
    tracker.stop()
    server.shutdown()
    server.server_close()
    assert out.failed_exports == 0
    return {"encode": encode, "send": send, "csv": csv_out, "measure": measure}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.carbon", description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=300, help="simulated runs for the forecast benchmark")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--calls", type=int, default=2000, help="handler calls timed")
    args = ap.parse_args(argv)

    fc = bench_forecast(args.runs, args.seed)
    print(f"forecast error vs final total, {fc['runs']} simulated runs ({fc['seconds']:.1f}s)")
    print(
        f"{'progress':>9} {'mlvigil median':>15} {'p90':>7} {'carbontracker median':>21} {'p90':>7}"
        f" {'ratio (med)':>11} {'band coverage':>14} {'band width':>11}"
    )
    for c in CHECKPOINTS:
        m, ct = fc["err"]["mlvigil"][c], fc["err"]["carbontracker"][c]
        mq, cq = statistics.quantiles(m, n=10), statistics.quantiles(ct, n=10)
        ratio = statistics.median(m) / statistics.median(ct)
        coverage = fc["covered"][c] / fc["runs"]
        band = statistics.median(fc["width"][c])
        print(
            f"{c:>9.0%} {statistics.median(m):>15.2%} {mq[-1]:>7.2%} {statistics.median(ct):>21.2%}"
            f" {cq[-1]:>7.2%} {ratio:>11.2f} {coverage:>14.0%} {band:>11.1%}"
        )
    h = bench_handler(args.calls)
    print("\nhandler overhead per measurement")
    print(f"  MlvigilOutput encode only           {h['encode'] * 1e6:9.1f} us")
    print(f"  MlvigilOutput.live_out (loopback)   {h['send'] * 1e6:9.1f} us")
    print(
        f"  codecarbon FileOutput.out (CSV)     {h['csv'] * 1e6:9.1f} us   ratio live_out/CSV = "
        f"{h['send'] / h['csv']:.2f}"
    )
    print(
        f"  codecarbon measurement itself       {h['measure'] * 1e6:9.1f} us   ratio live_out/measure = "
        f"{h['send'] / h['measure']:.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
