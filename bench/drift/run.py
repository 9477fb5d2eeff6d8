"""Drift benchmark: mlvigil vs alibi-detect, Evidently and a plain scipy baseline, one run, same data.

Power at a matched 5% false-positive rate (thresholds set on windows with no shift, so every
method alarms on exactly 5% of them) over injected shifts at several window sizes, on data
that ships inside packages (scikit-learn's breast-cancer set, river's Agrawal stream); then
seconds per window at 10k rows x 50 features.

    python -m bench.drift            # default run (about a minute)
    python -m bench.drift --full     # more windows, MMD and Evidently in the power part too
    python -m bench.drift --full --no-alibi --null-windows 40 --shift-windows 15
                                     # Evidently's power on fewer windows (about 2 s a window)
    python -m bench.drift --full --no-alibi --datasets breast_cancer --shifts subgroup_shift --sizes 500
                                     # one cell with more windows

alibi-detect needs numpy < 2 (numba); when it does not import here, its side runs in the
interpreter named by ``ALIBI_PYTHON`` (default .venv-alibi/bin/python, which
scripts/test.sh builds) on the same data files.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from shifts import alibi_python, materialise, power_at_matched_fpr, window_specs  # noqa: E402

from detectors.drift.compare import CompareOptions, compare  # noqa: E402
from detectors.drift.profile import ReferenceProfile  # noqa: E402

warnings.filterwarnings("ignore")

AGRAWAL_REFERENCE, AGRAWAL_POOL = 4000, 100_000


def load_datasets() -> list[dict[str, Any]]:
    from sklearn.datasets import load_breast_cancer

    out = []
    # 569 rows: the dataset is the population. Reference and windows are both drawn from
    # it, so a window with no injected shift is a true null sample. (Splitting it in two
    # halves instead made 500- and 1000-row windows bootstrap copies of a 285-row half whose
    # own sampling noise every test then saw as drift in "no shift" windows.)
    x = load_breast_cancer().data.astype(np.float64)
    out.append(
        {
            "name": "breast_cancer",
            "reference": x,
            "pool": x,
            "numeric": list(range(x.shape[1])),
            "categorical": [],
            "shifts": ["mean_shift", "variance_change", "missing_values", "subgroup_shift"],
        }
    )
    from river.datasets import synth

    # Windows come from a pool 25x the reference: drawn from a pool the reference's size,
    # every window shared that one sample's deviation from the generator's distribution, so
    # "no shift" windows truly differed from the reference and the most sensitive tests were
    # charged with false alarms for seeing it.
    rows = [
        list(xd.values())
        for xd, _ in synth.Agrawal(classification_function=0, seed=42).take(AGRAWAL_REFERENCE + AGRAWAL_POOL)
    ]
    names = list(next(iter(synth.Agrawal(seed=42).take(1)))[0].keys())
    a = np.asarray(rows, dtype=np.float64)
    categorical = [names.index(c) for c in ("elevel", "car", "zipcode")]
    numeric = [j for j in range(a.shape[1]) if j not in categorical]
    out.append(
        {
            "name": "agrawal",
            "reference": a[:AGRAWAL_REFERENCE],
            "pool": a[AGRAWAL_REFERENCE:],
            "numeric": numeric,
            "categorical": categorical,
            "shifts": ["mean_shift", "variance_change", "category_mix", "missing_values", "subgroup_shift"],
        }
    )
    return out


class Mlvigil:
    name = "mlvigil"

    def __init__(self, ref: np.ndarray, categorical: list[int]) -> None:
        cols = {f"c{j}": ref[:, j] for j in range(ref.shape[1])}
        self.profile = ReferenceProfile.from_columns(
            cols, kinds={f"c{j}": "categorical" for j in categorical}
        )

    def score(self, x: np.ndarray) -> float:
        report = compare(self.profile, {f"c{j}": x[:, j] for j in range(x.shape[1])}, CompareOptions())
        return 1.0 if report.p_value is None else report.p_value


class Scipy:
    """Plain baseline: scipy's KS test per feature (chi-squared for categories), smallest p-value."""

    name = "scipy ks/chi2"

    def __init__(self, ref: np.ndarray, categorical: list[int]) -> None:
        self.ref, self.categorical = ref, set(categorical)

    def score(self, x: np.ndarray) -> float:
        from scipy.stats import chi2_contingency, ks_2samp

        ps = []
        for j in range(x.shape[1]):
            a, b = self.ref[:, j], x[:, j]
            a, b = a[~np.isnan(a)], b[~np.isnan(b)]
            if j in self.categorical:
                cats = np.union1d(a, b)
                table = np.array([[np.sum(a == c) for c in cats], [np.sum(b == c) for c in cats]])
                ps.append(chi2_contingency(table)[1])
            else:
                ps.append(ks_2samp(a, b).pvalue)
        return float(np.min(ps))


