"""The console's findings pages: the filtered list and one finding with its timeline, links,
evidence, retraining triggers and alert deliveries. Each function renders HTML on a worker
thread (the store is read there); ``BadRequest`` names a query parameter that is wrong.
"""

from __future__ import annotations

import json
import re
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from aiohttp import web

from dashboards.links import panel_ref, panel_url
from mlvigil.app.console.evidence import CARBON_KINDS, GPU_KINDS, TRAINING_KINDS, draw
from mlvigil.app.console.render import BadRequest, badge, card, esc, labels, link, table, when
from mlvigil.core.config import parse_duration
from mlvigil.core.findings import KINDS, Finding, Severity, State
from mlvigil.core.svg import LineChart, Marker, Series, line_chart

if TYPE_CHECKING:
    from mlvigil.app.console.history import StatisticHistory
    from mlvigil.core.context import ServiceContext

#: Findings per page of the list.
PAGE_SIZE = 50
#: The list pages through at most this many findings (the API's own bound).
MAX_LISTED = 10_000
#: Label filters on one list request, and the longest filter.
MAX_LABEL_FILTERS = 8
MAX_FILTER_CHARS = 512
#: Time filters offered on the list (any duration such as 90m is accepted too).
SINCE_CHOICES = (
    ("", "any time"),
    ("1h", "last hour"),
    ("6h", "6 hours"),
    ("24h", "24 hours"),
    ("7d", "7 days"),
)
#: Most notifications read to find one finding's alert deliveries.
MAX_NOTIFICATIONS = 2000
_LABEL = re.compile(r"^([A-Za-z_][A-Za-z0-9_./-]{0,127})=(.*)$", re.S)
_RECORD_TABLE = {
    "data_drift": ("inferences", ("service", "model")),
    "prediction_drift": ("inferences", ("service", "model")),
    "performance_drift": ("inferences", ("service", "model")),
    "llm_drift": ("llm_calls", ("service",)),
    "gpu_fault": ("metric_points", ()),
    "gpu_degraded": ("metric_points", ()),
}


def findings_filters(q: Any) -> dict[str, Any]:
    """The list's filters from the query string; BadRequest names a parameter that is wrong."""
    kind, severity, state = q.get("kind", ""), q.get("severity", ""), q.get("state", "")
    if kind and kind not in KINDS:
        raise BadRequest(f"kind {kind!r}: not a finding kind; one of {', '.join(KINDS)}")
    if severity and severity not in {str(s) for s in Severity}:
        raise BadRequest(f"severity {severity!r}: one of info, warning, critical")
    if state and state not in {str(s) for s in State}:
        raise BadRequest(f"state {state!r}: one of firing, resolved")
    since_text = q.get("since", "")
    since = None
    if since_text:
        try:
            since = time.time() - parse_duration(since_text)
        except ValueError:
            raise BadRequest(f"since {since_text!r}: a duration such as 1h, 6h or 7d") from None
    subject: dict[str, str] = {}
    raw_labels = [v for v in q.getall("label", []) if v.strip()]
    if len(raw_labels) > MAX_LABEL_FILTERS:
        raise BadRequest(f"label: {len(raw_labels)} filters; at most {MAX_LABEL_FILTERS}")
    for text in raw_labels:
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            m = _LABEL.match(part)
            if len(part) > MAX_FILTER_CHARS or m is None:
                raise BadRequest(f"label {part[:80]!r}: write name=value, e.g. model=fraud or run_id=job-1")
            subject[m.group(1)] = m.group(2)
    try:
        page_no = int(q.get("page", "1"))
    except ValueError:
        raise BadRequest("page: a whole number from 1") from None
    last_page = MAX_LISTED // PAGE_SIZE
    if not 1 <= page_no <= last_page:
        raise BadRequest(f"page: from 1 to {last_page} (the list shows the newest {MAX_LISTED} findings)")
    return {
        "kind": kind or None,
        "severity": severity or None,
        "state": state or None,
        "since": since,
        "since_text": since_text,
        "subject": subject,
        "page": page_no,
        "labels_text": ", ".join(f"{k}={v}" for k, v in subject.items()),
    }


def findings_page(ctx: ServiceContext, q: Any) -> str:
    f = findings_filters(q)
    offset = (f["page"] - 1) * PAGE_SIZE
    found = ctx.store.findings(
        kind=f["kind"],
        severity=f["severity"],
        state=f["state"],
        since=f["since"],
        subject=f["subject"] or None,
        limit=PAGE_SIZE + 1,
        offset=offset,
    )
    shown = found[:PAGE_SIZE]
    more = len(found) > PAGE_SIZE
    rows = [
        [
            badge(str(x.severity)),
            f'<a href="/ui/findings/{esc(x.id)}" class="kind">{esc(x.kind)}</a>',
            esc(x.summary),
            labels(x.subject),
            badge(str(x.state)),
            when(x.started_at),
            when(x.updated_at),
        ]
        for x in shown
    ]
    body = filter_form(f)
    if rows:
        body += table(
            ["severity", "kind", "summary", "subject", "state", "fired", "updated"], rows, "findings"
        )
    else:
        body += '<p class="muted empty">No findings match these filters.</p>'
    params = {
        k: v
        for k, v in (
            ("kind", f["kind"]),
            ("severity", f["severity"]),
            ("state", f["state"]),
            ("since", f["since_text"]),
            ("label", f["labels_text"]),
        )
        if v
    }
    nav = []
    if f["page"] > 1:
        nav.append(link("/ui/findings", "← newer", **params, page=f["page"] - 1))
    nav.append(f"<span>page {f['page']} · {offset + 1 if shown else 0}-{offset + len(shown)}</span>")
    if more and f["page"] < MAX_LISTED // PAGE_SIZE:
        nav.append(link("/ui/findings", "older →", **params, page=f["page"] + 1))
    return body + '<p class="pager">' + " ".join(nav) + "</p>"


