"""alibi-detect side of the streaming benchmark, run in an interpreter where alibi-detect imports.

Reads the reference, null stream and delay streams written by ``streaming.py`` (cvm.npz,
mmd.npz and job.json in the directory given as the only argument), runs ``CVMDriftOnline``
and ``MMDDriftOnline(backend="pytorch")`` through the same measurement protocol (imported from
``streaming.py``, which needs only numpy at import) and writes out.json there.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench.drift.streaming import measure_online, rows

warnings.filterwarnings("ignore")


class AlibiStepper:
    """``update``/``reset`` over an alibi-detect online detector."""

    def __init__(self, det: Any) -> None:
        self.det = det

    def update(self, x: Any) -> bool:
        return bool(self.det.predict(x, return_test_stat=False)["data"]["is_drift"])

    def reset(self) -> None:
        self.det.reset_state()


def main(folder: str) -> None:
    import torch
    from alibi_detect.cd import CVMDriftOnline, MMDDriftOnline

    torch.set_num_threads(1)
    base = Path(folder)
    job = json.loads((base / "job.json").read_text())
    shifts = [str(s) for s in job["shifts"]]
    out: dict[str, Any] = {}

    cfg, data = job["cvm"], np.load(base / "cvm.npz")
    refs = data["reference"][..., None]
    # Compile (or load from numba's cache) the simulation kernels before timing calibration.
    CVMDriftOnline(refs[0, :50], ert=10, window_sizes=[5], n_bootstraps=100, verbose=False)

    def make_cvm(k: int) -> AlibiStepper:
        return AlibiStepper(
            CVMDriftOnline(
                refs[k],
                ert=cfg["ert"],
                window_sizes=[cfg["window"]],
                n_bootstraps=cfg["n_bootstraps"],
                verbose=False,
            )
        )

    out["cvm"] = measure_online(
        "alibi CVMDriftOnline",
        make_cvm,
        [rows(n) for n in data["null"]],
        {s: [rows(x) for x in data[f"delay_{s}"]] for s in shifts},
        cfg["window"],
        cfg["window"] - 1,  # ERT counted from when the window is first full
    )

    cfg, data = job["mmd"], np.load(base / "mmd.npz")
    torch.manual_seed(0)

    def make_mmd(k: int) -> AlibiStepper:
        return AlibiStepper(
            MMDDriftOnline(
                data["reference"][k].astype(np.float32),
                ert=cfg["ert"],
                window_size=cfg["window"],
                backend="pytorch",
                n_bootstraps=cfg["n_bootstraps"],
                device="cpu",
                verbose=False,
            )
        )

    out["mmd"] = measure_online(
        "alibi MMDDriftOnline(pytorch)",
        make_mmd,
        [rows(n) for n in data["null"].astype(np.float32)],
        {s: [rows(x) for x in data[f"delay_{s}"].astype(np.float32)] for s in shifts},
        cfg["window"],
        0,  # ERT counted from the first update (the window starts filled with reference rows)
    )
    (base / "out.json").write_text(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
