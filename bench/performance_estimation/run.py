"""Performance estimation benchmark: mlvigil (CBPE, PAPE, DLE) vs NannyML 0.13 on the same windows.

    PYTHONPATH=. python -m bench.performance_estimation [--nannyml /tmp/nannyml-venv/bin/python]

For each dataset (see datasets.py) and metric: the mean absolute error between the
estimated and the realised metric over the analysis windows, alarms before the known
change (false alarms) and after it with the delay to the first (in windows), and seconds
per window to estimate (fit excluded, shown apart), for mlvigil and, when its interpreter
is given, NannyML in the same run; then the ratios. NannyML runs in its own virtual
environment (its pins differ):
``python3 -m venv /tmp/nannyml-venv && /tmp/nannyml-venv/bin/pip install 'nannyml==0.13.*' statsmodels``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from bench.performance_estimation.datasets import Case, cases
from detectors.estimation import CBPE, DLE, PAPE, PerformanceEstimator, Sample


def _sample(case: Case, df: Any, labels: bool) -> Sample:
    proba = df[case.proba_columns].to_numpy(float) if case.proba_columns else None
    if proba is not None and proba.shape[1] == 1:
        proba = proba[:, 0]
    return Sample(
        scores=proba,
        predictions=df["y_pred"].to_numpy(float if case.problem == "regression" else int),
        labels=df["y_true"].to_numpy(float if case.problem == "regression" else int) if labels else None,
        features=df[case.features].to_numpy(float),
    )


def _windows(sample: Sample, window_of: np.ndarray) -> Iterator[Sample]:
    """Each window's rows of ``sample``, in window order: views of one run of rows where the
    rows come window by window (every case here), else copies picked out by their window."""
    ordered = np.unique(window_of)
    if np.all(window_of[1:] >= window_of[:-1]):
        bounds = np.r_[np.searchsorted(window_of, ordered), window_of.size]
        for start, stop in pairwise(bounds):
            yield sample.take(slice(int(start), int(stop)))
        return
    for w in ordered:
        yield sample.take(np.flatnonzero(window_of == w))


def _estimators(case: Case) -> dict[str, PerformanceEstimator]:
    if case.problem == "regression":
        return {"dle": DLE(case.metrics), "dle_shift_robust": DLE(case.metrics, shift_robust=True)}
    return {"cbpe": CBPE(case.metrics), "pape": PAPE(case.metrics)}


def run_mlvigil(case: Case) -> dict[str, Any]:
    ref = _sample(case, case.reference, labels=True)
    windows = [g for _, g in case.analysis.groupby("window", sort=True)]
    out: dict[str, Any] = {}
    for name, est in _estimators(case).items():
        t0 = time.perf_counter()
        est.fit(ref, window_size=case.window_size)
        fit_s = time.perf_counter() - t0
        values: dict[str, list[float]] = {m: [] for m in case.metrics}
        alarms: dict[str, list[bool]] = {m: [] for m in case.metrics}
        # Timed from the same data frame NannyML gets: converted to arrays once (mlvigil's
        # estimators take arrays, as the service holds rows), then split into windows (views of
        # one run of rows each, where the rows come window by window).
        t0 = time.perf_counter()
        analysis = _sample(case, case.analysis, labels=False)
        for window in _windows(analysis, case.analysis["window"].to_numpy()):
            for e in est.estimate(window):
                values[e.metric].append(e.value)
                alarms[e.metric].append(e.alarm)
        per_window = (time.perf_counter() - t0) / len(windows)
        out[name] = {"fit_s": fit_s, "per_window_s": per_window, "value": values, "alert": alarms}
    realised_by = next(iter(_estimators(case).values())).fit(ref)
    out["realised"] = {m: [] for m in case.metrics}
    for w in windows:
        got = realised_by._realised(_sample(case, w, labels=True))
        for m in case.metrics:
            out["realised"][m].append(got[m])
    return out


#: The live monitor's default window slides: each evaluation sees the latest rows, most of
#: them already in the window before. Evaluations per sliding measurement, and the share
#: of new rows in each.
SLIDES = 10
SLIDE_NEW = 0.1


def run_sliding(case: Case) -> float:
    """Seconds per evaluation of the plain estimator (CBPE or DLE) on a window of the case's
    size that moves on by ``SLIDE_NEW`` of its rows each time (the first evaluation, of a
    window all new, not counted)."""
    est = next(iter(_estimators(case).values())).fit(
        _sample(case, case.reference, labels=True), window_size=case.window_size
    )
    analysis = _sample(case, case.analysis, labels=False)
    step = max(int(case.window_size * SLIDE_NEW), 1)
    starts = [i * step for i in range(SLIDES + 1) if i * step + case.window_size <= len(analysis)]
    est.estimate(analysis.take(np.arange(starts[0], starts[0] + case.window_size)))
    t0 = time.perf_counter()
    for start in starts[1:]:
        est.estimate(analysis.take(np.arange(start, start + case.window_size)))
    return (time.perf_counter() - t0) / max(len(starts) - 1, 1)


def run_nannyml(case: Case, python: str) -> dict[str, Any] | str:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        case.reference.to_parquet(work / "reference.parquet")
        case.analysis.sort_values("window", kind="stable").to_parquet(work / "analysis.parquet")
        job = {
            "problem": case.problem,
            "metrics": case.metrics,
            "features": case.features,
            "proba_columns": case.proba_columns,
            "window_size": case.window_size,
        }
        (work / "job.json").write_text(json.dumps(job))
        side = Path(__file__).with_name("nannyml_side.py")
        done = subprocess.run([python, str(side), str(work)], capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            return f"NannyML failed: {done.stderr.strip().splitlines()[-1:] or done.returncode}"
        result: dict[str, Any] = json.loads((work / "nannyml.json").read_text())
        result["per_window_s"] = result["estimate_s"] / max(result["windows"], 1)
        # CPU seconds over all the side process's threads (LightGBM's OpenMP ones too).
        result["per_window_cpu_s"] = result.get("estimate_cpu_s", float("nan")) / max(result["windows"], 1)
        return result


def _mae(est: list[float], real: list[float]) -> float:
    e, r = np.asarray(est, float), np.asarray(real, float)
    ok = ~(np.isnan(e) | np.isnan(r))
    return float(np.mean(np.abs(e[ok] - r[ok]))) if ok.any() else float("nan")


def _alarms(alert: list[bool], change_at: int | None) -> str:
    """False alarms before the change | alarms after it, and the delay to the first one (windows)."""
    if change_at is None:
        return f"{sum(alert)}/{len(alert)}"
    after = alert[change_at:]
    delay = f"+{after.index(True)}" if True in after else "-"
    return f"{sum(alert[:change_at])}/{change_at} | {sum(after)}/{len(after)} {delay}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nannyml", help="python of a virtual environment with nannyml 0.13 (optional)")
    parser.add_argument("--out", type=Path, help="write all per-window results as JSON here")
    args = parser.parse_args(argv)
    report: dict[str, Any] = {}
    print(
        f"{'dataset':14} {'metric':8} {'estimator':17} {'MAE':>8} {'NannyML':>8} {'ratio':>6} "
        f"{'s/window':>9} {'NannyML':>9} {'speedup':>8}  "
        "alarms: false | after change, delay (mlvigil; NannyML)"
    )
    sliding: list[str] = []
    for case in cases(args.nannyml):
        ours = run_mlvigil(case)
        slide_s = run_sliding(case)
        theirs = run_nannyml(case, args.nannyml) if args.nannyml else "not run (no --nannyml)"
        report[case.name] = {
            "mlvigil": ours,
            "nannyml": theirs,
            "window_size": case.window_size,
            "sliding_per_window_s": slide_s,
        }
        real = ours["realised"]
        for name in (k for k in ours if k != "realised"):
            for m in case.metrics:
                mae = _mae(ours[name]["value"][m], real[m])
                line = f"{case.name:14} {m:8} {name:17} {mae:8.4f}"
                if isinstance(theirs, dict):
                    nm = _mae(theirs["metrics"][m]["value"], real[m])
                    speed = theirs["per_window_s"] / ours[name]["per_window_s"]
                    ratio = mae / nm if nm else float("nan")
                    line += (
                        f" {nm:8.4f} {ratio:6.2f} {ours[name]['per_window_s']:9.4f}"
                        f" {theirs['per_window_s']:9.4f} {speed:7.1f}x  "
                        f"{_alarms(ours[name]['alert'][m], case.change_at)}; "
                        f"{_alarms(theirs['metrics'][m]['alert'], case.change_at)}"
                    )
                else:
                    line += (
                        f" {'-':>8} {'-':>6} {ours[name]['per_window_s']:9.4f} {'-':>9} {'-':>8}  "
                        f"{_alarms(ours[name]['alert'][m], case.change_at)}"
                    )
                print(line, flush=True)
        if isinstance(theirs, str):
            print(f"{case.name:14} NannyML: {theirs}")
        plain = next(iter(_estimators(case)))
        line = f"{case.name:14} {plain:5} {slide_s:9.4f} {ours[plain]['per_window_s']:9.4f}"
        if isinstance(theirs, dict):
            speed = theirs["per_window_s"] / slide_s
            line += f" {theirs['per_window_s']:9.4f} {speed:7.1f}x"
        sliding.append(line)
    print(
        f"\nSliding windows (each evaluation {SLIDE_NEW:.0%} new rows, as the live monitor's default "
        "window mode): s per evaluation, mlvigil's disjoint windows and NannyML's (which has no "
        "sliding mode: each window costs it the same) beside it"
    )
    print(f"{'dataset':14} {'estimator':5} {'sliding':>9} {'disjoint':>9} {'NannyML':>9} {'ratio':>8}")
    for line in sliding:
        print(line)
    if args.out:
        args.out.write_text(json.dumps(report, indent=1, default=float))
    return 0
