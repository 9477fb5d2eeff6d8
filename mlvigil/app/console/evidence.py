"""The evidence behind a finding, drawn: one function per family of finding kinds, and the
training run and GPU views that their pages and the runs/GPUs pages share.

Everything here reads Findings' evidence (what the detector decided on) and aggregates the
store computes (``Store.grid``); nothing loads raw rows in proportion to a run's size.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from gpu_health import names as gpu_names
from mlvigil.app.console.render import card, esc, link, num, table, when
from mlvigil.core import svg
from mlvigil.core.findings import Finding

if TYPE_CHECKING:
    from mlvigil.app.console.history import StatisticHistory
    from mlvigil.core.context import ServiceContext

DRIFT_KINDS = frozenset({"data_drift", "prediction_drift", "llm_drift"})
TRAINING_KINDS = frozenset(
    {"training_slowdown", "straggler", "throughput_drop", "dataloader_stall", "loss_anomaly"}
)
GPU_KINDS = frozenset({"gpu_fault", "gpu_degraded"})
CARBON_KINDS = frozenset({"carbon_overrun", "carbon_forecast_overrun"})

#: Columns of the training heat map and points of the run's curves (bins of steps).
RUN_BINS = 100
#: Time bins of a GPU's signals.
GPU_BINS = 240
#: Most ranks drawn as lines in the straggler plot (the highest-scoring ones).
MAX_SCORE_LINES = 6
#: How far back a GPU's page looks by default.
GPU_WINDOW_S = 3 * 3600.0

_QUANTILES = ("p05", "p25", "p50", "p75", "p95")


def _finite(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) else None


# -- drift -------------------------------------------------------------------------------------
def feature_plot(feature: dict[str, Any]) -> str:
    """Reference against current for one checked feature, from the movement its test recorded:
    shares per category, or the percentiles of a number."""
    mv = feature.get("movement") or {}
    if mv.get("shares") or mv.get("unseen"):
        shares = list(mv.get("shares") or [])
        seen = {s["category"] for s in shares}
        shares += [
            {"category": c, "reference": 0.0, "current": v}
            for c, v in (mv.get("unseen") or {}).items()
            if c not in seen
        ]
        shares = shares[:20]
        return svg.bars(
            [str(s["category"]) for s in shares],
            [float(s["reference"]) for s in shares],
            [float(s["current"]) for s in shares],
        )
    ref, cur = mv.get("reference") or {}, mv.get("current") or {}
    if all(k in ref for k in _QUANTILES) and all(k in cur for k in _QUANTILES):
        return svg.boxes(["reference", "current"], [[float(d[k]) for k in _QUANTILES] for d in (ref, cur)])
    return ""


def _feature_table(features: Sequence[dict[str, Any]]) -> str:
    rows = [
        [
            f"<b>{esc(f.get('feature'))}</b>",
            esc(f.get("test", "")),
            num(f.get("statistic")),
            num(f.get("p_value")),
            num(f.get("adjusted_p_value")),
            num(f.get("distance")),
            '<span class="badge critical">drift</span>' if f.get("drifted") else "ok",
            esc(f.get("summary", "")),
        ]
        for f in features
    ]
    return table(
        ["feature", "test", "statistic", "p-value", "corrected p", "distance", "verdict", "movement"], rows
    )


def statistic_chart(history: StatisticHistory, monitor: str, alarm_ts: float | None = None) -> str:
    """The monitor's statistic at each evaluation since the service started."""
    what, points = history.series(monitor)
    if not points:
        return (
            '<p class="muted">No evaluations recorded yet (each monitor evaluation is recorded'
            " once the detectors run).</p>"
        )
    log_p = what == "p-value"

    def scale(v: float) -> float:
        # p-values below 1e-30 (often 0.0 in floating point) all read "overwhelming": drawn at 30.
        return -math.log10(max(v, 1e-30)) if log_p else v

    thresholds = [p.threshold for p in points if p.threshold is not None]
    chart = svg.LineChart(
        series=[
            svg.Series(
                f"-log10 {what}" if log_p else what, [p.at for p in points], [scale(p.value) for p in points]
            )
        ],
        x_time=True,
        y_label=f"-log10 {what} (higher: stronger evidence of drift; at most 30)" if log_p else what,
        y_min=0.0,
    )
    if thresholds:
        label = f"alpha {thresholds[-1]:g}" if log_p else f"threshold {thresholds[-1]:.3g}"
        chart.rules.append(svg.Rule(label, y=scale(thresholds[-1])))
    chart.markers = [
        svg.Marker(p.at, scale(p.value), f"drift at {time.strftime('%H:%M:%S', time.gmtime(p.at))}Z")
        for p in points
        if p.status.startswith("drift")
    ][-200:]
    if alarm_ts is not None:
        chart.rules.append(svg.Rule("alarm", x=alarm_ts, color="#862e9c"))
    return svg.line_chart(chart)


