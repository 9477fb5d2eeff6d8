"""NannyML side of the performance estimation benchmark, run by NannyML's own interpreter.

Reads reference.parquet, analysis.parquet (ordered by window, equal windows) and job.json
from the directory given as the only argument, runs NannyML's CBPE (classification) or
DLE (regression) with chunks of the window size, and writes nannyml.json there:
per window and metric the estimate and NannyML's alert, and seconds to fit and estimate.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

import pandas as pd

warnings.filterwarnings("ignore")

NAMES = {"auc": "roc_auc", "accuracy": "accuracy", "f1": "f1", "mae": "mae", "rmse": "rmse"}


def main() -> int:
    import nannyml as nml

    work = Path(sys.argv[1])
    job = json.loads((work / "job.json").read_text())
    ref = pd.read_parquet(work / "reference.parquet")
    ana = pd.read_parquet(work / "analysis.parquet")
    metrics = [NAMES[m] for m in job["metrics"]]
    if job["problem"] == "regression":
        est = nml.DLE(
            feature_column_names=job["features"],
            y_pred="y_pred",
            y_true="y_true",
            metrics=metrics,
            chunk_size=job["window_size"],
            tune_hyperparameters=False,
        )
    else:
        binary = job["problem"] == "binary"
        proba = job["proba_columns"][0] if binary else {c: col for c, col in enumerate(job["proba_columns"])}
        est = nml.CBPE(
            problem_type="classification_binary" if binary else "classification_multiclass",
            y_pred_proba=proba,
            y_pred="y_pred",
            y_true="y_true",
            metrics=metrics,
            chunk_size=job["window_size"],
        )
    t0 = time.perf_counter()
    est.fit(ref)
    t1, c1 = time.perf_counter(), time.process_time()
    result = est.estimate(ana.drop(columns=["y_true", "window"]))
    t2, c2 = time.perf_counter(), time.process_time()
    df = result.filter(period="analysis").to_df()
    out: dict = {
        "fit_s": t1 - t0,
        "estimate_s": t2 - t1,
        "estimate_cpu_s": c2 - c1,
        "windows": len(df),
        "metrics": {},
    }
    for ours, theirs in zip(job["metrics"], metrics, strict=True):
        out["metrics"][ours] = {
            "value": [float(v) for v in df[(theirs, "value")]],
            "alert": [bool(v) for v in df[(theirs, "alert")]],
        }
    (work / "nannyml.json").write_text(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
