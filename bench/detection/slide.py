"""bench/detection slide: a fleet of data monitors evaluated pass after pass as traffic arrives.

``COUNT`` monitors (one per model of a store made by ``bench.detection.drift``, 10k-row
reference, 10k-row sliding window, Bonferroni so no calibration runs) in process, one
sequential pass after each 10 s of traffic at 100 rows/s per model (5,000 rows/s in all,
appended through ``Store.append``). Prints the first pass, each steady pass, the bare
statistics of the last windows (``compare`` on ready columns) and writes every monitor's
verdicts to ``COPY-verdicts.json`` (to compare two versions of the code on the same store).

    python -m bench.detection.slide STORE COPY [COUNT] [PASSES]
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from bench.detection.drift import CATEGORICAL, NUMERIC, RATE, _detector, monitor_config
from detectors.drift.compare import compare
from detectors.drift.monitors.rows import ColumnarDataRows
from detectors.drift.monitors.windowed import compare_options
from mlvigil.core.records import RecordBatch
from mlvigil.core.store.duckdb import DuckDBStore

STEP_S = 10.0


def main(argv: list[str]) -> int:
    src, dst = Path(argv[0]), Path(argv[1])
    count = int(argv[2]) if len(argv) > 2 else 50
    n_passes = int(argv[3]) if len(argv) > 3 else 4
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    meta = json.loads((dst / "bench-meta.json").read_text())
    end, models = meta["end"], meta["models"]
    begin = end - meta["rows"] / RATE
    ref_end = begin + (end - begin) / 2
    store = DuckDBStore(dst)
    dets = [
        _detector(monitor_config(f"d{i}", f"m{i % models}", begin, ref_end) | {"correction": "bonferroni"})
        for i in range(count)
    ]
    rng = np.random.default_rng(0)

    def traffic(t0: float) -> None:
        batch = RecordBatch()
        for k in range(int(STEP_S * RATE)):
            feats: dict[str, object] = {f"n{j}": round(float(j + rng.normal()), 5) for j in range(NUMERIC)}
            feats.update({f"c{j}": f"v{int(rng.random() ** 2 * 8)}" for j in range(CATEGORICAL)})
            batch.add(
                "inferences",
                ts=t0 + k / RATE,
                service="bench",
                model=f"m{k % models}",
                features=json.dumps(feats),
                prediction="1",
            )
        store.append(batch)

    try:
        t0 = time.perf_counter()
        for det in dets:
            det.evaluate(store, end)
        print(f"first pass {time.perf_counter() - t0:.2f} s")
        now, passes, verdicts = end, [], []
        for _ in range(n_passes):
            traffic(now)
            now += STEP_S
            t0 = time.perf_counter()
            for det in dets:
                det.evaluate(store, now)
            passes.append(time.perf_counter() - t0)
            verdicts.append([(d.last.get("status"), d.last.get("report")) for d in dets])
        cols = []
        for det in dets:
            rows = ColumnarDataRows(det.config, det.reference).rows(store, until=now, last=10_000)
            cols.append(det.ctx.source.columns(rows, store))
        t0 = time.perf_counter()
        for det, c in zip(dets, cols, strict=True):
            compare(det.reference.model, c, compare_options(det.ctx))
        bare = time.perf_counter() - t0
        med = statistics.median(passes)
        print(
            f"steady passes {[round(p, 2) for p in passes]} s: median {med:.2f} s,"
            f" {med / count:.3f} s per monitor; bare statistics {bare / count:.3f} s per monitor"
            f" (ratio {med / bare:.2f}x)"
        )
        Path(str(dst) + "-verdicts.json").write_text(json.dumps(verdicts, default=str))
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
