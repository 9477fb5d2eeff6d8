"""Windowed evaluation: one window of rows at a time against the reference.

``WindowEvaluator`` runs the steps every windowed monitor shares (read the window, reuse
the last decision when the window did not change, skip a window under ``min_size``);
``DistributionEvaluator`` tests data, prediction and LLM windows feature by feature
(``detectors.drift.compare``, or alibi-detect with ``backend: alibi``), with the optional
performance estimate of a drifted window (``performance_impact``). Performance monitors'
evaluators are in ``detectors.drift.monitors.performance``.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from detectors.drift.compare import CompareOptions, DriftReport, FeaturePlan, FeatureResult, compare
from detectors.drift.min_p import READY, Member
from detectors.drift.monitors.context import MonitorContext
from detectors.drift.monitors.findings import distribution_finding
from detectors.drift.monitors.reference import Fitted
from detectors.drift.monitors.windows import Windows
from detectors.drift.profile import ReferenceProfile
from detectors.drift.sources import Columns, feature_columns, hashed_embedding
from detectors.drift.stats import TestResult
from detectors.drift.stats.mmd import MMD
from detectors.drift.workers import StatisticsUnavailable
from detectors.estimation import EstimationError
from detectors.estimation.monitor import EstimatedPerformance
from mlvigil.core.findings import Finding
from mlvigil.core.store import Store

#: Rows of a window kept for the multivariate tests.
MULTIVARIATE_ROWS = 2000
#: Fewest prompts on either side for the prompt-embedding test.
MIN_EMBEDDING_TEXTS = 20


class WindowEvaluator(ABC):
    """Decides one window at a time; what is fitted on the reference and how a window is
    judged are the subclass's."""

    #: Whether labels arriving later change a window's decision (its evidence).
    label_sensitive = False

    def __init__(self, ctx: MonitorContext) -> None:
        self.ctx = ctx
        self.windows = Windows(ctx.config, ctx.source)
        self._cached: tuple[tuple[Any, ...], list[Finding]] | None = None

    @abstractmethod
    def fit(self, columns: Columns) -> Fitted:
        """Fit on a reference's columns."""

    @abstractmethod
    def judge(
        self,
        cols: Columns,
        rows: Columns,
        subject: dict[str, str],
        start: float | None,
        end: float | None,
        now: float,
    ) -> list[Finding]:
        """Decide one window (``cols`` as the source extracts them from ``rows``)."""

    def evaluate(self, store: Store, now: float) -> list[Finding]:
        ctx, c = self.ctx, self.ctx.config
        if self.windows.tumble_after is None:
            # Count-tumbling windows start where traffic references end: no overlap.
            self.windows.tumble_after = ctx.reference.traffic_until
        rows, start, end = self.windows.current(store, now)
        if not rows:
            # A tumbling window with no new complete block keeps its last decision.
            return list(self._cached[1]) if self._cached else []
        n = len(rows.get("ts", []))
        key: tuple[Any, ...] = (start, end, n, ctx.reference.built_at)
        cols: Columns | None = None
        if self.label_sensitive:
            # Labels arriving for the same window change its evidence (the realised value).
            cols = ctx.source.columns(rows, store)
            key += (sum(v is not None for v in cols["label"]),)
        if self._cached and self._cached[0] == key and ctx.last.get("calibration") in (None, READY):
            # The same window decided again with a calibration that became ready since (its
            # Bonferroni verdict is provisional); otherwise the same decision.
            return list(self._cached[1])
        if cols is None:
            cols = ctx.source.columns(rows, store)
        n_cur = len(next(iter(cols.values()), [])) if cols else 0
        assert c.window is not None
        if n_cur < c.window.min_size:
            ctx.last = {
                "status": "window too small",
                "n_current": n_cur,
                "min_size": c.window.min_size,
                "at": now,
            }
            ctx.skipped("window_too_small")
            return []
        findings = self.judge(cols, rows, ctx.subject(rows), start, end, now)
        self._cached = (key, findings)
        return list(findings)


def compare_options(ctx: MonitorContext, statistics: dict[str, Any] | None = None) -> CompareOptions:
    """How a monitor's windows are compared with its reference profile; with worker
    processes, where and how long its statistics ran goes to ``statistics``."""
    c = ctx.config
    calibrations = ctx.calibrations
    workers = ctx.workers

    def run_tests(
        profile: ReferenceProfile, current: Mapping[str, Sequence[Any] | np.ndarray], plan: FeaturePlan
    ) -> tuple[list[FeatureResult], list[Member]]:
        assert workers is not None
        started = time.perf_counter()
        results, family, pid = workers.run(profile, current, plan)
        if statistics is not None:
            statistics.update(worker_pid=pid, seconds=round(time.perf_counter() - started, 4))
        return results, family

    def null_source(
        profile: ReferenceProfile, family: list[Member], n_current: int, windows: int, seed: int
    ) -> tuple[np.ndarray | None, str]:
        assert calibrations is not None
        return calibrations.null(profile, family, n_current, windows, seed, monitor=c.name)

    return CompareOptions(
        test=c.test or "auto",
        alpha=c.alpha or 0.05,
        correction=c.correction or "minp",
        threshold=c.threshold,
        features=c.features,
        feature_tests=c.feature_tests,
        min_drifted_features=c.min_drifted_features,
        null_windows=c.null_windows,
        null_source=null_source if calibrations is not None else None,
        run_tests=run_tests if workers is not None else None,
    )


