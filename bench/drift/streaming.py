"""Streaming drift benchmark: mlvigil's sequential detectors vs alibi-detect and river, same data.

1. Online CVM on one feature: ``OnlineCVM`` vs alibi-detect's ``CVMDriftOnline``.
2. Online MMD on five features: ``OnlineMMD`` vs alibi-detect's ``MMDDriftOnline`` (pytorch).
3. Error streams (Bernoulli error rate 0.1 -> 0.3): ``ADWIN`` and ``PageHinkley`` vs river's.

For 1 and 2 the data is a smoothed bootstrap of scikit-learn's breast-cancer set (rows drawn
i.i.d. from the 569 standardised rows plus N(0, 0.1^2) jitter, so that the null is exactly
i.i.d. and continuous): the CVM stream is feature "mean area", the MMD stream five features
("mean radius", "mean texture", "mean smoothness", "mean symmetry", "mean fractal
dimension"). Reported per detector: calibration seconds, microseconds per update, the mean
run length between false alarms on no-change streams (and its ratio to the configured ERT),
and the median detection delay after a mean shift of 1 and 0.5 sd (on the one CVM feature;
on "mean radius" only for MMD). The run time given one reference sample varies a lot
(the detectors are calibrated on that sample), so run lengths pool several fresh reference
samples, each with its own calibration and null stream ("per ref": the range of the
per-reference ratios); delays use the detector calibrated on the first reference.

Conventions. Run lengths are counted as each detector's ERT is defined: from the step where
the window is first full (mlvigil, alibi CVM) or from the first update (alibi MMD, whose window
starts filled with reference rows); after every alarm the detector is reset. A delay is the
number of changed rows consumed up to and including the alarming one; each repeat feeds
``window`` unchanged rows first (alarms there are counted as false and the detector reset)
and gives up after ``max_post`` changed rows (a miss). Every process runs on one thread
(BLAS, numba, torch), so timings compare like with like on a shared machine.

    python -m bench.drift.streaming             # default run (about 1.5 minutes on 2 shared cores)
    python -m bench.drift.streaming --quick     # short run (about 25 seconds)
    python -m bench.drift.streaming --no-alibi  # mlvigil and river only

alibi-detect needs numpy < 2; when it does not import here, its side runs in the interpreter
named by ``ALIBI_PYTHON`` (default .venv-alibi/bin/python,
which scripts/test.sh builds) on the same data files
(see ``alibi_online_worker.py``). river runs in this interpreter.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterable, Mapping, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Protocol  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.drift.shifts import alibi_python  # noqa: E402

#: Breast-cancer columns: "mean area" for CVM; five weakly related features for MMD.
CVM_COLUMN = 3
MMD_COLUMNS = (0, 1, 4, 8, 9)
SHIFTS = (1.0, 0.5)


class Stepper(Protocol):
    """One observation at a time; ``reset`` forgets the window but keeps the calibration."""

    def update(self, x: Any) -> bool: ...

    def reset(self) -> None: ...


# --- measurement protocol (numpy only: the alibi worker imports these too) -------------------


def null_run_lengths(det: Stepper, stream: Sequence[Any], offset: int) -> tuple[list[int], float]:
    """Run lengths between alarms on a no-change stream, and microseconds per update.

    A run is counted from update ``offset + 1`` after a reset (``offset = window - 1`` for
    detectors whose ERT starts when the window is full); the unfinished last run is dropped."""
    lengths: list[int] = []
    n = 0
    t0 = time.perf_counter()
    for x in stream:
        n += 1
        if det.update(x):
            lengths.append(n - offset)
            det.reset()
            n = 0
    return lengths, (time.perf_counter() - t0) / max(len(stream), 1) * 1e6


def detection_delays(
    det: Stepper, streams: Iterable[Sequence[Any]], pre: int
) -> tuple[list[int | None], int]:
    """Per stream (``pre`` unchanged rows, then changed ones): changed rows consumed up to the
    alarm (None: missed), and the number of false alarms before the change."""
    delays: list[int | None] = []
    false_alarms = 0
    for stream in streams:
        det.reset()
        found: int | None = None
        for i, x in enumerate(stream):
            if det.update(x):
                if i < pre:
                    false_alarms += 1
                    det.reset()
                    continue
                found = i - pre + 1
                break
        delays.append(found)
    return delays, false_alarms


def rows(a: np.ndarray) -> list[Any]:
    """A stream as a list: floats for one feature, row vectors otherwise."""
    return a.tolist() if a.ndim == 1 else list(a)


def measure_online(
    name: str,
    make: Callable[[int], Stepper],
    nulls: Sequence[Sequence[Any]],
    delay_streams: Mapping[str, Sequence[Sequence[Any]]],
    pre: int,
    offset: int,
) -> dict[str, Any]:
    """A JSON-able record: per reference ``k`` (``make(k)`` calibrates on it, timed), run lengths
    on its own null stream ``nulls[k]``; delays with the detector of the first reference."""
    calib: list[float] = []
    lengths: list[list[int]] = []
    seconds, n_rows = 0.0, 0
    first: Stepper | None = None
    for k, null in enumerate(nulls):
        t0 = time.perf_counter()
        det = make(k)
        calib.append(time.perf_counter() - t0)
        first = det if first is None else first
        rl, us = null_run_lengths(det, null, offset)
        lengths.append(rl)
        seconds += us * len(null) / 1e6
        n_rows += len(null)
    assert first is not None
    delays: dict[str, list[int | None]] = {}
    pre_alarms: dict[str, int] = {}
    for shift, streams in delay_streams.items():
        delays[shift], pre_alarms[shift] = detection_delays(first, streams, pre)
    return {
        "name": name,
        "calib_s": float(np.mean(calib)),
        "us_per_update": seconds / n_rows * 1e6,
        "run_lengths": lengths,
        "delays": delays,
        "pre_alarms": pre_alarms,
    }


# --- data --------------------------------------------------------------------------------------


def smoothed_bootstrap(columns: Sequence[int], seed: int) -> Callable[[int], np.ndarray]:
    """Sampler of rows (n x len(columns)) from the standardised breast-cancer rows plus jitter."""
    from sklearn.datasets import load_breast_cancer

    x = load_breast_cancer().data[:, list(columns)].astype(np.float64)
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    rng = np.random.default_rng(seed)

    def draw(n: int) -> np.ndarray:
        picked = x[rng.integers(0, x.shape[0], size=n)]
        return picked + rng.normal(scale=0.1, size=picked.shape)

    return draw


def make_data(
    cfg: dict[str, Any], draw: Callable[[int], np.ndarray], univariate: bool
) -> dict[str, np.ndarray]:
    """``references`` reference samples and null streams, and per shift ``reps`` delay streams
    (``window`` unchanged rows, then ``max_post`` shifted ones)."""
    sd = float(np.std(draw(20_000)[:, 0]))
    n_ref = cfg["references"]
    out = {
        "reference": np.stack([draw(cfg["n_reference"]) for _ in range(n_ref)]),
        "null": np.stack([draw(cfg["null_rows"]) for _ in range(n_ref)]),
    }
    pre, post = cfg["window"], cfg["max_post"]
    for shift in SHIFTS:
        streams = np.stack([draw(pre + post) for _ in range(cfg["reps"])])
        streams[:, pre:, 0] += shift * sd
        out[f"delay_{shift}"] = streams
    if univariate:
        out = {k: v[..., 0] for k, v in out.items()}
    return out


def delay_sets(data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {str(s): data[f"delay_{s}"] for s in SHIFTS}


# --- mlvigil side --------------------------------------------------------------------------------


def run_ours(
    kind: str, cfg: dict[str, Any], data: dict[str, np.ndarray], strides: Sequence[int]
) -> list[dict[str, Any]]:
    from detectors.drift.streaming import OnlineCVM, OnlineMMD

    cls = OnlineCVM if kind == "cvm" else OnlineMMD
    out = []
    for stride in strides:
        ert_steps = cfg["ert"] / stride

        def make(k: int, stride: int = stride, ert_steps: float = ert_steps) -> Stepper:
            return cls(
                data["reference"][k],
                window_size=cfg["window"],
                ert=ert_steps,
                n_bootstraps=cfg["n_bootstraps"],
                stride=stride,
            )

        name = f"mlvigil {cls.__name__} stride={stride}" + (
            f" (ert {ert_steps:g} steps)" if stride > 1 else ""
        )
        delays = {k: [rows(s) for s in v] for k, v in delay_sets(data).items()}
        nulls = [rows(n) for n in data["null"]]
        out.append(measure_online(name, make, nulls, delays, cfg["window"], cfg["window"] - 1))
    return out


# --- alibi side ----------------------------------------------------------------------------------


def run_alibi(
    cvm: tuple[dict[str, Any], dict[str, np.ndarray]],
    mmd: tuple[dict[str, Any], dict[str, np.ndarray]],
) -> dict[str, Any] | None:
    python = alibi_python()
    if python is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        for name, arrays in (("cvm", cvm[1]), ("mmd", mmd[1])):
            payload: dict[str, Any] = dict(arrays)
            np.savez(base / f"{name}.npz", **payload)
        (base / "job.json").write_text(json.dumps({"cvm": cvm[0], "mmd": mmd[0], "shifts": list(SHIFTS)}))
        t0 = time.perf_counter()
        proc = subprocess.run(
            [python, str(Path(__file__).with_name("alibi_online_worker.py")), str(base)],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        if proc.returncode != 0:
            print("alibi-detect worker failed:\n" + proc.stderr[-3000:], file=sys.stderr)
            return None
        result: dict[str, Any] = json.loads((base / "out.json").read_text())
        result["wall_s"] = time.perf_counter() - t0
        return result


# --- error streams (river in this interpreter) ---------------------------------------------------


class _River:
    def __init__(self, det: Any) -> None:
        self.det = det

    def update(self, x: float) -> bool:
        self.det.update(x)
        return bool(self.det.drift_detected)


def run_error_streams(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    from river import drift

    from detectors.drift.streaming import ADWIN, PageHinkley

    rng = np.random.default_rng(7)
    clean = (rng.random(cfg["clean_rows"]) < 0.1).astype(np.float64).tolist()
    pre, post = cfg["pre"], cfg["max_post"]
    streams = [
        np.r_[rng.random(pre) < 0.1, rng.random(post) < 0.3].astype(np.float64).tolist()
        for _ in range(cfg["reps"])
    ]
    ph: dict[str, Any] = {"delta": 0.005, "threshold": 50.0, "min_instances": 30, "alpha": 1.0}
    makers: list[tuple[str, str, Callable[[], Any]]] = [
        ("ADWIN", "mlvigil ADWIN(delta=0.002)", lambda: ADWIN(delta=0.002)),
        ("ADWIN", "river ADWIN(delta=0.002)", lambda: _River(drift.ADWIN(delta=0.002))),
        ("PageHinkley", "mlvigil PageHinkley", lambda: PageHinkley(**ph)),
        ("PageHinkley", "river PageHinkley(mode=up)", lambda: _River(drift.PageHinkley(**ph, mode="up"))),
    ]
    out = []
    for kind, name, make in makers:
        det = make()
        t0 = time.perf_counter()
        false_alarms = sum(1 for x in clean if det.update(x))
        us = (time.perf_counter() - t0) / len(clean) * 1e6
        delays: list[int | None] = []
        pre_alarms = 0
        for s in streams:
            det = make()  # fresh per repeat: ADWIN has no reset
            found: int | None = None
            for i, x in enumerate(s):
                if det.update(x):
                    if i < pre:
                        pre_alarms += 1
                        continue
                    found = i - pre + 1
                    break
            delays.append(found)
        out.append(
            {
                "kind": kind,
                "name": name,
                "false_alarms": false_alarms,
                "us_per_update": us,
                "delays": delays,
                "pre": pre_alarms,
            }
        )
    return out


# --- report --------------------------------------------------------------------------------------


def median_delay(delays: Sequence[int | None]) -> float:
    """Median with misses counted as infinitely late."""
    return float(np.median([np.inf if d is None else d for d in delays])) if delays else np.nan


def fmt_delay(delays: Sequence[int | None]) -> str:
    m = median_delay(delays)
    hit = sum(d is not None for d in delays)
    return f"{'miss' if np.isinf(m) else f'{m:.0f}'} ({hit}/{len(delays)})"


def speed(ours: float, theirs: float) -> str:
    r = theirs / ours
    return f"{r:.1f}x faster" if r >= 1 else f"{1 / r:.1f}x slower"


def print_online(title: str, ert: int, records: list[dict[str, Any]], peer: str | None) -> None:
    print(title)
    header = (
        f"  {'detector':44} {'calib s':>8} {'us/update':>10} {'alarms':>6} {'mean RL':>8} {'RL/ERT':>7}"
        f" {'per ref':>11}" + "".join(f" {f'delay {s:g}sd':>13}" for s in SHIFTS) + f" {'pre-change FA':>13}"
    )
    print(header)
    print("  " + "-" * (len(header) - 2))
    for r in records:
        rl = np.asarray([x for per in r["run_lengths"] for x in per], dtype=np.float64)
        mean = float(rl.mean()) if rl.size else np.nan
        per_ref = [np.mean(per) / ert for per in r["run_lengths"] if per]
        spread = f"{min(per_ref):.2f}-{max(per_ref):.2f}" if per_ref else "-"
        print(
            f"  {r['name'][:44]:44} {r['calib_s']:8.2f} {r['us_per_update']:10.1f} {rl.size:6d} {mean:8.1f}"
            f" {mean / ert:7.2f} {spread:>11}"
            + "".join(f" {fmt_delay(r['delays'][str(s)]):>13}" for s in SHIFTS)
            + f" {sum(r['pre_alarms'].values()):13d}"
        )
    base = records[0]
    other = next((r for r in records if r["name"] == peer), None)
    if other is None:
        print("  (no alibi-detect figures)")
        return
    ratios = ", ".join(
        f"{s:g} sd {median_delay(base['delays'][str(s)]) / median_delay(other['delays'][str(s)]):.2f}"
        for s in SHIFTS
    )
    print(
        f"  mlvigil (stride 1) is {speed(base['calib_s'], other['calib_s'])} to calibrate and "
        f"{speed(base['us_per_update'], other['us_per_update'])} per update than {other['name']}"
    )
    print(f"  median delay ratio mlvigil/{other['name']}: {ratios}")


def print_errors(cfg: dict[str, Any], records: list[dict[str, Any]]) -> None:
    print(
        f"Error streams: Bernoulli error rate 0.1 -> 0.3; false alarms on {cfg['clean_rows']} clean rows; "
        f"delays over {cfg['reps']} repeats ({cfg['pre']} clean rows, then up to {cfg['max_post']} at 0.3)"
    )
    header = (
        f"  {'detector':34} {'false alarms':>12} {'us/update':>10} {'median delay':>14} {'pre-change FA':>13}"
    )
    print(header)
    print("  " + "-" * (len(header) - 2))
    for r in records:
        delay = fmt_delay(r["delays"])
        print(
            f"  {r['name']:34} {r['false_alarms']:12d} {r['us_per_update']:10.2f} {delay:>14} {r['pre']:13d}"
        )
    for kind in ("ADWIN", "PageHinkley"):
        ours, theirs = (r for r in records if r["kind"] == kind)
        ratio = median_delay(ours["delays"]) / median_delay(theirs["delays"])
        print(
            f"  {kind}: mlvigil is {speed(ours['us_per_update'], theirs['us_per_update'])} per update than "
            f"river; median delay ratio mlvigil/river {ratio:.2f}"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short run: smaller ERT, fewer rows and repeats")
    ap.add_argument("--no-alibi", action="store_true", help="leave alibi-detect out")
    args = ap.parse_args(argv)
    q = args.quick
    t_start = time.perf_counter()
    ert = 100 if q else 200
    # ERT in rows; null rows per reference; the run-length figures pool `references` fresh
    # reference samples (each detector calibrated on each), as run time given one reference varies.
    cvm_cfg = {
        "ert": ert,
        "window": 50,
        "n_reference": 1000,
        "n_bootstraps": 10 * ert,
        "references": 2 if q else 4,
        "null_rows": 2500 if q else 8000,
        "reps": 6 if q else 20,
        "max_post": 600,
    }
    mmd_cfg = {**cvm_cfg, "window": 30, "null_rows": 2000 if q else 6000}
    err_cfg = {"clean_rows": 20_000 if q else 100_000, "reps": 6 if q else 20, "pre": 2000, "max_post": 5000}
    cvm_data = make_data(cvm_cfg, smoothed_bootstrap([CVM_COLUMN], seed=1), univariate=True)
    mmd_data = make_data(mmd_cfg, smoothed_bootstrap(MMD_COLUMNS, seed=2), univariate=False)

    t0 = time.perf_counter()
    cvm = run_ours("cvm", cvm_cfg, cvm_data, strides=(1, 5))
    mmd = run_ours("mmd", mmd_cfg, mmd_data, strides=(1, 5))
    t_ours = time.perf_counter() - t0
    alibi = None if args.no_alibi else run_alibi((cvm_cfg, cvm_data), (mmd_cfg, mmd_data))
    if alibi:
        cvm.append(alibi["cvm"])
        mmd.append(alibi["mmd"])
    t0 = time.perf_counter()
    errors = run_error_streams(err_cfg)
    t_err = time.perf_counter() - t0

    data_note = "smoothed bootstrap of sklearn breast-cancer (standardised, +N(0, 0.1^2) jitter)"
    print_online(
        f"Online CVM: feature 'mean area', {data_note}\n"
        f"  reference {cvm_cfg['n_reference']} rows, window {cvm_cfg['window']}, ERT {ert} rows, "
        f"{cvm_cfg['n_bootstraps']} bootstraps (both);\n  run lengths over {cvm_cfg['references']} "
        f"references x {cvm_cfg['null_rows']} null rows; "
        f"delays over {cvm_cfg['reps']} repeats, shift on the feature",
        ert,
        cvm,
        "alibi CVMDriftOnline",
    )
    print()
    print_online(
        f"Online MMD: 5 features, {data_note}\n"
        f"  reference {mmd_cfg['n_reference']} rows, window {mmd_cfg['window']}, ERT {ert} rows, "
        f"{mmd_cfg['n_bootstraps']} bootstraps (both; mlvigil 128 random Fourier features, alibi exact "
        f"Gaussian kernel, both median-heuristic bandwidth);\n  run lengths over {mmd_cfg['references']} "
        f"references x {mmd_cfg['null_rows']} null rows; "
        f"delays over {mmd_cfg['reps']} repeats, shift on 'mean radius' only",
        ert,
        mmd,
        "alibi MMDDriftOnline(pytorch)",
    )
    print()
    print_errors(err_cfg, errors)
    print()
    print(
        f"wall: mlvigil online {t_ours:.1f}s, alibi worker "
        f"{alibi['wall_s'] if alibi else 0.0:.1f}s (incl. imports), error streams {t_err:.1f}s, "
        f"total {time.perf_counter() - t_start:.1f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
