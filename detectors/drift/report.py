"""Renderings of a DriftReport: a terminal table, JSON, and self-contained HTML with SVG plots."""

from __future__ import annotations

import html
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from detectors.drift.compare import DriftReport, FeatureDrift
from detectors.drift.profile import CategoricalProfile, NumericProfile, ReferenceProfile, current_values


def _fmt(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
        return f"{v:.2e}"
    return f"{v:.4f}"


def _movement(f: FeatureDrift) -> str:
    mv = f.movement
    if not f.feature.endswith(":missing") and mv.get("missing_rate", [0, 0])[1] == 1.0:
        return "no values in the current file (all missing)"
    if "mean_shift_sd" in mv:
        ref, cur = mv["reference"]["mean"], mv["current"]["mean"]
        return f"mean {_tick(ref)} -> {_tick(cur)} ({mv['mean_shift_sd']:+.2f} sd)"
    if mv.get("unseen"):
        cat, share = max(mv["unseen"].items(), key=lambda kv: kv[1])
        return f"new {cat!r} {share:.1%}"
    if mv.get("shares"):
        s = mv["shares"][0]
        return f"{s['category']!r} {s['reference']:.1%} -> {s['current']:.1%}"
    if mv.get("missing_rate"):
        a, b = mv["missing_rate"]
        return f"missing {a:.1%} -> {b:.1%}"
    return ""


def table(report: DriftReport) -> str:
    head = ["feature", "kind", "test", "statistic", "p-value", "adj. p", "distance", "drift", "movement"]
    rows = [
        [
            f.feature,
            f.kind,
            f.test,
            _fmt(f.statistic),
            _fmt(f.p_value),
            _fmt(f.adjusted_p_value),
            _fmt(f.distance),
            "DRIFT" if f.drifted else "ok",
            _movement(f),
        ]
        for f in report.top(len(report.features))
    ]
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [head, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    verdict = "DRIFT" if report.drifted else "no drift"
    decision = (
        f"{report.test} p={_fmt(report.p_value)}"
        if report.multivariate is not None
        else f"{len(report.drifted_features)} of {len(report.features)} checks drifted"
    )
    lines.append("")
    thresholds = [f.threshold for f in report.features if not f.feature.endswith(":missing")]
    threshold = thresholds[0] if thresholds else None
    if report.multivariate is None and report.features:
        rule = (
            f"its distance reaches {threshold}"
            if threshold is not None
            else f"its adj. p (the p-value corrected for testing {len(report.features)} checks "
            f"together) is at most {report.alpha}"
        )
        lines.append(f"A feature drifts when {rule}.")
    if threshold is not None:
        basis = f"threshold {threshold}"
    elif report.multivariate is None:
        basis = f"alpha {report.alpha}, correction {report.correction}"
    else:
        basis = f"alpha {report.alpha}"
    lines.append(
        f"{verdict}: {decision} ({basis}; "
        f"{report.n_reference} reference rows, {report.n_current} current rows)"
    )
    return "\n".join(lines)


def to_json(report: DriftReport, **extra: Any) -> str:
    """The report as JSON; ``extra`` fields (the CLI's status and exit code) come first."""
    return json.dumps({**extra, **report.to_dict()}, indent=2, default=float)


def _pct(v: float) -> str:
    return f"{v:.0%}" if v >= 0.1 or v == 0 else f"{v:.1%}"


def _svg_bars(
    labels: Sequence[str],
    ref: Sequence[float],
    cur: Sequence[float],
    edges: Sequence[float] | None = None,
    width: int = 440,
    height: int = 150,
) -> str:
    """Side-by-side bars of reference (grey) and current (orange) shares per bin or category,
    with a share axis on the left and, below, the bin edges (numbers) or category names."""
    left, right, top_pad, bottom = 44, 8, 8, 34
    plot_w, plot_h = width - left - right, height - top_pad - bottom
    k = max(len(labels), 1)
    top = max([*ref, *cur, 1e-9])
    slot = plot_w / k
    base = top_pad + plot_h
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" role="img"'
        ' font-family="system-ui, sans-serif" font-size="10">'
    ]
    # Share axis: 0, half and the top, with faint grid lines.
    for frac in (0.0, 0.5, 1.0):
        y = base - plot_h * frac
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e7eb"/>'
            f'<text x="{left - 4}" y="{y + 3:.1f}" text-anchor="end" fill="#555">{_pct(top * frac)}</text>'
        )
    for i, (lab, r, c) in enumerate(zip(labels, ref, cur, strict=True)):
        x = left + i * slot
        bar_w = max(slot / 2 - 1, 1)
        for j, (v, color) in enumerate(((r, "#9aa5b1"), (c, "#f08c00"))):
            h = plot_h * v / top
            parts.append(
                f'<rect x="{x + j * slot / 2 + 0.5:.1f}" y="{base - h:.1f}" width="{bar_w:.1f}"'
                f' height="{h:.1f}" fill="{color}"><title>{html.escape(lab)}: '
                f"{'reference' if j == 0 else 'current'} {v:.1%}</title></rect>"
            )
    parts.append(f'<line x1="{left}" x2="{width - right}" y1="{base}" y2="{base}" stroke="#555"/>')
    if edges is not None:
        # Numbers: round values along the binned range.
        lo, hi = edges[0], edges[-1]
        for t in _nice_ticks(lo, hi):
            x = left + (t - lo) / (hi - lo) * plot_w
            parts.append(
                f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{base}" y2="{base + 4}" stroke="#555"/>'
                f'<text x="{x:.1f}" y="{base + 15}" text-anchor="middle" fill="#333">{_tick(t)}</text>'
            )
    else:
        step = 1 if k <= 12 else -(-k // 12)
        for i in range(0, k, step):
            x = left + (i + 0.5) * slot
            parts.append(
                f'<text x="{x:.1f}" y="{base + 14}" text-anchor="middle" fill="#333">'
                f"{html.escape(labels[i][:12])}</text>"
            )
    parts.append("</svg>")
    return "".join(parts)


def _nice_ticks(lo: float, hi: float, target: int = 6) -> list[float]:
    """Round values (steps of 1, 2 or 5 times a power of ten) inside [lo, hi]."""
    if not hi > lo:
        return [lo]
    raw = (hi - lo) / target
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _tick(v: float) -> str:
    """An axis value in about 6 characters: 0.012, 40.65, 68.8k, 2.7M."""
    a = abs(v)
    if a >= 1e9 or 0 < a < 1e-3:
        return f"{v:.2g}"
    if a >= 1e6:
        return f"{v / 1e6:.3g}M"
    if a >= 1e4:
        return f"{v / 1e3:.3g}k"
    return f"{v:.4g}"


def _category_order(cats: set[str], weight: Mapping[str, float]) -> list[str]:
    """Numbers (0, 1, 2, ... or 0.5, 1.5) in numeric order; other categories by share."""
    try:
        return sorted(cats, key=float)
    except ValueError:
        return sorted(cats, key=lambda c: (-weight.get(c, 0.0), c))


def _plot(profile: ReferenceProfile, feature: str, values: Sequence[Any] | np.ndarray) -> str:
    prof = profile.features.get(feature)
    if prof is None:
        return ""
    cur, _ = current_values(prof, values)
    if isinstance(prof, NumericProfile):
        if prof.n == 0 or cur.size == 0:
            return ""
        lo = min(float(np.quantile(prof.sorted, 0.01)), float(np.quantile(cur, 0.01)))
        hi = max(float(np.quantile(prof.sorted, 0.99)), float(np.quantile(cur, 0.99)))
        edges = np.linspace(lo, hi if hi > lo else lo + 1, 21)
        r = np.histogram(np.clip(prof.sorted, lo, hi), edges)[0] / prof.n
        c = np.histogram(np.clip(cur, lo, hi), edges)[0] / cur.size
        labels = [f"{a:.3g} to {b:.3g}" for a, b in itertools.pairwise(edges.tolist())]
        return _svg_bars(labels, r.tolist(), c.tolist(), edges=edges.tolist())
    assert isinstance(prof, CategoricalProfile)
    shares = prof.shares()
    vals, counts = (
        np.unique(cur.astype(str), return_counts=True) if cur.size else (np.array([]), np.array([]))
    )
    cur_shares = {
        str(v): int(n) / max(cur.size, 1) for v, n in zip(vals.tolist(), counts.tolist(), strict=True)
    }
    weight = {c: shares.get(c, 0.0) + cur_shares.get(c, 0.0) for c in set(shares) | set(cur_shares)}
    # At most 20 bars: the categories with the largest shares, then in their display order.
    kept = set(sorted(weight, key=lambda c: -weight[c])[:20])
    cats = _category_order(kept, weight)
    return _svg_bars(cats, [shares.get(c, 0.0) for c in cats], [cur_shares.get(c, 0.0) for c in cats])


def to_html(
    report: DriftReport,
    profile: ReferenceProfile,
    current: Mapping[str, Sequence[Any] | np.ndarray],
    title: str = "mlvigil drift report",
) -> str:
    """One page: the verdict, a compact table of every check, then one card per feature with
    its distributions. The cards flow in a grid, so the page fills any window width."""
    verdict = "Drift detected" if report.drifted else "No drift"
    rows, cards = [], []
    for f in report.top(len(report.features)):
        cls = "drift" if f.drifted else ""
        rows.append(
            f'<tr class="{cls}"><td><b>{html.escape(f.feature)}</b></td><td>{f.kind}</td>'
            f"<td>{f.test}</td><td>{_fmt(f.statistic)}</td><td>{_fmt(f.p_value)}</td>"
            f"<td>{_fmt(f.adjusted_p_value)}</td><td>{_fmt(f.distance)}</td>"
            f"<td>{'DRIFT' if f.drifted else 'ok'}</td><td>{html.escape(_movement(f))}</td></tr>"
        )
        if f.feature.endswith(":missing"):
            continue
        plot = _plot(profile, f.feature, current.get(f.feature, []))
        if plot:
            cards.append(
                f'<div class="card {cls}"><h3>{html.escape(f.feature)} '
                f"<span>{'DRIFT' if f.drifted else 'ok'}: {html.escape(_movement(f))}</span></h3>{plot}</div>"
            )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em 2em; color: #222; }}
h1 {{ font-size: 22px; margin: 0 0 8px; }}
table {{ border-collapse: collapse; margin: 8px 0 20px; }}
td, th {{ border-bottom: 1px solid #ddd; padding: 4px 10px; text-align: left; font-size: 13px; }}
tr.drift td {{ background: #fff4e6; }}
.legend span {{ display: inline-block; width: 12px; height: 12px; vertical-align: -1px; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(460px, 1fr)); gap: 12px; }}
.card {{ border: 1px solid #ddd; border-radius: 6px; padding: 8px 10px; }}
.card.drift {{ border-color: #f08c00; background: #fffaf3; }}
.card h3 {{ font-size: 14px; margin: 0 0 4px; }} .card h3 span {{ font-weight: normal; color: #555; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p><b>{verdict}</b>: {len(report.drifted_features)} of {len(report.features)} checks drifted
(test {report.test}, alpha {report.alpha}, correction {report.correction};
{report.n_reference} reference rows, {report.n_current} current rows).</p>
<table><tr><th>feature</th><th>kind</th><th>test</th><th>statistic</th><th>p-value</th><th>adj. p</th>
<th>distance</th><th>drift</th><th>movement</th></tr>
{"".join(rows)}
</table>
<p class="legend">Share of rows per bin or category:
 <span style="background:#9aa5b1"></span> reference <span style="background:#f08c00"></span> current</p>
<div class="grid">{"".join(cards)}</div>
</body></html>
"""
