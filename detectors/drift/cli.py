"""``mlvigil drift REFERENCE CURRENT``: an offline drift report for two CSV or Parquet files.

Exit status: 0 no drift, 1 drift found (for CI gates), 2 the inputs could not be read.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, TextIO

from detectors.drift.compare import CompareOptions, compare
from detectors.drift.profile import ReferenceProfile
from detectors.drift.stats import TEST_NAMES

#: Inputs with more cells than this (rows x columns) get a progress bar on a terminal.
PROGRESS_CELLS = 2_000_000


class ProgressBar:
    """A one-line progress bar on stderr, drawn only when it is a terminal (or forced)."""

    def __init__(self, total: int, label: str, stream: TextIO, enabled: bool) -> None:
        self.total, self.label, self.stream, self.enabled = max(total, 1), label, stream, enabled
        self.done = 0
        self._last = 0.0

    def step(self, _: str = "") -> None:
        self.done += 1
        now = time.monotonic()
        if self.enabled and (now - self._last > 0.1 or self.done == self.total):
            self._last = now
            filled = int(30 * self.done / self.total)
            self.stream.write(
                f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total}"
            )
            if self.done == self.total:
                self.stream.write("\n")
            self.stream.flush()


def add_cli(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "drift",
        help="offline drift report for two CSV/Parquet files (exit 1 when drift is found)",
        description="Compare CURRENT with REFERENCE per feature (jointly with --test mmd or classifier).",
    )
    p.add_argument("reference", help="reference data: .csv or .parquet")
    p.add_argument("current", help="current data: .csv or .parquet")
    p.add_argument("--format", choices=("table", "json", "html"), default="table")
    p.add_argument("--output", "-o", help="write the report to this file (default: stdout)")
    p.add_argument(
        "--alpha", type=float, default=0.05, help="significance level after correction (default 0.05)"
    )
    p.add_argument(
        "--test", choices=TEST_NAMES, default="auto", help="drift test (default: auto per feature type)"
    )
    p.add_argument(
        "--correction",
        choices=("minp", "bh", "bonferroni", "none"),
        default="minp",
        help="across features: minp (Westfall-Young, calibrated on the reference; default), bh, "
        "bonferroni, none",
    )
    p.add_argument("--threshold", type=float, help="distance threshold instead of a significance level")
    p.add_argument("--features", help="comma-separated features to compare (default: all shared columns)")
    p.add_argument("--exclude", help="comma-separated columns to leave out (ids, timestamps)")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: on a terminal, for large inputs)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from detectors.drift.report import table, to_html, to_json
    from detectors.drift.sources import read_table

    try:
        ref_cols = read_table(args.reference)
        cur_cols = read_table(args.current)
    except Exception as exc:
        print(f"mlvigil drift: cannot read input: {exc}", file=sys.stderr)
        return 2
    excluded = set((args.exclude or "").split(",")) - {""}
    names = [c for c in ref_cols if c in cur_cols and c not in excluded]
    if args.features:
        wanted = [f for f in args.features.split(",") if f]
        missing = [f for f in wanted if f not in names]
        if missing:
            print(f"mlvigil drift: feature(s) not in both files: {', '.join(missing)}", file=sys.stderr)
            return 2
        names = wanted
    if not names:
        print("mlvigil drift: the two files share no columns", file=sys.stderr)
        return 2
    n_rows = max((len(v) for v in cur_cols.values()), default=0)
    show = (
        args.progress
        if args.progress is not None
        else (sys.stderr.isatty() and n_rows * len(names) >= PROGRESS_CELLS)
    )
    ref_cols = {k: ref_cols[k] for k in names}
    cur_cols = {k: cur_cols[k] for k in names}
    multivariate = args.test in ("mmd", "classifier")
    profile = ReferenceProfile.from_columns(ref_cols, multivariate_rows=2000 if multivariate else 0)
    bar = ProgressBar(len(names), "drift", sys.stderr, bool(show))
    options = CompareOptions(
        test=args.test, alpha=args.alpha, correction=args.correction, threshold=args.threshold
    )
    report = compare(profile, cur_cols, options, progress=bar.step)
    if args.format == "json":
        text = to_json(report)
    elif args.format == "html":
        text = to_html(report, profile, cur_cols, title=f"Drift: {args.current} vs {args.reference}")
    else:
        text = table(report)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
        print(
            f"{'DRIFT' if report.drifted else 'no drift'}: report written to {args.output}", file=sys.stderr
        )
    else:
        print(text)
    return 1 if report.drifted else 0