def estimates_plot(metrics: Sequence[dict[str, Any]]) -> str:
    """Each estimated metric's band against the reference's range."""
    names: list[str] = []
    ranges: list[list[float]] = []
    for m in metrics[:6]:
        est = [_finite(m.get(k)) for k in ("lower", "value", "upper")]
        ref = [_finite(m.get(k)) for k in ("reference_lower", "reference_value", "reference_upper")]
        if None in est or None in ref:
            continue
        e = [x for x in est if x is not None]
        r = [x for x in ref if x is not None]
        names += [f"{m.get('metric')} ref", f"{m.get('metric')} now"]
        ranges += [[r[0], r[0], r[1], r[2], r[2]], [e[0], e[0], e[1], e[2], e[2]]]
    if not names:
        return ""
    return svg.boxes(names, ranges, width=480)


def _estimates_table(metrics: Sequence[dict[str, Any]]) -> str:
    rows = [
        [
            esc(m.get("metric")),
            num(m.get("value")),
            f"{num(m.get('lower'))} to {num(m.get('upper'))}",
            num(m.get("reference_value")),
            f"{num(m.get('reference_lower'))} to {num(m.get('reference_upper'))}",
            num(m.get("realised")),
            '<span class="badge critical">alarm</span>' if m.get("alarm") else "ok",
        ]
        for m in metrics
    ]
    return table(["metric", "estimate", "band", "reference", "reference range", "realised", "verdict"], rows)


def _estimated_for(ctx: ServiceContext, model: str | None) -> list[tuple[str, list[dict[str, Any]]]]:
    """Label-free estimates of the model's performance from its estimated_performance monitors."""
    registry = ctx.services.get("drift")
    if registry is None or not model:
        return []
    out = []
    for name, det in list(registry.detectors.items()):
        cfg = det.config
        if cfg.kind != "estimated_performance" or (cfg.model and cfg.model != model):
            continue
        metrics = det.status().get("metrics")
        if isinstance(metrics, list) and metrics:
            out.append((name, metrics))
    return out


def drift_evidence(ctx: ServiceContext, history: StatisticHistory, f: Finding) -> str:
    ev = f.evidence
    parts: list[str] = []
    facts = [
        ("monitor", esc(ev.get("monitor", ""))),
        ("test", esc(ev.get("test", ""))),
        ("correction", esc(ev.get("correction", ""))),
        ("alpha", num(ev.get("alpha"))),
        ("monitor p-value", num(ev.get("p_value"))),
        ("reference rows", num(ev.get("n_reference"))),
        ("current rows", num(ev.get("n_current"))),
        ("checks drifted", f"{num(ev.get('n_drifted'))} of {num(ev.get('n_features'))}"),
    ]
    stream = ev.get("streaming")
    if isinstance(stream, dict):
        facts += [
            ("streaming detector", esc(stream.get("detector", ""))),
            ("statistic / threshold", f"{num(stream.get('statistic'))} / {num(stream.get('threshold'))}"),
            ("first alarm", when(stream.get("first_alarm_ts"))),
        ]
    parts.append(_facts(facts))
    features = [x for x in ev.get("top_features") or [] if isinstance(x, dict)]
    if features:
        parts.append(_feature_table(features))
        plots = []
        for feat in features[:8]:
            plot = feature_plot(feat)
            if plot:
                verdict = "drift" if feat.get("drifted") else "ok"
                plots.append(
                    f'<figure class="feature {verdict}" data-feature="{esc(feat.get("feature"))}">'
                    f"<figcaption><b>{esc(feat.get('feature'))}</b> {verdict}: {esc(feat.get('summary', ''))}"
                    f"</figcaption>{plot}</figure>"
                )
        if plots:
            legend = (
                f'<p class="legend"><span style="background:{svg.REFERENCE_COLOR}"></span> reference '
                f'<span style="background:{svg.CURRENT_COLOR}"></span> current window</p>'
            )
            parts.append(
                card(
                    "Reference and current distributions",
                    legend + '<div class="grid">' + "".join(plots) + "</div>",
                )
            )
    monitor = ev.get("monitor")
    if isinstance(monitor, str):
        alarm = stream.get("alarm_ts") if isinstance(stream, dict) else None
        parts.append(
            card(f"Monitor {monitor}: statistic over time", statistic_chart(history, monitor, alarm))
        )
    impact = ev.get("performance_impact")
    estimated: list[tuple[str, list[dict[str, Any]]]] = []
    if isinstance(impact, dict) and impact.get("metrics"):
        estimated.append(("this window", list(impact["metrics"])))
    estimated += _estimated_for(ctx, f.subject.get("model"))
    for source, metrics in estimated[:3]:
        parts.append(
            card(
                f"Estimated performance without labels ({source})",
                estimates_plot(metrics) + _estimates_table(metrics),
            )
        )
    return "".join(parts)


