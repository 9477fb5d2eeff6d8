"""Windowed performance evaluation: measured (labels joined) and estimated (no labels).

``PerformanceEvaluator`` compares a window's metrics (accuracy, F1, MAE, ...) computed on
predictions joined with their labels against the reference's (``compare_performance``);
``EstimatedPerformanceEvaluator`` estimates them without labels (CBPE/PAPE/DLE,
``detectors.estimation``) and checks the estimate against the reference's range.
"""

from __future__ import annotations

from detectors.drift.monitors.findings import describe_metric
from detectors.drift.monitors.reference import Fitted
from detectors.drift.monitors.windowed import WindowEvaluator
from detectors.drift.performance import Evaluation, compare_performance
from detectors.drift.sources import Columns
from detectors.estimation import EstimationError
from detectors.estimation.monitor import EstimatedPerformance
from mlvigil.core.findings import Finding


class PerformanceEvaluator(WindowEvaluator):
    """Labelled windows against a labelled reference (an ``Evaluation``)."""

    def fit(self, columns: Columns) -> Fitted:
        reference = Evaluation(columns.get("prediction", []), columns.get("label", []), columns.get("score"))
        return Fitted(reference, reference.n, columns)

    def judge(
        self,
        cols: Columns,
        rows: Columns,
        subject: dict[str, str],
        start: float | None,
        end: float | None,
        now: float,
    ) -> list[Finding]:
        ctx, c = self.ctx, self.ctx.config
        reference: Evaluation = ctx.reference.model
        current = Evaluation(
            cols.get("prediction", []),
            cols.get("label", []),
            cols.get("score"),
            positive=reference.positive,
        )
        results = compare_performance(reference, current, c.metrics, c.alpha or 0.05, c.max_drop)
        drifted = [r for r in results if r.drifted]
        if ctx.metrics:
            ctx.metrics.publish(
                c.name,
                bool(drifted),
                reference.n,
                current.n,
                [
                    {
                        "feature": r.metric,
                        "test": "performance",
                        "distance": r.current,
                        "p_value": r.p_value,
                        "drifted": r.drifted,
                    }
                    for r in results
                ],
            )
        ctx.last = {
            "status": "drift" if drifted else "ok",
            "at": now,
            "window_start": start,
            "window_end": end,
            "metrics": [r.to_dict() for r in results],
        }
        if not drifted:
            return []
        names = ", ".join(describe_metric(r) for r in drifted)
        summary = f"Performance drift on {ctx.source.target(subject)} (monitor {c.name}): {names}"
        evidence = {
            "monitor": c.name,
            "alpha": c.alpha,
            "max_drop": c.max_drop,
            "n_reference": reference.n,
            "n_current": current.n,
            "metrics": [r.to_dict() for r in results],
            "drifted_features": [r.metric for r in drifted],
        }
        return [
            Finding(
                kind=c.finding_kind,
                severity=ctx.severity,
                subject=subject,
                summary=summary,
                evidence=evidence,
                window_start=start,
                window_end=end,
                key=c.name,
            )
        ]


class EstimatedPerformanceEvaluator(WindowEvaluator):
    """Windows without labels: the performance an estimator fitted on the reference expects."""

    label_sensitive = True

    def fit(self, columns: Columns) -> Fitted:
        c = self.ctx.config
        estimated = EstimatedPerformance(c.metrics, c.estimation, c.max_drop, c.features)
        n = estimated.fit(columns)
        return Fitted(estimated, n, columns)

    def judge(
        self,
        cols: Columns,
        rows: Columns,
        subject: dict[str, str],
        start: float | None,
        end: float | None,
        now: float,
    ) -> list[Finding]:
        ctx, c = self.ctx, self.ctx.config
        estimated: EstimatedPerformance = ctx.reference.model
        try:
            estimates, context = estimated.estimate(cols)
        except EstimationError as exc:
            ctx.error(f"window: {exc}", now)
            return []
        reliable, why = estimated.reliable
        finding = estimated.finding(
            estimates,
            context,
            monitor=c.name,
            kind=c.finding_kind,
            severity=ctx.severity,
            subject=subject,
            start=start,
            end=end,
        )
        if ctx.metrics:
            ctx.metrics.publish(
                c.name,
                finding is not None,
                ctx.reference.rows,
                context["n_current"],
                [
                    {
                        "feature": e.metric,
                        "test": "estimated_performance",
                        "distance": e.value,
                        "drifted": e.alarm,
                    }
                    for e in estimates
                ],
            )
            ctx.metrics.publish_estimates(
                c.name,
                {
                    e.metric: {
                        "estimate": e.value,
                        "lower": e.lower,
                        "upper": e.upper,
                        "reference_lower": e.reference_lower,
                        "reference_upper": e.reference_upper,
                        "realised": e.realised,
                    }
                    for e in estimates
                },
            )
        ctx.last = {
            "status": "unreliable" if not reliable else ("drift" if finding else "ok"),
            **({"reason": why} if not reliable else {}),
            "at": now,
            "window_start": start,
            "window_end": end,
            **context,
            "metrics": [e.to_dict() for e in estimates],
            "fit": estimated.estimator.describe(),
        }
        return [finding] if finding else []


__all__ = ["EstimatedPerformanceEvaluator", "PerformanceEvaluator"]
