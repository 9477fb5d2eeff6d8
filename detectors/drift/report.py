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
from mlvigil.core.svg import CURRENT_COLOR, REFERENCE_COLOR, bars
from mlvigil.core.svg import tick as _tick


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
        return bars(labels, r.tolist(), c.tolist(), edges=edges.tolist())
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
    return bars(cats, [shares.get(c, 0.0) for c in cats], [cur_shares.get(c, 0.0) for c in cats])


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
 <span style="background:{REFERENCE_COLOR}"></span> reference
 <span style="background:{CURRENT_COLOR}"></span> current</p>
<div class="grid">{"".join(cards)}</div>
</body></html>
"""
