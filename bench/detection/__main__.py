"""Runs every part of bench/detection present: drift, training, retention.

    python -m bench.detection [--quick] [--only drift,training,retention]

``--quick`` runs each part at a size that fits a shared 2-core machine in minutes; each part
takes its own options when run alone (``python -m bench.detection.drift --help``).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util

PARTS = ("drift", "training", "retention")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.detection", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (see each part's --quick)")
    ap.add_argument("--only", default=",".join(PARTS), help="parts to run, comma-separated")
    args = ap.parse_args(argv)
    status = 0
    for part in [p for p in args.only.split(",") if p]:
        if part not in PARTS:
            ap.error(f"--only: unknown part {part!r}; parts are {', '.join(PARTS)}")
        name = f"bench.detection.{part}"
        if importlib.util.find_spec(name) is None:
            print(f"== {part}: not present, skipped ==")
            continue
        print(f"== {part} ==", flush=True)
        module = importlib.import_module(name)
        status |= int(module.main(["--quick"] if args.quick else []) or 0)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