class DistributionEvaluator(WindowEvaluator):
    """Data, prediction and LLM windows against a ``ReferenceProfile``."""

    def __init__(self, ctx: MonitorContext) -> None:
        super().__init__(ctx)
        self._text_mmd: MMD | None = None

    def fit(self, columns: Columns) -> Fitted:
        c = self.ctx.config
        impact = None
        if c.performance_impact != "off":
            impact = EstimatedPerformance(c.metrics, c.estimation, c.max_drop, c.features)
            impact.fit(columns)
            # The label (and, for a data monitor, the model's outputs) are not drift-tested.
            roles = self.ctx.source.untested_columns
            columns = {k: v for k, v in columns.items() if k not in roles and not k.startswith("proba_")}
        mv = MULTIVARIATE_ROWS if c.test in ("mmd", "classifier") else 0
        profile = ReferenceProfile.from_columns(columns, multivariate_rows=mv)
        return Fitted(profile, profile.n_rows, columns, impact)

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
        profile: ReferenceProfile = ctx.reference.model
        # Where and how long the statistics ran, when a worker process ran them.
        statistics: dict[str, Any] = {}
        if c.backend == "alibi":
            from detectors.drift.alibi_backend import alibi_compare

            assert ctx.reference.columns is not None
            report = alibi_compare(c, ctx.reference.columns, cols, profile, compare_options(ctx))
        else:
            try:
                report = compare(
                    profile, cols, compare_options(ctx, statistics), extra=self._embedding_result(rows)
                )
            except StatisticsUnavailable as exc:
                # Said in the status; raised so that the monitor's findings stay as they were.
                ctx.error(f"statistics: {exc}", now)
                raise
        publish(ctx, report)
        ctx.last = {
            "status": "drift" if report.drifted else "ok",
            "at": now,
            "window_start": start,
            "window_end": end,
            **({"calibration": report.calibration} if report.calibration else {}),
            **({"statistics": statistics} if statistics else {}),
            "report": report.to_dict(top=10),
        }
        if not report.drifted:
            return []
        impact = self._performance_impact(rows)
        if impact is not None:
            ctx.last["performance_impact"] = impact
            if c.performance_impact == "require" and not impact.get("moved"):
                ctx.last["status"] = "drift without estimated performance impact"
                return []
        finding = distribution_finding(ctx, report, subject, start, end)
        if impact is not None:
            finding.evidence["performance_impact"] = impact
            moved = [m for m in impact.get("metrics", []) if m["alarm"]]
            finding.summary += (
                "; estimated " + ", ".join(f"{m['metric']} {m['value']:.3g}" for m in moved)
                if moved
                else "; estimated performance within the reference range"
            )
        return [finding]

    def _performance_impact(self, rows: Columns) -> dict[str, Any] | None:
        """The estimated performance of a drifted window (performance_impact), or None."""
        estimator = self.ctx.reference.impact
        if estimator is None:
            return None
        cols = {
            **feature_columns(rows),
            "prediction": list(rows.get("prediction", [])),
            "score": list(rows.get("score", [])),
        }
        try:
            estimates, _ = estimator.estimate(cols)
        except EstimationError as exc:
            return {"error": str(exc)}
        reliable, why = estimator.reliable
        return {
            "method": estimator.method,
            "moved": reliable and any(e.alarm for e in estimates),
            **({"unreliable": why} if not reliable else {}),
            "metrics": [e.to_dict() for e in estimates],
        }

    def _embedding_result(self, rows: Columns) -> list[tuple[str, str, TestResult, dict[str, Any]]]:
        """Prompts of the window against the reference's, as hashed embeddings (MMD)."""
        if not self.ctx.source.embeds_prompts():
            return []
        ref_texts = [t for t in self.ctx.reference.texts if t]
        cur_texts = [t for t in rows.get("prompt", []) if t]
        if len(ref_texts) < MIN_EMBEDDING_TEXTS or len(cur_texts) < MIN_EMBEDDING_TEXTS:
            return []
        if self._text_mmd is None:
            self._text_mmd = MMD(hashed_embedding(ref_texts), permutations=200, max_rows=400)
        res = self._text_mmd.test(hashed_embedding(cur_texts))
        tr = TestResult("mmd", res.statistic, res.p_value, res.statistic, res.n_reference, res.n_current)
        return [("prompt_embedding", "embedding", tr, {})]


def publish(ctx: MonitorContext, report: DriftReport) -> None:
    """A distribution report to the monitor's Prometheus series."""
    if ctx.metrics:
        ctx.metrics.publish(
            ctx.name,
            report.drifted,
            report.n_reference,
            report.n_current,
            [f.to_dict() for f in report.features],
        )
        if report.calibration:
            ctx.metrics.calibration(ctx.name, report.calibration)


__all__ = ["MULTIVARIATE_ROWS", "DistributionEvaluator", "WindowEvaluator", "compare_options"]
