"""The Finding of a drifted distribution (data, prediction, LLM traffic): summary and evidence.

One Finding per monitor (key = monitor name) while its latest window or stream drifts;
the engine fires, updates and resolves it.
"""

from __future__ import annotations

from typing import Any

from detectors.drift.compare import DriftReport, FeatureDrift
from detectors.drift.min_p import READY
from detectors.drift.monitors.context import MonitorContext
from detectors.drift.performance import MetricDrift
from mlvigil.core.findings import Finding


def distribution_finding(
    ctx: MonitorContext,
    report: DriftReport,
    subject: dict[str, str],
    start: float | None,
    end: float | None,
    *,
    detail: str | None = None,
    top: list[FeatureDrift] | None = None,
    extra: dict[str, Any] | None = None,
) -> Finding:
    """The Finding of a drifted report; ``detail`` and ``top`` replace the report's own
    verdict and ranking (a streaming alarm names its own)."""
    c = ctx.config
    # A caller's own ranking (streaming) names its leaders; otherwise the drifted ones.
    lead = top if top is not None else report.drifted_features
    top = top or report.top(5)
    drifted = report.drifted_features
    target = ctx.source.target(subject)
    if detail is None and report.multivariate is not None:
        detail = f"{report.test} test p={report.p_value:.3g}" if report.p_value is not None else report.test
    elif detail is None:
        detail = f"{len(drifted)} of {len(report.features)} checks drifted"
    names = ", ".join(describe(f) for f in (lead or top)[:3])
    summary = f"{ctx.source.drift_title} on {target} (monitor {c.name}): {detail}" + (
        f" — {names}" if names else ""
    )
    evidence = {
        "monitor": c.name,
        "backend": c.backend,
        "test": report.test,
        "correction": report.correction,
        "alpha": report.alpha,
        "threshold": c.threshold,
        "p_value": report.p_value,
        "n_reference": report.n_reference,
        "n_current": report.n_current,
        "n_features": len(report.features),
        "n_drifted": len(drifted),
        "drifted_features": [f.feature for f in drifted],
        "top_features": [_evidence(f) for f in top],
        "multivariate": report.multivariate,
        **({"calibration": calibration_label(report.calibration)} if report.calibration else {}),
        **(extra or {}),
    }
    return Finding(
        kind=c.finding_kind,
        severity=ctx.severity,
        subject=subject,
        summary=summary,
        evidence=evidence,
        window_start=start,
        window_end=end,
        key=c.name,
    )


def describe(f: FeatureDrift) -> str:
    """One feature's movement in a few words (``age (mean 41 → 52)``)."""
    mv = f.movement
    if "mean_shift_sd" in mv:
        ref, cur = mv["reference"], mv["current"]
        return f"{f.feature} (mean {ref.get('mean', float('nan')):.4g} → {cur.get('mean', float('nan')):.4g})"
    if mv.get("unseen"):
        cat, share = max(mv["unseen"].items(), key=lambda kv: kv[1])
        return f"{f.feature} (new value {cat!r} {share:.0%})"
    if mv.get("shares"):
        s = mv["shares"][0]
        return f"{f.feature} ({s['category']!r} {s['reference']:.0%} → {s['current']:.0%})"
    if f.feature.endswith(":missing") and mv.get("missing_rate"):
        a, b = mv["missing_rate"]
        return f"{f.feature} ({a:.0%} → {b:.0%})"
    return f.feature


def describe_metric(r: MetricDrift) -> str:
    return f"{r.metric} {r.reference:.3g} → {r.current:.3g}"


def _evidence(f: FeatureDrift) -> dict[str, Any]:
    d = f.to_dict()
    d["summary"] = describe(f)
    return d


def calibration_label(state: str) -> str:
    """The evidence's word for how a min-P verdict was corrected."""
    return "minp" if state == READY else f"{state}/bonferroni"


__all__ = ["calibration_label", "describe", "describe_metric", "distribution_finding"]
