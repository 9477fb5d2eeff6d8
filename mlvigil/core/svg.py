"""Small server-side SVG plots: the offline drift report and the web console draw with these.

Every plot is one ``<svg>`` element sized by its viewBox (``width="100%"``), so it scales to
the page from a phone to a wide screen. Elements carry class names (``bar``, ``line``,
``band``, ``marker``, ``cell``) that the console's CSS and the browser tests rely on; every
value drawn has a ``<title>`` tooltip. Inputs are assumed bounded by the caller (the console
aggregates on the server before drawing, so a plot never has more than a few thousand parts).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

REFERENCE_COLOR = "#9aa5b1"
CURRENT_COLOR = "#f08c00"
#: Line colours, in order of the series drawn.
PALETTE = ("#1c7ed6", "#f08c00", "#2f9e44", "#ae3ec9", "#e03131", "#0c8599", "#5c940d", "#862e9c")
#: Colour levels of a heat map (cells within one level look alike and are merged).
HEAT_LEVELS = 16
_FONT = 'font-family="system-ui, sans-serif" font-size="10"'


def pct(v: float) -> str:
    return f"{v:.0%}" if v >= 0.1 or v == 0 else f"{v:.1%}"


def nice_ticks(lo: float, hi: float, target: int = 6) -> list[float]:
    """Round values (steps of 1, 2 or 5 times a power of ten) inside [lo, hi]."""
    if not hi > lo:
        return [lo]
    raw = (hi - lo) / target
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def tick(v: float) -> str:
    """An axis value in about 6 characters: 0.012, 40.65, 68.8k, 2.7M."""
    a = abs(v)
    if a >= 1e9 or 0 < a < 1e-3:
        return f"{v:.2g}"
    if a >= 1e6:
        return f"{v / 1e6:.3g}M"
    if a >= 1e4:
        return f"{v / 1e3:.3g}k"
    return f"{v:.4g}"


def _no_data(width: int, height: int) -> str:
    return f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" fill="#777">no data</text>'


def _open(width: int, height: int, kind: str, label: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" role="img"'
        f' class="plot plot-{kind}" aria-label="{html.escape(label)}" {_FONT}>'
    )


def bars(
    labels: Sequence[str],
    ref: Sequence[float],
    cur: Sequence[float],
    edges: Sequence[float] | None = None,
    width: int = 440,
    height: int = 150,
    names: tuple[str, str] = ("reference", "current"),
) -> str:
    """Side-by-side bars of reference (grey) and current (orange) shares per bin or category,
    with a share axis on the left and, below, the bin edges (numbers) or category names."""
    left, right, top_pad, bottom = 44, 8, 8, 34
    plot_w, plot_h = width - left - right, height - top_pad - bottom
    k = max(len(labels), 1)
    top = max([*ref, *cur, 1e-9])
    slot = plot_w / k
    base = top_pad + plot_h
    parts = [_open(width, height, "bars", f"{names[0]} and {names[1]} shares")]
    # Share axis: 0, half and the top, with faint grid lines.
    for frac in (0.0, 0.5, 1.0):
        y = base - plot_h * frac
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e7eb"/>'
            f'<text x="{left - 4}" y="{y + 3:.1f}" text-anchor="end" fill="#555">{pct(top * frac)}</text>'
        )
    for i, (lab, r, c) in enumerate(zip(labels, ref, cur, strict=True)):
        x = left + i * slot
        bar_w = max(slot / 2 - 1, 1)
        for j, (v, color) in enumerate(((r, REFERENCE_COLOR), (c, CURRENT_COLOR))):
            h = plot_h * v / top
            parts.append(
                f'<rect class="bar {"ref" if j == 0 else "cur"}" x="{x + j * slot / 2 + 0.5:.1f}"'
                f' y="{base - h:.1f}" width="{bar_w:.1f}" height="{h:.1f}" fill="{color}">'
                f"<title>{html.escape(lab)}: {names[j]} {v:.1%}</title></rect>"
            )
    parts.append(f'<line x1="{left}" x2="{width - right}" y1="{base}" y2="{base}" stroke="#555"/>')
    if edges is not None:
        # Numbers: round values along the binned range.
        lo, hi = edges[0], edges[-1]
        for t in nice_ticks(lo, hi):
            x = left + (t - lo) / (hi - lo) * plot_w
            parts.append(
                f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{base}" y2="{base + 4}" stroke="#555"/>'
                f'<text x="{x:.1f}" y="{base + 15}" text-anchor="middle" fill="#333">{tick(t)}</text>'
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


@dataclass
class Series:
    """One line: points (x, y); points with a None y are left out (the line joins across them)."""

    name: str
    xs: Sequence[float]
    ys: Sequence[float | None]
    color: str | None = None
    #: Draw as a step function (cumulative counters, states).
    step: bool = False


@dataclass
class Band:
    """A shaded range between two lines (a forecast band, a confidence interval)."""

    name: str
    xs: Sequence[float]
    lower: Sequence[float]
    upper: Sequence[float]
    color: str = "#f08c00"


@dataclass
class Marker:
    """A point to call out (an anomaly, an alarm), with its tooltip."""

    x: float
    y: float
    label: str
    color: str = "#e03131"


@dataclass
class Rule:
    """A horizontal (``y``) or vertical (``x``) reference line: a threshold, a budget, a start."""

    label: str
    y: float | None = None
    x: float | None = None
    color: str = "#e03131"


@dataclass
class LineChart:
    series: list[Series] = field(default_factory=list)
    bands: list[Band] = field(default_factory=list)
    markers: list[Marker] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)
    x_label: str = ""
    y_label: str = ""
    #: Format x ticks as clock times (x is epoch seconds).
    x_time: bool = False
    y_min: float | None = None


def _clock(ts: float, span: float) -> str:
    import time as _time

    t = _time.gmtime(ts)
    return _time.strftime("%H:%M:%S" if span < 600 else "%H:%M" if span < 2 * 86400 else "%d %b", t)


def _finite(values: Sequence[float | None]) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def line_chart(chart: LineChart, width: int = 560, height: int = 200) -> str:
    """Lines (with optional bands, markers and reference rules) over a shared x axis."""
    left, right, top_pad, bottom = 48, 10, 10, 30
    plot_w, plot_h = width - left - right, height - top_pad - bottom
    xs = [x for s in chart.series for x in s.xs] + [x for b in chart.bands for x in b.xs]
    xs += [m.x for m in chart.markers] + [r.x for r in chart.rules if r.x is not None]
    ys = [y for s in chart.series for y in _finite(s.ys)]
    ys += [y for b in chart.bands for y in (*_finite(b.lower), *_finite(b.upper))]
    ys += [m.y for m in chart.markers if math.isfinite(m.y)] + [r.y for r in chart.rules if r.y is not None]
    parts = [_open(width, height, "line", chart.y_label or "line chart")]
    if not xs or not ys:
        return "".join([*parts, _no_data(width, height), "</svg>"])
    x_lo, x_hi = min(xs), max(xs)
    y_lo = min(ys) if chart.y_min is None else min(chart.y_min, min(ys))
    y_hi = max(ys)
    if x_hi <= x_lo:
        x_hi = x_lo + 1
    if y_hi <= y_lo:
        y_hi = y_lo + (abs(y_lo) or 1) * 0.1
    pad = (y_hi - y_lo) * 0.05
    y_lo, y_hi = (y_lo if chart.y_min is not None else y_lo - pad), y_hi + pad

    def px(x: float) -> float:
        return left + (x - x_lo) / (x_hi - x_lo) * plot_w

    def py(y: float) -> float:
        return top_pad + plot_h - (y - y_lo) / (y_hi - y_lo) * plot_h

    base = top_pad + plot_h
    for t in nice_ticks(y_lo, y_hi, 4):
        y = py(t)
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e7eb"/>'
            f'<text x="{left - 4}" y="{y + 3:.1f}" text-anchor="end" fill="#555">{tick(t)}</text>'
        )
    span = x_hi - x_lo
    x_ticks = nice_ticks(x_lo, x_hi, 5)
    shown: set[str] = set()
    for t in x_ticks:
        x = px(t)
        text = _clock(t, span) if chart.x_time else tick(t)
        if text in shown:
            continue  # sub-second ticks of a short time axis would repeat the same clock time
        shown.add(text)
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{base}" y2="{base + 4}" stroke="#555"/>'
            f'<text x="{x:.1f}" y="{base + 15}" text-anchor="middle" fill="#333">{text}</text>'
        )
    parts.append(f'<line x1="{left}" x2="{width - right}" y1="{base}" y2="{base}" stroke="#555"/>')
    if chart.x_label:
        parts.append(
            f'<text x="{width - right}" y="{height - 2}" text-anchor="end" fill="#777">'
            f"{html.escape(chart.x_label)}</text>"
        )
    if chart.y_label:
        parts.append(f'<text x="{left}" y="{top_pad - 1}" fill="#777">{html.escape(chart.y_label)}</text>')
    for b in chart.bands:
        pts = [(x, lo, hi) for x, lo, hi in zip(b.xs, b.lower, b.upper, strict=True)]
        if not pts:
            continue
        upper = " ".join(f"{px(x):.1f},{py(hi):.1f}" for x, _, hi in pts)
        lower = " ".join(f"{px(x):.1f},{py(lo):.1f}" for x, lo, _ in reversed(pts))
        parts.append(
            f'<polygon class="band" points="{upper} {lower}" fill="{b.color}" fill-opacity="0.18">'
            f"<title>{html.escape(b.name)}</title></polygon>"
        )
    for r in chart.rules:
        if r.y is not None:
            y = py(r.y)
            parts.append(
                f'<line class="rule" x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}"'
                f' stroke="{r.color}" stroke-dasharray="4 3"><title>{html.escape(r.label)}</title></line>'
                f'<text x="{width - right - 2}" y="{y - 3:.1f}" text-anchor="end" fill="{r.color}">'
                f"{html.escape(r.label)}</text>"
            )
        elif r.x is not None:
            x = px(r.x)
            parts.append(
                f'<line class="rule" x1="{x:.1f}" x2="{x:.1f}" y1="{top_pad}" y2="{base}" stroke="{r.color}"'
                f' stroke-dasharray="4 3"><title>{html.escape(r.label)}</title></line>'
            )
    for i, s in enumerate(chart.series):
        color = s.color or PALETTE[i % len(PALETTE)]
        points: list[str] = []
        last_y: float | None = None
        for xv, yv in zip(s.xs, s.ys, strict=True):
            if yv is None or not math.isfinite(yv):
                continue  # an empty bin: the line joins its neighbours
            if s.step and last_y is not None:
                points.append(f"{px(xv):.1f},{py(last_y):.1f}")
            points.append(f"{px(xv):.1f},{py(yv):.1f}")
            last_y = yv
        if len(points) == 1:
            points.append(points[0])
        if points:
            parts.append(
                f'<polyline class="line" points="{" ".join(points)}" fill="none" stroke="{color}"'
                f' stroke-width="1.5" stroke-linecap="round"><title>{html.escape(s.name)}</title></polyline>'
            )
    for m in chart.markers:
        if math.isfinite(m.y):
            parts.append(
                f'<circle class="marker" cx="{px(m.x):.1f}" cy="{py(m.y):.1f}" r="4" fill="{m.color}">'
                f"<title>{html.escape(m.label)}</title></circle>"
            )
    if len(chart.series) > 1 or chart.bands:
        x = left + 4
        for i, s in enumerate(chart.series[:8]):
            color = s.color or PALETTE[i % len(PALETTE)]
            parts.append(
                f'<rect x="{x}" y="{top_pad + 2}" width="8" height="8" fill="{color}"/>'
                f'<text x="{x + 10}" y="{top_pad + 9}" fill="#333">{html.escape(s.name[:20])}</text>'
            )
            x += 16 + 6 * min(len(s.name), 20)
    parts.append("</svg>")
    return "".join(parts)


def heatmap(
    rows: Sequence[str],
    x_edges: Sequence[float],
    values: Sequence[Sequence[float | None]],
    *,
    x_label: str = "",
    value_label: str = "",
    width: int = 560,
    row_height: float | None = None,
) -> str:
    """A grid of cells, one row per ``rows`` entry and one column per x bin; colour from light
    (the smallest value) to dark red (the largest). Missing cells stay blank."""
    left, right, top_pad, bottom = 56, 10, 6, 30
    n_rows, n_cols = len(rows), max(len(x_edges) - 1, 1)
    cell_h = row_height if row_height is not None else max(3.0, min(16.0, 320 / max(n_rows, 1)))
    plot_h = cell_h * n_rows
    height = int(top_pad + plot_h + bottom)
    plot_w = width - left - right
    cell_w = plot_w / n_cols
    flat = [v for row in values for v in row if v is not None and math.isfinite(v)]
    parts = [_open(width, height, "heatmap", value_label or "heat map")]
    if not flat:
        return "".join([*parts, _no_data(width, height), "</svg>"])
    lo, hi = min(flat), max(flat)
    scale = (hi - lo) or 1.0
    label_every = max(1, -(-n_rows // 16))
    for r, (name, row) in enumerate(zip(rows, values, strict=True)):
        y = top_pad + r * cell_h
        if r % label_every == 0:
            parts.append(
                f'<text x="{left - 4}" y="{y + min(cell_h, 12) * 0.8:.1f}" text-anchor="end" fill="#333">'
                f"{html.escape(name[:10])}</text>"
            )
        # Neighbouring cells of one colour level are drawn as one rect (a long healthy run is
        # a few elements, not thousands); its tooltip gives the range of values it spans.
        c = 0
        while c < len(row):
            v = row[c]
            if v is None or not math.isfinite(v):
                c += 1
                continue
            level = round((v - lo) / scale * (HEAT_LEVELS - 1))
            end, v_min, v_max = c + 1, v, v
            while end < len(row):
                w = row[end]
                if w is None or not math.isfinite(w) or round((w - lo) / scale * (HEAT_LEVELS - 1)) != level:
                    break
                v_min, v_max = min(v_min, w), max(v_max, w)
                end += 1
            f = level / (HEAT_LEVELS - 1)
            # From pale yellow (255,245,200) to dark red (170,20,20).
            rgb = (int(255 - 85 * f), int(245 - 225 * f), int(200 - 180 * f))
            value = tick(v_min) if v_min == v_max else f"{tick(v_min)} to {tick(v_max)}"
            span_w = (end - c) * cell_w + 0.3
            parts.append(
                f'<rect class="cell" x="{left + c * cell_w:.1f}" y="{y:.1f}" width="{span_w:.1f}"'
                f' height="{cell_h:.1f}" fill="rgb{rgb}"><title>{html.escape(name)}, '
                f"{tick(x_edges[c])} to {tick(x_edges[end])}: {value}</title></rect>"
            )
            c = end
    base = top_pad + plot_h
    x_lo, x_hi = x_edges[0], x_edges[-1]
    for t in nice_ticks(x_lo, x_hi, 5):
        x = left + (t - x_lo) / ((x_hi - x_lo) or 1) * plot_w
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{base}" y2="{base + 4}" stroke="#555"/>'
            f'<text x="{x:.1f}" y="{base + 15}" text-anchor="middle" fill="#333">{tick(t)}</text>'
        )
    caption = f"{value_label}: {tick(lo)} (light) to {tick(hi)} (dark)" if value_label else ""
    parts.append(
        f'<text x="{left}" y="{height - 2}" fill="#777">{html.escape(caption)}</text>'
        f'<text x="{width - right}" y="{height - 2}" text-anchor="end" fill="#777">'
        f"{html.escape(x_label)}</text>"
    )
    parts.append("</svg>")
    return "".join(parts)


def boxes(
    names: Sequence[str],
    quantiles: Sequence[Sequence[float]],
    width: int = 440,
    colors: Sequence[str] = (REFERENCE_COLOR, CURRENT_COLOR),
) -> str:
    """Horizontal box plots (5th, 25th, 50th, 75th, 95th percentiles), one per name, on one axis."""
    left, right, top_pad, row = 70, 12, 6, 26
    height = top_pad + row * len(names) + 24
    plot_w = width - left - right
    flat = [q for qs in quantiles for q in qs if math.isfinite(q)]
    parts = [_open(width, height, "boxes", "percentiles")]
    if not flat:
        return "".join([*parts, "</svg>"])
    lo, hi = min(flat), max(flat)
    if hi <= lo:
        hi = lo + (abs(lo) or 1) * 0.1

    def px(v: float) -> float:
        return left + (v - lo) / (hi - lo) * plot_w

    for i, (name, qs) in enumerate(zip(names, quantiles, strict=True)):
        if len(qs) != 5:
            continue
        y = top_pad + i * row + row / 2
        color = colors[i % len(colors)]
        p05, p25, p50, p75, p95 = qs
        tip = html.escape(
            f"{name}: p5 {tick(p05)}, p25 {tick(p25)}, median {tick(p50)}, p75 {tick(p75)}, p95 {tick(p95)}"
        )
        parts.append(
            f'<text x="{left - 4}" y="{y + 3:.1f}" text-anchor="end" fill="#333">'
            f"{html.escape(name[:12])}</text>"
            f'<line x1="{px(p05):.1f}" x2="{px(p95):.1f}" y1="{y:.1f}" y2="{y:.1f}" stroke="{color}"/>'
            f'<rect class="bar box" x="{px(p25):.1f}" y="{y - 8:.1f}" width="{max(px(p75) - px(p25), 1):.1f}"'
            f' height="16" fill="{color}" fill-opacity="0.6" stroke="{color}"><title>{tip}</title></rect>'
            f'<line x1="{px(p50):.1f}" x2="{px(p50):.1f}" y1="{y - 8:.1f}" y2="{y + 8:.1f}" stroke="#222"/>'
        )
    base = top_pad + row * len(names)
    for t in nice_ticks(lo, hi, 5):
        parts.append(
            f'<text x="{px(t):.1f}" y="{base + 14}" text-anchor="middle" fill="#333">{tick(t)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