def performance_evidence(ctx: ServiceContext, history: StatisticHistory, f: Finding) -> str:
    ev = f.evidence
    metrics = [m for m in ev.get("metrics") or [] if isinstance(m, dict)]
    parts = [
        _facts(
            [
                ("monitor", esc(ev.get("monitor", ""))),
                ("estimated without labels", esc(bool(ev.get("estimated")))),
            ]
        )
    ]
    if ev.get("estimated"):
        parts.append(card("Estimated performance", estimates_plot(metrics) + _estimates_table(metrics)))
    elif metrics:
        names = [str(m.get("metric")) for m in metrics]
        ref = [_finite(m.get("reference")) or 0.0 for m in metrics]
        cur = [_finite(m.get("current")) or 0.0 for m in metrics]
        rows = [
            [esc(m.get("metric")), num(m.get("reference")), num(m.get("current")), num(m.get("p_value"))]
            for m in metrics
        ]
        parts.append(
            card(
                "Reference and current performance",
                svg.bars(names, ref, cur) + table(["metric", "reference", "current", "p-value"], rows),
            )
        )
    monitor = ev.get("monitor")
    if isinstance(monitor, str):
        parts.append(card(f"Monitor {monitor}: over time", statistic_chart(history, monitor)))
    return "".join(parts)


# -- training ------------------------------------------------------------------------------------
def _sort_key(v: Any) -> tuple[int, Any]:
    try:
        return (0, int(v))
    except (TypeError, ValueError):
        return (1, str(v))


def run_view(ctx: ServiceContext, run_id: str, focus: Finding | None = None) -> str:
    """Per-rank step time heat map, straggler scores over steps, the loss curve with anomalies
    marked, and the GPU signals attributed as cause, for one training run."""
    store = ctx.store
    grid = store.grid(
        "training_steps",
        x="step",
        group="rank",
        values=["step_time_s", "loss", "comm_s"],
        bins=RUN_BINS,
        where={"run_id": run_id},
        integer_x=True,
    )
    if not grid.cells:
        return f'<p class="muted">No training steps stored for run {esc(run_id)}.</p>'
    ranks = sorted({g for g, _ in grid.cells}, key=_sort_key)
    edges = [grid.lo + i * grid.width for i in range(grid.bins + 1)]
    centers = [grid.lo + (i + 0.5) * grid.width for i in range(grid.bins)]
    # Synchronous ranks all wait for the slowest, so their step times match; what differs is the
    # time outside communication (as the straggler detector compares, training.straggler.exclude_comm).
    step_time = [[_compute(grid.cells.get((r, b))) for b in range(grid.bins)] for r in ranks]
    run_findings = store.findings(subject={"run_id": run_id}, limit=500)
    parts = []
    # Heat map: one row per rank.
    parts.append(
        card(
            "Step time per rank",
            svg.heatmap(
                [f"rank {r}" for r in ranks],
                edges,
                step_time,
                x_label="step",
                value_label="mean step time less communication (s)",
            ),
            "plot-card step-times",
        )
    )
    # Straggler score: each rank's step time over the median rank's, per bin of steps.
    medians = []
    for b in range(grid.bins):
        col = [row[b] for row in step_time if row[b] is not None]
        medians.append(statistics.median(col) if col else None)  # type: ignore[type-var]
    scores = [
        [(v / m if v is not None and m else None) for v, m in zip(row, medians, strict=True)]
        for row in step_time
    ]
    top = sorted(range(len(ranks)), key=lambda i: -max((s for s in scores[i] if s is not None), default=0.0))
    chart = svg.LineChart(
        series=[svg.Series(f"rank {ranks[i]}", centers, scores[i]) for i in top[:MAX_SCORE_LINES]],
        rules=[svg.Rule("median rank", y=1.0, color="#555")],
        x_label="step",
        y_label="step time / median rank",
    )
    for g in run_findings:
        if g.kind == "straggler":
            step = _finite(g.evidence.get("since_step"))
            score = _finite(g.evidence.get("peak_relative_score"))
            if step is not None and score is not None:
                chart.markers.append(
                    svg.Marker(step, score, f"straggler: rank {g.subject.get('rank')} ({g.state})")
                )
        elif g.kind in ("training_slowdown", "throughput_drop", "dataloader_stall"):
            step = _finite(g.evidence.get("began_step"))
            if step is not None:
                chart.rules.append(svg.Rule(f"{g.kind} from step {step:.0f}", x=step))
    parts.append(card("Straggler score per rank", svg.line_chart(chart), "plot-card straggler-scores"))
    # Loss: mean over ranks per bin, anomalies marked.
    loss: list[float | None] = []
    for b in range(grid.bins):
        total = weight = 0.0
        for r in ranks:
            n, means = grid.cells.get((r, b), (0, [None, None, None]))
            if means[1] is not None:
                total += means[1] * n
                weight += n
        loss.append(total / weight if weight else None)
    loss_chart = svg.LineChart(series=[svg.Series("loss", centers, loss)], x_label="step", y_label="loss")
    for g in run_findings:
        if g.kind != "loss_anomaly":
            continue
        step = _finite(g.evidence.get("step"))
        if step is None:
            continue
        value = _finite(g.evidence.get("value"))
        if value is None:
            binned = loss[grid.bin_of(step)]
            value = binned if binned is not None else 0.0
        loss_chart.markers.append(
            svg.Marker(step, value, f"{g.evidence.get('anomaly', 'anomaly')} at step {step:.0f}")
        )
    parts.append(card("Loss", svg.line_chart(loss_chart), "plot-card loss"))
    parts.append(cause_view(ctx, focus, run_findings))
    return "".join(parts)