def filter_form(f: dict[str, Any]) -> str:
    def select(name: str, options: list[tuple[str, str]], current: str | None) -> str:
        opts = "".join(
            f'<option value="{esc(v)}"{" selected" if (current or "") == v else ""}>{esc(t)}</option>'
            for v, t in options
        )
        return f'<label>{name} <select name="{name}" data-autosubmit>{opts}</select></label>'

    return (
        '<form class="filters" method="get" action="/ui/findings">'
        + select("kind", [("", "any"), *[(k, k) for k in KINDS]], f["kind"])
        + select("severity", [("", "any"), *[(str(s), str(s)) for s in Severity]], f["severity"])
        + select("state", [("", "any"), *[(str(s), str(s)) for s in State]], f["state"])
        + select("since", list(SINCE_CHOICES), f["since_text"])
        + f'<label>labels <input name="label" value="{esc(f["labels_text"])}"'
        ' placeholder="model=fraud, rank=2" size="22"></label>'
        ' <button type="submit">Filter</button></form>'
    )


def finding_page(ctx: ServiceContext, history: StatisticHistory, grafana: str | None, fid: str) -> str:
    f = ctx.store.finding(fid)
    if f is None:
        raise web.HTTPNotFound(text=f"no finding {fid!r}: it may have been removed; see the list of findings")
    head = (
        f'<div class="finding-head" data-kind="{esc(f.kind)}">'
        f"{badge(str(f.severity))} {badge(str(f.state))} "
        f"<b>{esc(f.kind)}</b> {labels(f.subject)}</div>"
        f'<p class="summary">{esc(f.summary)}</p>'
    )
    parts = [head, card("Timeline", timeline(f)), card("Links", links(f, grafana))]
    try:
        drawn = draw(ctx, history, f)
    except Exception as exc:  # one kind's drawing failing must not cost the rest of the page
        drawn = f'<p class="error">The evidence could not be drawn: {esc(type(exc).__name__)}: {esc(exc)}</p>'
    if drawn:
        parts.append(card("Evidence", drawn, "evidence"))
    parts.append(card("Retraining", triggers(ctx, f)))
    parts.append(card("Alert deliveries", deliveries(ctx, f)))
    evidence_json = json.dumps(f.evidence, indent=2, sort_keys=True, default=str)
    parts.append(f"<details><summary>Evidence as JSON</summary><pre>{esc(evidence_json)}</pre></details>")
    return "".join(parts)


def timeline(f: Finding) -> str:
    events = [("fired", f.started_at), ("updated", f.updated_at)]
    if f.resolved_at is not None:
        events.append(("resolved", f.resolved_at))
    window = f"{when(f.window_start)} to {when(f.window_end)}" if f.window_start or f.window_end else "-"
    end = max(max(t for _, t in events if t is not None), time.time() if f.resolved_at is None else 0.0)
    chart = LineChart(
        series=[Series("firing", [f.started_at, f.resolved_at or end], [1.0, 1.0], step=True)],
        x_time=True,
        y_min=0.0,
    )
    if f.window_start is not None and f.window_end is not None:
        chart.series.append(Series("evidence window", [f.window_start, f.window_end], [0.5, 0.5]))
    chart.markers = [
        Marker(t, 1.0, f"{name} {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(t))}Z", color)
        for (name, t), color in zip(events, ("#e03131", "#1c7ed6", "#2f9e44"), strict=False)
    ]
    items = "".join(f"<li><b>{name}</b> {when(t)}</li>" for name, t in events)
    return f'<ol class="timeline">{items}<li><b>evidence window</b> {window}</li></ol>' + line_chart(
        chart, height=90
    )


def links(f: Finding, grafana: str | None) -> str:
    out = []
    if grafana:
        ref = panel_ref(f.kind)
        url = panel_url(f.kind, f.subject, grafana, start=f.started_at, end=f.resolved_at)
        out.append(f'<a class="grafana" href="{esc(url)}" rel="noopener">Grafana: {esc(ref.title)}</a>')
    else:
        out.append('<span class="muted">Grafana: set server.grafana_url to link the matching panel</span>')
    api = "/api/v1/findings?" + urlencode({"kind": f.kind, **f.subject})
    out.append(f'<a href="{esc(api)}">This finding as JSON</a>')
    records = records_link(f)
    if records:
        out.append(f'<a class="records" href="{esc(records)}">Raw records behind it</a>')
    if f.kind in TRAINING_KINDS and f.subject.get("run_id"):
        out.append(link(f"/ui/runs/{quote(f.subject['run_id'], safe='')}", "Training run page"))
    if f.subject.get("gpu_uuid"):
        out.append(link(f"/ui/gpus/{quote(f.subject['gpu_uuid'], safe='')}", "GPU page"))
    return '<ul class="links">' + "".join(f"<li>{x}</li>" for x in out) + "</ul>"


