"""alibi-detect side of the benchmark, run in an interpreter where alibi-detect imports.

Reads the same pool, reference and window specs as the main script (an .npz and a JSON),
scores each window with KSDrift, TabularDrift and MMDDrift, and times them at 10k x 50.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shifts import materialise

warnings.filterwarnings("ignore")


def main(data_path: str, specs_path: str, out_path: str) -> None:
    from alibi_detect.cd import KSDrift, MMDDrift, TabularDrift

    job = json.loads(Path(specs_path).read_text())
    out: dict = {"scores": {}, "timing": {}}
    for ds in job["datasets"]:
        data = np.load(f"{data_path}_{ds['name']}.npz")
        ref, pool, scale = data["reference"], data["pool"], data["scale"]
        numeric, categorical = ds["numeric"], ds["categorical"]
        # MMDDrift's kernel is isotropic: on raw features the largest-scaled one (breast-cancer's
        # area, in the thousands) would be all it sees. Standardise with the reference's
        # moments, as alibi-detect's examples preprocess.
        centre = np.nanmean(ref, axis=0)
        spread = np.nanstd(ref, axis=0)
        spread = np.where(spread > 0, spread, 1.0)

        def standardised(a: np.ndarray, mu: np.ndarray = centre, sd: np.ndarray = spread) -> np.ndarray:
            return np.nan_to_num(((a - mu) / sd).astype(np.float32))

        ref_f = standardised(ref)
        ks = KSDrift(ref, p_val=0.05)
        tab = TabularDrift(ref, p_val=0.05, categories_per_feature={c: None for c in categorical})
        mmd_ref = ref_f[
            np.random.default_rng(0).choice(ref_f.shape[0], min(500, ref_f.shape[0]), replace=False)
        ]
        mmd = MMDDrift(mmd_ref, backend="pytorch", p_val=0.05, n_permutations=100) if job["mmd"] else None
        scores: dict[str, list] = {"alibi KSDrift": [], "alibi TabularDrift": [], "alibi MMDDrift": []}
        for spec in ds["specs"]:
            x = materialise(pool, spec, numeric, categorical, scale)
            scores["alibi KSDrift"].append(float(np.min(ks.predict(x, return_p_val=True)["data"]["p_val"])))
            scores["alibi TabularDrift"].append(float(np.min(tab.predict(x)["data"]["p_val"])))
            if mmd is not None:
                xs = standardised(x)[:500]
                scores["alibi MMDDrift"].append(float(mmd.predict(xs)["data"]["p_val"]))
        out["scores"][ds["name"]] = {k: v for k, v in scores.items() if v}
    # Seconds per window at 10k rows x 50 features.
    rng = np.random.default_rng(0)
    ref, cur = rng.normal(size=(10_000, 50)), rng.normal(size=(10_000, 50))
    for name, make in (
        ("alibi KSDrift", lambda: KSDrift(ref, p_val=0.05)),
        ("alibi TabularDrift", lambda: TabularDrift(ref, p_val=0.05)),
    ):
        det = make()
        det.predict(cur)
        t0 = time.perf_counter()
        for _ in range(3):
            det.predict(cur)
        out["timing"][name] = (time.perf_counter() - t0) / 3
    Path(out_path).write_text(json.dumps(out))


if __name__ == "__main__":
    main(*sys.argv[1:4])