def _compute(cell: tuple[int, list[float | None]] | None) -> float | None:
    """Mean step time less mean communication time of one (rank, bin) cell."""
    if cell is None or cell[1][0] is None:
        return None
    step, comm = cell[1][0], cell[1][2]
    return step - comm if comm is not None else step


def _cell(
    cells: dict[tuple[Any, int], tuple[int, list[float | None]]], group: Any, b: int, j: int
) -> float | None:
    found = cells.get((group, b))
    return found[1][j] if found else None


def cause_view(ctx: ServiceContext, focus: Finding | None, run_findings: Sequence[Finding]) -> str:
    """The GPUs the training detectors blamed, with their signals over the finding's time."""
    chosen = (
        [focus]
        if focus is not None and focus.kind in TRAINING_KINDS
        else [g for g in run_findings if g.kind in TRAINING_KINDS]
    )
    rows, gpus = [], []
    for g in chosen[:20]:
        cause = g.evidence.get("suspected_cause")
        blamed = [x for x in g.evidence.get("gpus") or [] if isinstance(x, dict)]
        for b in blamed:
            uuid = str(b.get("gpu_uuid", ""))
            if uuid and uuid not in gpus:
                gpus.append(uuid)
        rows.append(
            [
                esc(g.kind),
                esc(", ".join(f"{k}={v}" for k, v in sorted(g.subject.items()))),
                esc(cause or "not attributed"),
                " ".join(
                    link(f"/ui/gpus/{b.get('gpu_uuid')}", str(b.get("gpu_uuid", ""))[-12:]) for b in blamed
                )
                or "-",
            ]
        )
    if not rows:
        return ""
    body = table(["finding", "subject", "suspected cause", "GPUs"], rows)
    since = min((g.started_at for g in chosen), default=time.time()) - 300
    for uuid in gpus[:2]:
        body += f"<h3>GPU {esc(uuid)}</h3>" + gpu_signal_charts(
            ctx, uuid, since, only=(gpu_names.CLOCK_SM, gpu_names.TEMPERATURE)
        )
    return card("GPU signals attributed as cause", body)


# -- GPUs --------------------------------------------------------------------------------------
_GPU_SIGNALS: tuple[tuple[str, str, float], ...] = (
    (gpu_names.TEMPERATURE, "temperature (°C)", 1.0),
    (gpu_names.POWER, "power (W)", 1.0),
    (gpu_names.CLOCK_SM, "SM clock (MHz)", 1.0),
    (gpu_names.UTILIZATION, "utilization", 1.0),
)


