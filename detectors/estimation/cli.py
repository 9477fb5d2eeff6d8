"""``mlvigil estimate REFERENCE ANALYSIS``: performance estimated without labels, offline.

This module only defines the parser; numpy, scikit-learn and DuckDB are imported when the
command runs, so ``mlvigil estimate --help`` answers at once.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

HELP = "estimate a model's performance on unlabelled data from a labelled reference (exit 1 on a drop)"

DESCRIPTION = """\
Fit CBPE / PAPE (classifiers) or DLE (regression) on REFERENCE, which has the labels, then
estimate the metrics of ANALYSIS window by window without its labels, each with a 95%
sampling band, the reference's range and an alarm. When ANALYSIS has the label column too,
the realised value is shown beside each estimate. Files are CSV or Parquet. Column roles:
--label (REFERENCE only), --prediction (class, number or probability of class 1), --score
(binary: P(positive)), proba_0, proba_1, ... (class probabilities); every other column is a
feature unless --features says which. See docs/estimation.md."""

EPILOG = """\
exit status:
  0  no window's estimate is beyond the reference range by more than --max-drop
  1  at least one window is (an estimated drop)
  2  usage error
  3  the files cannot be used as given (a role column missing, no probabilities,
     labels that are not classes, calibration refused)
  4  too few rows
  5  unreadable input: no such file, not CSV/Parquet, over a size limit"""

#: Exit codes shared with ``mlvigil drift``.
EXIT_OK, EXIT_DROP, EXIT_USAGE, EXIT_UNUSABLE, EXIT_TOO_FEW = 0, 1, 2, 3, 4


def _metrics(text: str) -> list[str]:
    from detectors.estimation.metrics import CLASSIFICATION_METRICS, REGRESSION_METRICS

    names = [m.strip() for m in text.split(",") if m.strip()]
    known = (*CLASSIFICATION_METRICS, *REGRESSION_METRICS)
    unknown = [m for m in names if m not in known]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown metric(s) {unknown or text!r}; known: {', '.join(known)}")
    return names


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 2:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 2")
    return value


def add_cli(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "estimate",
        help=HELP,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("reference", help="labelled reference file (CSV or Parquet)")
    p.add_argument(
        "analysis", help="file to estimate (CSV or Parquet); its labels, if any, are only compared"
    )
    p.add_argument(
        "--metrics", type=_metrics, default=["accuracy"], help="comma-separated (default accuracy)"
    )
    p.add_argument("--window", type=_positive, default=1000, help="rows per window (default 1000)")
    p.add_argument("--method", choices=("auto", "cbpe", "pape", "dle"), default="auto")
    p.add_argument("--shift-robust", action="store_true", help="dle: reweight to each window's features")
    p.add_argument("--max-drop", type=float, default=0.0, help="alarm margin beyond the reference range")
    p.add_argument("--label", default="label", help="label column (default label)")
    p.add_argument("--prediction", default="prediction", help="prediction column (default prediction)")
    p.add_argument("--score", default="score", help="score column (default score)")
    p.add_argument("--features", help="comma-separated feature columns (default: all other columns)")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=run)


def _roles(columns: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    renamed = {args.label: "label", args.prediction: "prediction", args.score: "score"}
    return {renamed.get(k, k): v for k, v in columns.items()}


def run(args: argparse.Namespace, out: Any = None) -> int:
    from detectors.drift.files import InputError, Limits, open_input, read_rows
    from detectors.estimation.base import EstimationError
    from detectors.estimation.config import EstimationConfig
    from detectors.estimation.monitor import EstimatedPerformance

    out = out or sys.stdout
    limits = Limits(min_rows=2)

    def fail(code: int, message: str) -> int:
        if args.format == "json":
            print(json.dumps({"status": "error", "message": message}), file=out)
        else:
            print(f"mlvigil estimate: {message}", file=sys.stderr)
        return code

    try:
        files = [
            open_input(args.reference, "reference", limits),
            open_input(args.analysis, "analysis", limits),
        ]
        for f in files:
            read_rows(f, list(f.types), limits)
    except InputError as exc:
        return fail(exc.code, exc.message)
    reference, analysis = (_roles(f.columns, args) for f in files)
    features = [f.strip() for f in args.features.split(",")] if args.features else None
    for name in features or []:
        if name not in reference or name not in analysis:
            return fail(EXIT_UNUSABLE, f"--features: column {name!r} is not in both files")
    try:
        est = EstimatedPerformance(
            args.metrics,
            EstimationConfig(method=args.method, shift_robust=args.shift_robust),
            args.max_drop,
            features,
        )
        est.fit(reference)
    except (EstimationError, ValueError) as exc:
        return fail(EXIT_UNUSABLE, f"reference file {args.reference}: {exc}")
    n = files[1].n_rows
    if n < 2:
        return fail(EXIT_TOO_FEW, f"analysis file {args.analysis} has {n} rows; need at least 2")
    reliable, why = est.reliable
    windows = []
    try:
        for start in range(0, n, args.window):
            stop = min(start + args.window, n)
            if stop - start < 2:
                break
            part: dict[str, Sequence[Any]] = {k: list(v[start:stop]) for k, v in analysis.items()}
            estimates, context = est.estimate(part)
            windows.append({"rows": [start, stop], **context, "metrics": [e.to_dict() for e in estimates]})
    except EstimationError as exc:
        return fail(EXIT_UNUSABLE, f"analysis file {args.analysis}: {exc}")
    dropped = reliable and any(m["alarm"] for w in windows for m in w["metrics"])
    report = {
        "status": "drop" if dropped else "ok",
        "method": est.method,
        "reliable": reliable,
        "reason": why or None,
        "fit": est.estimator.describe(),
        "windows": windows,
    }
    if args.format == "json":
        print(json.dumps(report, default=float), file=out)
    else:
        print(
            f"method {est.method}; {est.n_reference} labelled reference rows"
            + ("" if reliable else f"; UNRELIABLE: {why}"),
            file=out,
        )
        for w in windows:
            for m in w["metrics"]:
                realised = "" if m["realised"] is None else f"  realised {m['realised']:.4g}"
                flag = "  DROP" if m["alarm"] and reliable else ""
                print(
                    f"rows {w['rows'][0]}-{w['rows'][1] - 1}  {m['metric']:9} {m['value']:.4g} "
                    f"[{m['lower']:.4g}, {m['upper']:.4g}]  reference {m['reference_lower']:.4g} to "
                    f"{m['reference_upper']:.4g}{realised}{flag}",
                    file=out,
                )
    return EXIT_DROP if dropped else EXIT_OK