class Evidently:
    """Evidently's DataDriftPreset; its score is the share of drifted columns (ties randomised)."""

    name = "evidently DataDriftPreset"

    def __init__(self, ref: np.ndarray, categorical: list[int]) -> None:
        self.categorical = set(categorical)
        self.ref = self._frame(ref)

    def _frame(self, x: np.ndarray) -> Any:
        import pandas as pd

        return pd.DataFrame(
            {f"c{j}": (x[:, j].astype(str) if j in self.categorical else x[:, j]) for j in range(x.shape[1])}
        )

    def score(self, x: np.ndarray) -> float:
        from evidently import Report
        from evidently.presets import DataDriftPreset

        snap = Report([DataDriftPreset()]).run(current_data=self._frame(x), reference_data=self.ref)
        share = snap.dict()["metrics"][0]["value"]["share"]
        return 1.0 - float(share)


def run_alibi(datasets: list[dict[str, Any]], specs: dict[str, list], mmd: bool) -> dict[str, Any] | None:
    python = alibi_python()
    if python is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "data"
        job: dict[str, Any] = {"mmd": mmd, "datasets": []}
        for ds in datasets:
            scale = np.nanstd(ds["reference"], axis=0)
            np.savez(f"{base}_{ds['name']}.npz", reference=ds["reference"], pool=ds["pool"], scale=scale)
            job["datasets"].append(
                {
                    "name": ds["name"],
                    "numeric": ds["numeric"],
                    "categorical": ds["categorical"],
                    "specs": specs[ds["name"]],
                }
            )
        (Path(tmp) / "job.json").write_text(json.dumps(job))
        out = Path(tmp) / "out.json"
        proc = subprocess.run(
            [
                python,
                str(Path(__file__).with_name("alibi_worker.py")),
                str(base),
                str(Path(tmp) / "job.json"),
                str(out),
            ],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            print("alibi-detect worker failed:\n" + proc.stderr[-2000:], file=sys.stderr)
            return None
        return json.loads(out.read_text())


def timing(evidently: bool) -> dict[str, float]:
    rng = np.random.default_rng(0)
    ref, cur = rng.normal(size=(10_000, 50)), rng.normal(size=(10_000, 50))
    out: dict[str, float] = {}
    methods: list[Any] = [Mlvigil(ref, []), Scipy(ref, [])]
    if evidently:
        methods.append(Evidently(ref, []))
    for m in methods:
        t0 = time.perf_counter()
        m.score(cur)
        if isinstance(m, Mlvigil):
            # The first window also resamples min-P's null from the reference (once per size).
            out["mlvigil (min-P calibration, once)"] = time.perf_counter() - t0
        reps = 1 if isinstance(m, Evidently) else 5
        t0 = time.perf_counter()
        for _ in range(reps):
            m.score(cur)
        out[m.name] = (time.perf_counter() - t0) / reps
    t0 = time.perf_counter()
    Mlvigil(ref, [])
    out["mlvigil (reference profile, once)"] = time.perf_counter() - t0
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="more windows; MMD and Evidently in the power part")
    ap.add_argument("--no-evidently", action="store_true", help="leave Evidently out entirely")
    ap.add_argument("--no-alibi", action="store_true", help="leave alibi-detect out")
    ap.add_argument("--sizes", default="100,500,1000", help="window sizes (rows), comma-separated")
    ap.add_argument("--null-windows", type=int, help="null windows per size (default 60; 200 --full)")
    ap.add_argument("--shift-windows", type=int, help="windows per shift and size (default 20; 50 --full)")
    ap.add_argument("--datasets", help="only these datasets (breast_cancer, agrawal), comma-separated")
    ap.add_argument("--shifts", help="only these shifts, comma-separated (e.g. subgroup_shift)")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    null_w, shift_w = (200, 50) if args.full else (60, 20)
    null_w, shift_w = args.null_windows or null_w, args.shift_windows or shift_w
    datasets = load_datasets()
    if args.datasets:
        datasets = [ds for ds in datasets if ds["name"] in args.datasets.split(",")]
    if args.shifts:
        for ds in datasets:
            ds["shifts"] = [s for s in ds["shifts"] if s in args.shifts.split(",")]
    specs = {
        ds["name"]: window_specs(ds["pool"].shape[0], sizes, null_w, shift_w, ["none", *ds["shifts"]], seed=1)
        for ds in datasets
    }
    t_start = time.perf_counter()
    alibi = None if args.no_alibi else run_alibi(datasets, specs, mmd=args.full)
    scores: dict[str, dict[str, list[float]]] = {}
    for ds in datasets:
        scale = np.nanstd(ds["reference"], axis=0)
        methods: list[Any] = [
            Mlvigil(ds["reference"], ds["categorical"]),
            Scipy(ds["reference"], ds["categorical"]),
        ]
        if args.full and not args.no_evidently:
            methods.append(Evidently(ds["reference"], ds["categorical"]))
        per: dict[str, list[float]] = {m.name: [] for m in methods}
        for spec in specs[ds["name"]]:
            x = materialise(ds["pool"], spec, ds["numeric"], ds["categorical"], scale)
            for m in methods:
                per[m.name].append(m.score(x))
        if alibi:
            per.update(alibi["scores"].get(ds["name"], {}))
        scores[ds["name"]] = per

    print("Detection power at a matched 5% false-positive rate")
    names = list(next(iter(scores.values())).keys())
    header = f"{'dataset':14} {'shift':16} {'size':>5}  " + "  ".join(f"{n[:22]:>22}" for n in names)
    print(header)
    print("-" * len(header))
    worst_margin = np.inf
    for ds in datasets:
        sc = scores[ds["name"]]
        sp = specs[ds["name"]]
        for size in sizes:
            null_idx = [i for i, s in enumerate(sp) if s["size"] == size and s["shift"] == "none"]
            for shift in ds["shifts"]:
                idx = [i for i, s in enumerate(sp) if s["size"] == size and s["shift"] == shift]
                powers = {
                    n: power_at_matched_fpr([sc[n][i] for i in null_idx], [sc[n][i] for i in idx])
                    for n in names
                }
                peers = [v for n, v in powers.items() if n != "mlvigil"]
                if peers:
                    worst_margin = min(worst_margin, powers["mlvigil"] - max(peers))
                print(
                    f"{ds['name']:14} {shift:16} {size:>5}  "
                    + "  ".join(f"{powers[n]:>22.2f}" for n in names)
                )
    print(f"\nworst (mlvigil power - best peer power) over all cells: {worst_margin:+.2f}")
    print(f"power part: {time.perf_counter() - t_start:.1f}s")

    print("\nSeconds per window, 10k rows x 50 features (reference 10k rows)")
    t = timing(evidently=not args.no_evidently)
    if alibi:
        t.update(alibi["timing"])
    base = t["mlvigil"]
    for name, secs in t.items():
        ratio = "" if name.startswith("mlvigil") else f"   mlvigil is {secs / base:.1f}x faster"
        print(f"  {name:36} {secs:8.4f}s{ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