def gpu_signal_charts(ctx: ServiceContext, uuid: str, since: float, only: Sequence[str] | None = None) -> str:
    """Temperature, power, clocks (and throttle reasons) of one GPU since ``since``, binned in time."""
    wanted = [s for s in _GPU_SIGNALS if only is None or s[0] in only]
    names = [s[0] for s in wanted] + [gpu_names.CLOCK_SM_MAX]
    grid = ctx.store.grid(
        "metric_points",
        x="ts",
        group="name",
        values=["value"],
        bins=GPU_BINS,
        where={"hw_id": uuid, "name": names},
        since=since,
    )
    parts = []
    centers = [grid.lo + (i + 0.5) * grid.width for i in range(grid.bins)]
    max_clock = [
        v for (g, _), (_, (v,)) in grid.cells.items() if g == gpu_names.CLOCK_SM_MAX and v is not None
    ]
    for name, title, _ in wanted:
        ys = [_cell(grid.cells, name, b, 0) for b in range(grid.bins)]
        if all(y is None for y in ys):
            continue
        chart = svg.LineChart(series=[svg.Series(title, centers, ys)], x_time=True, y_label=title)
        if name == gpu_names.CLOCK_SM and max_clock:
            chart.rules.append(svg.Rule(f"max {max(max_clock):.0f} MHz", y=max(max_clock), color="#555"))
        parts.append(
            f'<figure class="signal" data-signal="{esc(name)}">{svg.line_chart(chart, height=160)}</figure>'
        )
    if only is None:
        events = ctx.store.grid(
            "metric_points",
            x="ts",
            group="attributes",
            values=["value"],
            bins=GPU_BINS,
            where={"hw_id": uuid, "name": gpu_names.CLOCK_EVENT},
            since=since,
        )
        series = []
        for attrs in sorted({g for g, _ in events.cells}, key=str):
            ys = [_cell(events.cells, attrs, b, 0) for b in range(events.bins)]
            if not any(y for y in ys if y):
                continue  # a reason never active: not drawn
            reason = _attr(attrs, "reason") or str(attrs)
            series.append(
                svg.Series(
                    reason, [events.lo + (i + 0.5) * events.width for i in range(events.bins)], ys, step=True
                )
            )
        if series:
            chart = svg.LineChart(
                series=series, x_time=True, y_label="throttle reasons (share of samples active)", y_min=0.0
            )
            parts.append(
                f'<figure class="signal" data-signal="throttle">{svg.line_chart(chart, height=160)}</figure>'
            )
    if not parts:
        return '<p class="muted">No signals stored for this GPU in this time.</p>'
    return '<div class="grid">' + "".join(parts) + "</div>"


def _attr(attrs: Any, key: str) -> str | None:
    try:
        value = json.loads(attrs) if isinstance(attrs, str) else attrs
    except ValueError:
        return None
    return str(value[key]) if isinstance(value, dict) and key in value else None


def gpu_counters(ctx: ServiceContext, uuid: str, since: float) -> str:
    """XIDs, ECC errors, retired/remapped memory and whether NVML lost the GPU: the latest values."""
    wanted = [
        gpu_names.XID_EVENTS,
        gpu_names.ECC_ERRORS,
        gpu_names.LOST,
        gpu_names.RETIRED_PAGES,
        gpu_names.REMAPPED_ROWS,
        gpu_names.PCIE_REPLAY,
    ]
    rows = ctx.store.query(
        "metric_points",
        columns=["ts", "name", "value", "attributes"],
        where={"hw_id": uuid, "name": wanted},
        since=since,
        last=2000,
    )
    latest: dict[tuple[str, str], tuple[float, float]] = {}
    first_seen: dict[tuple[str, str], float] = {}
    for ts, name, value, attrs in zip(
        rows["ts"], rows["name"], rows["value"], rows["attributes"], strict=True
    ):
        key = (name, attrs or "")
        latest[key] = (ts, value)
        if value and key not in first_seen:
            first_seen[key] = ts
    out = []
    for (name, attrs), (_ts, value) in sorted(latest.items()):
        detail = ", ".join(f"{k}={v}" for k, v in (json.loads(attrs) if attrs else {}).items())
        out.append(
            [
                esc(name.rsplit(".", 2)[-2] + "." + name.rsplit(".", 1)[-1]),
                esc(detail),
                num(value),
                when(first_seen.get((name, attrs))),
            ]
        )
    if not out:
        return '<p class="muted">No XID, ECC or memory counters stored for this GPU in this time.</p>'
    return table(["counter", "which", "latest", "first non-zero"], out, "counters")


