"""DLE with its trees applied by mlvigil_native's Forest vs by LightGBM's predictor, same run.

    PYTHONPATH=. python -m bench.performance_estimation.forest_check --nannyml /tmp/nannyml-venv/bin/python

One DLE fitted per regression case; its disjoint windows estimated with Forest, then with
the same models' ``native`` set to None (LightGBM's predictor, everything else the same),
three passes each, best kept; NannyML's DLE on the same windows beside them (with
--nannyml; car_price needs it for its data). Prints seconds per window and whether the
estimates are identical.
"""

from __future__ import annotations

import argparse
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
    print(f"{'dataset':10} {'Forest':>8} {'LightGBM':>9} {'NannyML':>8}  speedup vs NannyML  identical")
    for case in cases:
        est = DLE(case.metrics).fit(_sample(case, case.reference, labels=True), window_size=case.window_size)
        natives = {name: model.native for name, model in est._models.items()}
        analysis = _sample(case, case.analysis, labels=False)
        window_of = case.analysis["window"].to_numpy()
        windows = [analysis.take(np.flatnonzero(window_of == w)) for w in np.unique(window_of)]
        best = {"forest": np.inf, "lightgbm": np.inf}
        values: dict[str, list[list[float]]] = {}
        for _ in range(args.passes):
            for mode in best:
                for name, model in est._models.items():
                    model.native = natives[name] if mode == "forest" else None
                t0 = time.perf_counter()
                values[mode] = [[e.value for e in est.estimate(w)] for w in windows]
                best[mode] = min(best[mode], (time.perf_counter() - t0) / len(windows))
        theirs = run_nannyml(case, args.nannyml) if args.nannyml else None
        nm = theirs["per_window_s"] if isinstance(theirs, dict) else float("nan")
        print(
            f"{case.name:10} {best['forest']:8.4f} {best['lightgbm']:9.4f} {nm:8.4f}  "
            f"{nm / best['forest']:6.1f}x / {nm / best['lightgbm']:5.1f}x     "
            f"{values['forest'] == values['lightgbm']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
