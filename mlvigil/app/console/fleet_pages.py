"""The console's fleet pages: drift monitors, training runs and GPUs, each with what fires on it.
Each function renders HTML on a worker thread (the store is read there).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING
from urllib.parse import quote

from mlvigil.app.console.evidence import (
    CARBON_KINDS,
    GPU_KINDS,
    TRAINING_KINDS,
    gpu_view,
    run_view,
    statistic_chart,
)
from mlvigil.app.console.render import badge, esc, link, num, table, when
from mlvigil.core.findings import Finding, Severity

if TYPE_CHECKING:
    from mlvigil.app.console.history import StatisticHistory
    from mlvigil.core.context import ServiceContext

#: Most training runs listed on the runs page.
MAX_RUNS_LISTED = 500


def monitors_page(ctx: ServiceContext, history: StatisticHistory) -> str:
    registry = ctx.services.get("drift")
    if registry is None or not registry.detectors:
        return '<p class="muted empty">No drift monitors configured (detectors.drift.monitors).</p>'
    out = []
    for name, det in sorted(registry.detectors.items()):
        cfg = det.config
        st = det.status()
        report = st.get("report") if isinstance(st.get("report"), dict) else {}
        status = str(st.get("status", "not evaluated yet"))
        facts = [
            ("kind", esc(cfg.kind)),
            (
                "watches",
                esc(", ".join(f"{k}={v}" for k in ("service", "model") if (v := getattr(cfg, k, None)))),
            ),
            ("status", badge(status, "warning" if status.startswith("drift") else "monitor")),
            ("last evaluated", when(st.get("at"))),
            ("last window", f"{when(st.get('window_start'))} to {when(st.get('window_end'))}"),
            ("reference rows", num(st.get("reference_rows"))),
            ("current rows", num(report.get("n_current"))),
        ]
        dl = '<dl class="facts">' + "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in facts) + "</dl>"
        feats = [x for x in report.get("features", []) if isinstance(x, dict)][:8]
        feat_table = ""
        if feats:
            feat_table = table(
                ["feature", "test", "statistic", "corrected p", "verdict"],
                [
                    [
                        esc(x.get("feature")),
                        esc(x.get("test")),
                        num(x.get("statistic")),
                        num(x.get("adjusted_p_value")),
                        "drift" if x.get("drifted") else "ok",
                    ]
                    for x in feats
                ],
            )
        kind = {"llm": "llm_drift", "prediction": "prediction_drift", "data": "data_drift"}.get(
            cfg.kind, "performance_drift"
        )
        findings_link = link(
            "/ui/findings", "its findings", kind=kind, label=f"model={cfg.model}" if cfg.model else ""
        )
        out.append(
            f'<section class="card monitor" data-monitor="{esc(name)}"><h2>{esc(name)}</h2>{dl}'
            f"{statistic_chart(history, name)}{feat_table}<p>{findings_link}</p></section>"
        )
    return "".join(out)


def firing_by(ctx: ServiceContext, label: str, kinds: frozenset[str]) -> dict[str, list[Finding]]:
    """Firing findings of ``kinds`` grouped by the value of subject label ``label``."""
    out: dict[str, list[Finding]] = {}
    for f in ctx.book.firing():
        if f.kind in kinds and f.subject.get(label):
            out.setdefault(f.subject[label], []).append(f)
    return out


def health_of(
    ctx: ServiceContext, label: str, value: str, kinds: frozenset[str]
) -> tuple[str, list[Finding]]:
    firing = firing_by(ctx, label, kinds).get(value, [])
    return worst(firing), firing


def runs_page(ctx: ServiceContext) -> str:
    runs = [r[0] for r in ctx.store.distinct("training_steps", ["run_id"]) if r[0]]
    if not runs:
        return '<p class="muted empty">No training steps received yet (docs/training.md).</p>'
    by_run = firing_by(ctx, "run_id", TRAINING_KINDS | CARBON_KINDS)
    rows = []
    for run_id in runs[:MAX_RUNS_LISTED]:
        firing = by_run.get(run_id, [])
        health = worst(firing)
        rows.append(
            [
                link(f"/ui/runs/{quote(run_id, safe='')}", run_id),
                badge(health),
                ", ".join(f'<a href="/ui/findings/{esc(f.id)}">{esc(f.kind)}</a>' for f in firing[:6]) or "-",
            ]
        )
    return table(["run", "health", "firing"], rows, "runs")


def run_page(ctx: ServiceContext, run_id: str) -> str:
    health, firing = health_of(ctx, "run_id", run_id, TRAINING_KINDS | CARBON_KINDS)
    head = f"<p>Health: {badge(health)}</p>" + firing_list(firing)
    return head + run_view(ctx, run_id)


def gpus_page(ctx: ServiceContext) -> str:
    from gpu_health import names as gpu_names

    seen = ctx.store.distinct(
        "metric_points", ["host", "hw_id"], since=time.time() - 86400, where={"name": gpu_names.INFO}
    )
    known = {hw: host for host, hw in seen if hw}
    by_gpu: dict[str, list[Finding]] = {}
    for f in ctx.book.firing():
        if f.kind in GPU_KINDS and f.subject.get("gpu_uuid"):
            known.setdefault(f.subject["gpu_uuid"], f.subject.get("host", ""))
            by_gpu.setdefault(f.subject["gpu_uuid"], []).append(f)
    if not known:
        return '<p class="muted empty">No GPUs reported in the last 24 hours (docs/gpu_health.md).</p>'
    rows = []
    for hw, host in sorted(known.items(), key=lambda kv: (kv[1] or "", kv[0])):
        firing = by_gpu.get(hw, [])
        verdict = (
            "fault" if any(f.kind == "gpu_fault" for f in firing) else "degraded" if firing else "healthy"
        )
        cls = {"fault": "critical", "degraded": "warning"}.get(verdict, "healthy")
        index = next((f.subject.get("gpu_index") for f in firing if f.subject.get("gpu_index")), "")
        rows.append(
            [
                esc(host or "-"),
                esc(index),
                link(f"/ui/gpus/{quote(hw, safe='')}", hw),
                f'<span class="verdict" data-verdict="{verdict}">{badge(verdict, cls)}</span>',
                "; ".join(f'<a href="/ui/findings/{esc(f.id)}">{esc(f.summary)}</a>' for f in firing[:3])
                or "-",
            ]
        )
    return table(["host", "index", "GPU", "verdict", "why"], rows, "fleet")


def gpu_page(ctx: ServiceContext, uuid: str, since: float) -> str:
    health, firing = health_of(ctx, "gpu_uuid", uuid, GPU_KINDS)
    head = f"<p>Verdict: {badge(health)}</p>" + firing_list(firing)
    return head + gpu_view(ctx, uuid, since)


def worst(firing: list[Finding]) -> str:
    if any(f.severity == Severity.CRITICAL for f in firing):
        return "critical"
    return "warning" if firing else "healthy"


def firing_list(firing: list[Finding]) -> str:
    items = "".join(
        f'<li>{badge(str(f.severity))} <a href="/ui/findings/{esc(f.id)}">{esc(f.kind)}</a>'
        f" {esc(f.summary)}</li>"
        for f in firing
    )
    return f'<ul class="firing">{items}</ul>' if items else ""
