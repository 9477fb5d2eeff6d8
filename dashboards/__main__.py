"""``python -m dashboards [--out DIR] [--check]``: write (or verify) the generated dashboard JSON."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from dashboards.definitions import DASHBOARDS
from dashboards.spec import render

GENERATED = Path(__file__).resolve().parent / "generated"


def file_name(uid: str) -> str:
    return f"{uid}.json"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboards", description=__doc__)
    parser.add_argument("--out", type=Path, default=GENERATED, help="output directory (default: %(default)s)")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if a committed file differs from what the code generates"
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    stale = []
    for spec in DASHBOARDS:
        path = args.out / file_name(spec.uid)
        text = render(spec)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print("out of date (run python -m dashboards): " + ", ".join(map(str, stale)), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
