"""``mlvigil drift REFERENCE CURRENT``: an offline drift report for two CSV or Parquet files.

This module only defines the parser; the statistics (numpy, scipy, DuckDB) are imported
when the command runs, so ``mlvigil drift --help`` answers at once.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from detectors.drift.exit_codes import EXIT_DRIFT, EXIT_NO_DRIFT

if TYPE_CHECKING:
    from detectors.drift.files import InputError


#: ``detectors.drift.stats.TEST_NAMES``, spelled out so the parser needs no scipy
#: (tests/test_drift_cli.py checks that the two agree).
TEST_CHOICES = (
    "auto",
    "ks",
    "cvm",
    "anderson",
    "wasserstein",
    "psi",
    "js",
    "hellinger",
    "chi2",
    "mmd",
    "classifier",
)

#: Inputs with more cells than this (rows x columns) get a progress bar on a terminal.
PROGRESS_CELLS = 2_000_000

DESCRIPTION = """\
Compare CURRENT with REFERENCE, feature by feature (or jointly with --test mmd or
classifier), and say which features drifted. Each file is CSV (first line: the column
names; delimiter , ; tab or |) or Parquet (*.parquet, *.pq). Both files must have the
same columns, of the same types, and at least --min-rows rows."""

EPILOG = """\
exit status:
  0  no drift
  1  drift found
  2  usage error (an unknown option or --features name)
  3  schema mismatch: the files' columns differ, or a column's type changed
  4  too few rows: an empty file, or fewer than --min-rows rows in either file
  5  unreadable input: no such file, not CSV/Parquet, a malformed CSV, or over a size limit
With --format json the report (or the error, as {"status": "error", ...}) is on stdout."""


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


def _alpha(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be between 0 and 1, e.g. 0.05")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)


def _size(text: str) -> int:
    """Bytes from ``500M``, ``2G``, ``1.5GiB`` or a plain number."""
    match = _SIZE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (say 500M or 2G)")
    number, unit = match.groups()
    return int(float(number) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}[unit.lower()])


def add_cli(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "drift",
        help="offline drift report for two CSV/Parquet files (exit 1 when drift is found)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("reference", help="reference data: .csv, or .parquet/.pq")
    p.add_argument("current", help="current data to compare with it: .csv, or .parquet/.pq")
    p.add_argument("--format", choices=("table", "json", "html"), default="table")
    p.add_argument("--output", "-o", help="write the report to this file (default: stdout)")
    p.add_argument(
        "--alpha", type=_alpha, default=0.05, help="significance level after correction (default 0.05)"
    )
    p.add_argument(
        "--test", choices=TEST_CHOICES, default="auto", help="drift test (default: auto per feature type)"
    )
    p.add_argument(
        "--correction",
        choices=("minp", "bh", "bonferroni", "none"),
        default="minp",
        help="across features: minp (Westfall-Young, calibrated on the reference; default), bh, "
        "bonferroni, none",
    )
    p.add_argument("--threshold", type=float, help="distance threshold instead of a significance level")
    p.add_argument("--features", help="comma-separated columns to compare (default: all; both files)")
    p.add_argument("--exclude", help="comma-separated columns to leave out (ids, timestamps)")
    p.add_argument(
        "--min-rows",
        type=_positive_int,
        default=50,
        help="fewest rows each file must have (default 50, as a monitor's window.min_size)",
    )
    p.add_argument("--max-rows", type=_positive_int, default=5_000_000, help="most rows read (default 5M)")
    p.add_argument(
        "--max-columns", type=_positive_int, default=1_000, help="most columns per file (default 1000)"
    )
    p.add_argument("--max-file-size", type=_size, default=2 * 1024**3, help="largest file read (default 2G)")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: on a terminal, for large inputs)",
    )
    p.set_defaults(func=run)


def _names(text: str | None) -> list[str]:
    return [n.strip() for n in (text or "").split(",") if n.strip()]


def _emit(args: argparse.Namespace, text: str) -> None:
    if args.output:
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
        return
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # A reader that stopped early (``| head``) is no error: the exit code still tells.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _fail(args: argparse.Namespace, err: InputError) -> int:
    """The refusal on stderr, and in the report's place: as JSON with --format json, and in
    the --output file whatever the format (so no stale report from an earlier run remains)."""
    print(f"mlvigil drift: {err.message}", file=sys.stderr)
    if args.format != "json" and args.output:
        text = f"mlvigil drift: exit {err.code}: {err.message}"
        if args.format == "html":
            import html

            text = (
                '<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>Drift check failed'
                f"</title></head><body><h1>Drift check failed (exit {err.code})</h1>"
                f"<pre>{html.escape(err.message)}</pre></body></html>"
            )
        _emit(args, text)
    if args.format == "json":
        doc = {
            "status": "error",
            "exit_code": err.code,
            "drifted": None,
            "reference": args.reference,
            "current": args.current,
            "error": err.to_dict(),
        }
        _emit(args, json.dumps(doc, indent=2))
    return err.code


def run(args: argparse.Namespace) -> int:
    from detectors.drift.compare import CompareOptions, compare
    from detectors.drift.files import InputError, Limits, id_like, read_inputs
    from detectors.drift.profile import ReferenceProfile
    from detectors.drift.report import table, to_html, to_json

    limits = Limits(
        min_rows=args.min_rows,
        max_rows=args.max_rows,
        max_columns=args.max_columns,
        max_bytes=args.max_file_size,
    )
    features = _names(args.features) or None
    try:
        reference, current, names = read_inputs(
            args.reference, args.current, limits, features, set(_names(args.exclude))
        )
    except InputError as err:
        return _fail(args, err)
    ids = id_like(reference, names)
    for name in ids:
        print(
            f"mlvigil drift: note: {name!r} has a different value in every reference row (an id or a "
            f"timestamp?); its drift only says the rows are new. Leave it out with --exclude {name}",
            file=sys.stderr,
        )
    show = (
        args.progress
        if args.progress is not None
        else (sys.stderr.isatty() and current.n_rows * len(names) >= PROGRESS_CELLS)
    )
    multivariate = args.test in ("mmd", "classifier")
    profile = ReferenceProfile.from_columns(reference.columns, multivariate_rows=2000 if multivariate else 0)
    bar = ProgressBar(len(names), "drift", sys.stderr, bool(show))
    options = CompareOptions(
        test=args.test, alpha=args.alpha, correction=args.correction, threshold=args.threshold
    )
    report = compare(profile, current.columns, options, progress=bar.step)
    code = EXIT_DRIFT if report.drifted else EXIT_NO_DRIFT
    if args.format == "json":
        text = to_json(
            report,
            status="drift" if report.drifted else "no_drift",
            exit_code=code,
            reference=args.reference,
            current=args.current,
            id_like_columns=ids,
        )
    elif args.format == "html":
        text = to_html(report, profile, current.columns, title=f"Drift: {args.current} vs {args.reference}")
    else:
        text = table(report)
    _emit(args, text)
    if args.output:
        verdict = "DRIFT" if report.drifted else "no drift"
        print(f"{verdict}: report written to {args.output}", file=sys.stderr)
    return code
