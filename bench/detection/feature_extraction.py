"""bench/detection feature_extraction: a window's feature extraction alone, native vs SQL.

On a store made by ``bench.detection.drift`` (20 numeric + 5 categorical features), reads
one model's newest ROWS rows as a monitor does (``Store.feature_window`` with the numeric
and text feature names), alternately by mlvigil_native (native/feature-json) and by DuckDB's
json_extract SQL, REPEAT times each; prints the medians and checks both give the same values.

    python -m bench.detection.feature_extraction STORE [ROWS ...] [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.detection.drift import CATEGORICAL, NUMERIC
from mlvigil.core.store.duckdb import DuckDBStore, queries


def _same(a: Any, b: Any) -> bool:
    for x, y in zip(a, b, strict=True):
        if x.keys() != y.keys():
            return False
        for k in x:
            u, v = (
                np.ma.filled(np.ma.asarray(x[k]), None).tolist(),
                np.ma.filled(np.ma.asarray(y[k]), None).tolist(),
            )
            if [None if e != e else e for e in u] != [None if e != e else e for e in v]:
                return False
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.detection.feature_extraction", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("store", type=Path)
    ap.add_argument("rows", type=int, nargs="*", default=[1_000, 10_000])
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args(argv)
    native = queries.extract_features
    if native is None:
        raise SystemExit("mlvigil_native.extract_features is not importable: build native/ first")
    numeric = [f"n{j}" for j in range(NUMERIC)]
    text = [f"c{j}" for j in range(CATEGORICAL)]
    store = DuckDBStore(args.store)
    try:
        print(f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        for rows in args.rows:
            times: dict[str, list[float]] = {"native": [], "sql": []}
            results: dict[str, Any] = {}
            for _ in range(args.repeat):
                for name, fn in (("native", native), ("sql", None)):
                    queries.extract_features = fn
                    t0 = time.perf_counter()
                    results[name] = store.feature_window(
                        numeric=numeric, text=text, where={"model": "m1"}, last=rows
                    )
                    times[name].append(time.perf_counter() - t0)
            queries.extract_features = native
            same = _same(results["native"], results["sql"])
            n, s = statistics.median(times["native"]), statistics.median(times["sql"])
            print(
                f"{rows:>7,} rows x 25 features: SQL {s * 1e3:.1f} ms, native {n * 1e3:.1f} ms"
                f" ({s / n:.1f}x); same values: {same}"
            )
        print(f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
