"""Reference profiles built from the store vs loaded from it (what a restart costs per monitor).

    python -m bench.detection.reference_profiles [--rows 1000000] [--monitors 10]

A DuckDB store of ``--rows`` inference rows (25 features: bench.detection.drift's traffic),
``--monitors`` data monitors with a 10k-row fixed traffic reference each. Printed per
monitor: the first ``Reference.ensure`` (read the reference rows, profile them, store the
profile) and, with new monitor objects as after a restart, the second (check the rows'
times, load the stored profile); the encoded profile's size.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.detection.drift import _detector, generate, monitor_config
from detectors.drift.profile_store import PROFILE_DOCS
from mlvigil.core.store.duckdb import DuckDBStore


def measure(data_dir: Path, monitors: int, models: int, end: float) -> dict[str, list[float]]:
    store = DuckDBStore(data_dir)
    out: dict[str, list[float]] = {"built_s": [], "stored_s": [], "bytes": []}
    try:
        begin = end - 3600
        cfgs = [monitor_config(f"d{i}", f"m{i % models}", begin, end - 60) for i in range(monitors)]
        for phase, want in (("built_s", "built"), ("stored_s", "stored")):
            for cfg in cfgs:
                det = _detector(cfg)  # a new monitor object: as after a restart
                t0 = time.perf_counter()
                det.reference.ensure(store, end, det.ctx.source)
                out[phase].append(time.perf_counter() - t0)
                assert det.reference.origin == want, (det.reference.origin, want)
        for cfg in cfgs:
            doc = store.get_doc(PROFILE_DOCS, cfg["name"])
            assert doc is not None
            out["bytes"].append(float(doc["bytes"]))
    finally:
        store.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.detection.reference_profiles", description=(__doc__ or "").split("\n")[0]
    )
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--models", type=int, default=10)
    ap.add_argument("--monitors", type=int, default=10)
    args = ap.parse_args(argv)
    end = time.time()
    with tempfile.TemporaryDirectory(prefix="mlvigil-profiles-") as tmp:
        fill_s = generate(Path(tmp), args.rows, args.models, end)
        out = measure(Path(tmp), args.monitors, args.models, end)
    print(f"store: {args.rows:,} inference rows, {args.models} models (filled in {fill_s:.1f} s)")
    for key, label in (("built_s", "built from the store"), ("stored_s", "loaded from the store")):
        vals = out[key]
        print(
            f"{label}: median {statistics.median(vals):.3f} s per monitor"
            f" (min {min(vals):.3f}, max {max(vals):.3f}; {len(vals)} monitors)"
        )
    print(f"stored profile: {statistics.median(out['bytes']) / 2**20:.2f} MiB (arrays, before base64)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
