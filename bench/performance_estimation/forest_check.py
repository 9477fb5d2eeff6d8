"""DLE with its trees applied by mlvigil_native's Forest vs by LightGBM's predictor, same run.

    PYTHONPATH=. python -m bench.performance_estimation.forest_check --nannyml /tmp/nannyml-venv/bin/python

One DLE fitted per regression case; its disjoint windows estimated with Forest (a thread
per core, as DLE runs it: both loss models in one native call), with Forest on one
thread, then with the same models' ``native`` set to None (LightGBM's predictor on one
thread, everything else the same), three passes each, best kept; NannyML's DLE on the
same windows beside them (with --nannyml; car_price needs it for its data; its LightGBM
uses OpenMP threads on every core). Prints wall and CPU
seconds per window (CPU: all the process's threads) and whether the estimates are identical.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from bench.performance_estimation.datasets import Case, _nannyml_case, nannyml_data_dir, sklearn_case
from bench.performance_estimation.run import _sample, run_nannyml
from detectors.estimation import DLE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nannyml", help="python of a virtual environment with nannyml 0.13 (optional)")
    parser.add_argument("--passes", type=int, default=3)
    args = parser.parse_args(argv)
    cases: list[Case] = [sklearn_case("diabetes")]
    data = nannyml_data_dir(args.nannyml) if args.nannyml else None
    if data is not None:
        cases.insert(0, _nannyml_case("car_price", data))
    modes = ("forest", "forest_1", "lightgbm")
    print(f"{os.cpu_count()} cores; s per window, wall / CPU (all threads); best of {args.passes} passes")
    print(
        f"{'dataset':10} {'Forest':>15} {'Forest 1 thread':>15} {'LightGBM':>15} {'NannyML':>15}"
        "  Forest vs NannyML, wall / CPU   identical"
    )
    for case in cases:
        est = DLE(case.metrics).fit(_sample(case, case.reference, labels=True), window_size=case.window_size)
        natives = {name: model.native for name, model in est._models.items()}
        analysis = _sample(case, case.analysis, labels=False)
        window_of = case.analysis["window"].to_numpy()
        windows = [analysis.take(np.flatnonzero(window_of == w)) for w in np.unique(window_of)]
        wall = dict.fromkeys(modes, np.inf)
        cpu = dict.fromkeys(modes, np.inf)
        values: dict[str, list[list[float]]] = {}
        for _ in range(args.passes):
            for mode in modes:
                for name, model in est._models.items():
                    native = natives[name]
                    model.native = None if mode == "lightgbm" else native
                    if native is not None:
                        native.threads = 1 if mode == "forest_1" else 0
                t0, c0 = time.perf_counter(), time.process_time()
                values[mode] = [[e.value for e in est.estimate(w)] for w in windows]
                wall[mode] = min(wall[mode], (time.perf_counter() - t0) / len(windows))
                cpu[mode] = min(cpu[mode], (time.process_time() - c0) / len(windows))
        theirs = run_nannyml(case, args.nannyml) if args.nannyml else None
        nm_wall, nm_cpu = (
            (theirs["per_window_s"], theirs["per_window_cpu_s"])
            if isinstance(theirs, dict)
            else (np.nan, np.nan)
        )
        cells = " ".join(f"{wall[m]:7.4f}/{cpu[m]:7.4f}" for m in modes)
        print(
            f"{case.name:10} {cells} {nm_wall:7.4f}/{nm_cpu:7.4f}  "
            f"{nm_wall / wall['forest']:6.1f}x / {nm_cpu / cpu['forest']:5.1f}x              "
            f"{values['forest'] == values['lightgbm'] == values['forest_1']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