def records_link(f: Finding) -> str | None:
    if f.kind in TRAINING_KINDS:
        table_name, where = "training_steps", {"run_id": f.subject.get("run_id")}
        if f.kind == "straggler" and f.subject.get("rank"):
            where["rank"] = f.subject["rank"]
    elif f.kind in _RECORD_TABLE:
        table_name, cols = _RECORD_TABLE[f.kind]
        where = {c: f.subject.get(c) for c in cols}
        if f.kind in GPU_KINDS:
            where["hw_id"] = f.subject.get("gpu_uuid")
    elif f.kind in CARBON_KINDS and f.subject.get("run_id"):
        table_name, where = "training_steps", {"run_id": f.subject["run_id"]}
    else:
        return None
    start = f.window_start if f.window_start is not None else f.started_at - 3600
    end = (f.window_end if f.window_end is not None else f.updated_at) + 1
    params = {k: v for k, v in where.items() if v not in (None, "", "*")}
    params.update({"since": f"{start:.3f}", "until": f"{end:.3f}", "limit": "1000"})
    return f"/api/v1/records/{table_name}?" + urlencode(params)


def triggers(ctx: ServiceContext, f: Finding) -> str:
    retrain = ctx.services.get("retrain")
    if retrain is None:
        return '<p class="muted">No retraining configured (the retrain section).</p>'
    mine = [t for t in retrain.triggers() if (t.get("finding") or {}).get("id") == f.id]
    if not mine:
        return '<p class="muted">No retraining policy matched this finding.</p>'
    rows = []
    for t in mine[:20]:
        actions = ""
        if t["status"] == "pending_approval":
            tid = esc(t["id"])
            actions = (
                f'<button data-trigger="{tid}" data-action="dry-run">Dry run</button> '
                f'<button data-trigger="{tid}" data-action="approve" class="primary">Approve</button> '
                f'<button data-trigger="{tid}" data-action="reject">Reject</button>'
            )
        history = "<br>".join(
            f"{when(h.get('at'))} {esc(h.get('status'))}: {esc(h.get('reason'))}" for h in t["history"][-6:]
        )
        preview = ""
        if t.get("would_send"):
            sent = esc(json.dumps(t["would_send"], indent=2))
            preview = f"<details><summary>would send</summary><pre>{sent}</pre></details>"
        delivery = t.get("delivery") or {}
        rows.append(
            [
                f'<span class="trigger-status" data-trigger="{esc(t["id"])}">'
                f"{badge(t['status'], 'trigger')}</span>",
                esc(t.get("policy")),
                esc(f"{t.get('target')} ({t.get('target_kind')})"),
                esc(t.get("run_name")),
                esc(delivery.get("state", "-")),
                history + preview,
                actions + '<pre class="action-result" hidden></pre>',
            ]
        )
    return table(["status", "policy", "target", "run", "delivery", "history", "actions"], rows, "triggers")


def deliveries(ctx: ServiceContext, f: Finding) -> str:
    alerts = ctx.services.get("alerts")
    if alerts is None:
        return '<p class="muted">No alert receivers configured (the alerts section).</p>'
    rows = []
    for d in alerts.outbox.messages(limit=MAX_NOTIFICATIONS):
        meta = d.meta
        ids = set(meta.get("firing") or []) | set(meta.get("resolved") or [])
        if meta.get("fingerprint"):
            ids.add(meta["fingerprint"])
        if f.id not in ids:
            continue
        # Webhook and Slack groups say firing/resolved per alert; Alertmanager posts carry the
        # finding's transition.
        if f.id in (meta.get("resolved") or []):
            status = "resolved"
        else:
            status = meta.get("status") or meta.get("transition") or "firing"
        rows.append(
            [
                esc(d.target),
                esc(status),
                badge(d.state, "delivery"),
                esc(_attempts([a.to_doc() for a in d.attempts])),
                when(d.created_at),
                when(d.delivered_at),
            ]
        )
    if not rows:
        return '<p class="muted">No notification about this finding yet.</p>'
    return table(
        ["receiver", "said", "delivery", "attempts", "recorded", "delivered"], rows[:50], "deliveries"
    )


def _attempts(attempts: Any) -> str:
    """``3 (last: HTTP 503)`` from an outbox message's attempt log."""
    if not isinstance(attempts, list):
        return str(attempts)
    if not attempts:
        return "0"
    last = attempts[-1] if isinstance(attempts[-1], dict) else {}
    said = last.get("error") or (f"HTTP {last['status']}" if last.get("status") else last.get("outcome", ""))
    return f"{len(attempts)} (last: {said})"