def gpu_view(ctx: ServiceContext, uuid: str, since: float) -> str:
    return card("Signals", gpu_signal_charts(ctx, uuid, since), "plot-card") + card(
        "XIDs, ECC and memory health", gpu_counters(ctx, uuid, since)
    )


# -- carbon ------------------------------------------------------------------------------------
def carbon_evidence(f: Finding) -> str:
    """Emissions used so far against the budget, and (forecast findings) where the run is headed
    with the forecast's band."""
    ev = f.evidence
    unit = str(ev.get("unit", "g"))
    actual, limit = _finite(ev.get("actual")), _finite(ev.get("limit"))
    start = f.window_start or f.started_at
    now = f.window_end or f.updated_at
    facts = [
        ("budget", esc(ev.get("budget", ""))),
        ("measure", esc(ev.get("measure", ""))),
        ("used", f"{num(actual)} {esc(unit)}"),
        ("limit", f"{num(limit)} {esc(unit)}"),
        ("progress", num(ev.get("progress"))),
        (
            "projected",
            f"{num(ev.get('projected'))} {esc(unit)} (band {num(ev.get('lower'))} to {num(ev.get('upper'))})"
            if ev.get("projected") is not None
            else "",
        ),
        ("source", esc(ev.get("source", ""))),
    ]
    if actual is None or limit is None:
        return _facts(facts)
    curve = ev.get("curve")
    used_ts: list[float] = [start, now]
    used: list[float] = [0.0, actual]
    if isinstance(curve, dict):
        cts, cvals = curve.get("ts"), curve.get("value")
        if isinstance(cts, list) and isinstance(cvals, list) and len(cts) == len(cvals) >= 2:
            points = [(_finite(t), _finite(v)) for t, v in zip(cts, cvals, strict=True)]
            kept = [(t, v) for t, v in points if t is not None and v is not None]
            if len(kept) >= 2:
                used_ts, used = [t for t, _ in kept], [v for _, v in kept]
    chart = svg.LineChart(
        series=[svg.Series(f"used ({unit})", used_ts, used, color=svg.PALETTE[0])],
        rules=[svg.Rule(f"budget {limit:.4g} {unit}", y=limit)],
        x_time=True,
        y_label=f"cumulative {unit}",
        y_min=0.0,
    )
    progress = _finite(ev.get("progress"))
    projected = _finite(ev.get("projected"))
    lower, upper = _finite(ev.get("lower")), _finite(ev.get("upper"))
    if progress and projected is not None and now > start:
        end = start + (now - start) / progress
        chart.series.append(svg.Series("forecast", [now, end], [actual, projected], color=svg.CURRENT_COLOR))
        if lower is not None and upper is not None:
            chart.bands.append(svg.Band("forecast band", [now, end], [actual, lower], [actual, upper]))
        chart.markers.append(svg.Marker(end, projected, f"projected {projected:.4g} {unit} at the end"))
    return _facts(facts) + card("Emissions against the budget", svg.line_chart(chart), "plot-card")


# -- shared ------------------------------------------------------------------------------------
def _facts(items: Sequence[tuple[str, str]]) -> str:
    shown = [(k, v) for k, v in items if v not in ("", "-", "- ", "None")]
    return '<dl class="facts">' + "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in shown) + "</dl>"


def draw(ctx: ServiceContext, history: StatisticHistory, f: Finding) -> str:
    """The drawn evidence of one finding (HTML), by its kind."""
    if f.kind in DRIFT_KINDS:
        return drift_evidence(ctx, history, f)
    if f.kind == "performance_drift":
        return performance_evidence(ctx, history, f)
    if f.kind in TRAINING_KINDS and f.subject.get("run_id"):
        return run_view(ctx, f.subject["run_id"], focus=f)
    if f.kind in GPU_KINDS and f.subject.get("gpu_uuid"):
        since = min(f.started_at, time.time() - GPU_WINDOW_S) - 60
        facts = _facts(
            [
                (k, esc(json.dumps(v)) if isinstance(v, dict | list) else num(v))
                for k, v in list(f.evidence.items())[:12]
            ]
        )
        return facts + gpu_view(ctx, f.subject["gpu_uuid"], since)
    if f.kind in CARBON_KINDS:
        return carbon_evidence(f)
    return ""
