"""How long ``mlvigil --help`` and each ``mlvigil COMMAND --help`` take, as a new process.

Bound on the same machine in the same run: ``python -c pass`` (the interpreter's own start),
so each command's ratio to it says what the CLI adds. The target is under 0.5 s for every
line. Run: ``python -m bench.cli [--runs N]`` (median of N runs each, default 9).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TARGET_S = 0.5


def _median_seconds(argv: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, cwd=REPO, check=True, stdout=subprocess.DEVNULL, timeout=120)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cli", description=__doc__)
    parser.add_argument("--runs", type=int, default=9, help="runs per command (default 9)")
    args = parser.parse_args(argv)
    from mlvigil.app.plugins import COMMANDS

    bound = _median_seconds([sys.executable, "-c", "pass"], args.runs)
    print(f"{'command':<24} {'median s':>9} {'x python -c pass':>17}")
    print(f"{'python -c pass':<24} {bound:>9.3f} {1.0:>17.1f}")
    worst = 0.0
    for words in ([], *([name] for name in COMMANDS)):
        seconds = _median_seconds([sys.executable, "-m", "mlvigil", *words, "--help"], args.runs)
        worst = max(worst, seconds)
        label = " ".join(["mlvigil", *words, "--help"])
        print(f"{label:<24} {seconds:>9.3f} {seconds / bound:>17.1f}")
    verdict = "within" if worst < TARGET_S else "OVER"
    print(f"slowest {worst:.3f} s: {verdict} the {TARGET_S} s target ({args.runs} runs each)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
