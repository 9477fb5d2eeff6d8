"""The console's pages and actions (routes under ``/ui/``), rendered on the server.

Each page handler validates its query, then renders in a worker thread (the store is read
there, never on the event loop). Errors are pages too: a bad filter is a 400 page saying
which parameter and what it accepts.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from aiohttp import web

from dashboards.links import panel_ref, panel_url
from mlvigil.app.console import auth
from mlvigil.app.console.evidence import (
    CARBON_KINDS,
    DRIFT_KINDS,
    GPU_KINDS,
    GPU_WINDOW_S,
    TRAINING_KINDS,
    draw,
    gpu_view,
    run_view,
    statistic_chart,
)
from mlvigil.app.console.render import badge, card, esc, labels, link, num, page, table, when
from mlvigil.core.auth import token_matches
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
#: Most training runs listed on the runs page.
MAX_RUNS_LISTED = 500
#: Most notifications read to find one finding's alert deliveries.
MAX_NOTIFICATIONS = 2000
_LABEL = re.compile(r"^([A-Za-z_][A-Za-z0-9_./-]{0,127})=(.*)$", re.S)
_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,256}$")
_STATIC = {"console.css": "text/css", "console.js": "text/javascript"}
_RECORD_TABLE = {
    "data_drift": ("inferences", ("service", "model")),
    "prediction_drift": ("inferences", ("service", "model")),
    "performance_drift": ("inferences", ("service", "model")),
    "llm_drift": ("llm_calls", ("service",)),
    "gpu_fault": ("metric_points", ()),
    "gpu_degraded": ("metric_points", ()),
}


class BadRequest(Exception):
    """A console request that cannot be served as asked; the message says what to change."""


class Console:
    def __init__(self, ctx: ServiceContext, history: StatisticHistory) -> None:
        self.ctx = ctx
        self.history = history
        token = ctx.config.server.auth_token
        self._token = token.resolve() if token else None
        self._grafana = ctx.config.server.grafana_url

    # -- plumbing ----------------------------------------------------------------------------
    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/ui", self.home),
            web.get("/ui/", self.home),
            web.get("/ui/login", self.login_form),
            web.post("/ui/login", self.login),
            web.post("/ui/logout", self.logout),
            web.get("/ui/static/{name}", self.static),
            web.get("/ui/findings", self.findings),
            web.get("/ui/findings/{finding_id}", self.finding),
            web.get("/ui/monitors", self.monitors),
            web.get("/ui/runs", self.runs),
            web.get("/ui/runs/{run_id}", self.run),
            web.get("/ui/gpus", self.gpus),
            web.get("/ui/gpus/{gpu_uuid}", self.gpu),
            web.post("/ui/actions/triggers/{trigger_id}/{action}", self.trigger_action),
        ]

    async def _render(
        self, title: str, active: str, build: Callable[[], str], status: int = 200
    ) -> web.Response:
        try:
            body = await asyncio.to_thread(build)
        except BadRequest as exc:
            title, body, status = "Bad request", f'<p class="error">{esc(exc)}</p>', 400
        except web.HTTPNotFound as exc:
            title, body, status = "Not found", f'<p class="error">{esc(exc.text)}</p>', 404
        html = page(title, body, active=active, logout=self._token is not None)
        return web.Response(
            text=html,
            status=status,
            content_type="text/html",
            headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY", "Content-Security-Policy": _CSP},
        )

    async def home(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/ui/findings")

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in _STATIC:
            raise web.HTTPNotFound(text=f"no console file {name!r}")
        data = resources.files("mlvigil.app.console").joinpath("static", name).read_bytes()
        return web.Response(body=data, content_type=_STATIC[name], headers={"Cache-Control": "max-age=300"})

    # -- login ---------------------------------------------------------------------------------
    def _login_page(self, next_path: str, message: str = "", status: int = 200) -> web.Response:
        body = (
            (f'<p class="error">{esc(message)}</p>' if message else "")
            + '<form method="post" action="/ui/login" class="login">'
            f'<input type="hidden" name="next" value="{esc(next_path)}">'
            '<label>API token <input type="password" name="token" autocomplete="current-password"'
            ' required autofocus></label> <button type="submit">Log in</button></form>'
            '<p class="muted">The token is the one the API takes as <code>Authorization: Bearer</code>'
            " (server.auth_token). The browser keeps a session cookie derived from it.</p>"
        )
        html = page("Log in", body)
        return web.Response(
            text=html, status=status, content_type="text/html", headers={"Content-Security-Policy": _CSP}
        )

    async def login_form(self, request: web.Request) -> web.Response:
        next_path = auth.safe_next(request.query.get("next"))
        if self._token is None:
            raise web.HTTPFound(next_path)
        return self._login_page(next_path)

    async def login(self, request: web.Request) -> web.Response:
        form = await request.post()
        next_path = auth.safe_next(str(form.get("next", "")))
        if self._token is None:
            raise web.HTTPSeeOther(next_path)
        given = str(form.get("token", "")).strip()
        if not given or not token_matches(given, self._token):
            return self._login_page(
                next_path, "Wrong token: use the API's bearer token (server.auth_token).", 401
            )
        resp = web.HTTPSeeOther(next_path)
        auth.set_session(resp, self._token, secure=request.secure)
        raise resp

    async def logout(self, request: web.Request) -> web.Response:
        resp = web.HTTPSeeOther(auth.LOGIN)
        auth.clear_session(resp)
        raise resp

    # -- findings ----------------------------------------------------------------------------
    async def findings(self, request: web.Request) -> web.Response:
        q = request.query
        return await self._render("Findings", "findings", lambda: self._findings_page(q))

    def _findings_filters(self, q: Any) -> dict[str, Any]:
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
                    raise BadRequest(
                        f"label {part[:80]!r}: write name=value, e.g. model=fraud or run_id=job-1"
                    )
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

    def _findings_page(self, q: Any) -> str:
        f = self._findings_filters(q)
        offset = (f["page"] - 1) * PAGE_SIZE
        found = self.ctx.store.findings(
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
        body = self._filter_form(f)
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

    def _filter_form(self, f: dict[str, Any]) -> str:
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

    async def finding(self, request: web.Request) -> web.Response:
        fid = request.match_info["finding_id"]
        if not _ID.match(fid):
            raise web.HTTPNotFound(text="no such finding")
        return await self._render("Finding", "findings", lambda: self._finding_page(fid))

    def _finding_page(self, fid: str) -> str:
        f = self.ctx.store.finding(fid)
        if f is None:
            raise web.HTTPNotFound(
                text=f"no finding {fid!r}: it may have been removed; see the list of findings"
            )
        head = (
            f'<div class="finding-head" data-kind="{esc(f.kind)}">'
            f"{badge(str(f.severity))} {badge(str(f.state))} "
            f"<b>{esc(f.kind)}</b> {labels(f.subject)}</div>"
            f'<p class="summary">{esc(f.summary)}</p>'
        )
        parts = [head, card("Timeline", self._timeline(f)), card("Links", self._links(f))]
        try:
            drawn = draw(self.ctx, self.history, f)
        except Exception as exc:  # one kind's drawing failing must not cost the rest of the page
            drawn = (
                f'<p class="error">The evidence could not be drawn: {esc(type(exc).__name__)}: {esc(exc)}</p>'
            )
        if drawn:
            parts.append(card("Evidence", drawn, "evidence"))
        parts.append(card("Retraining", self._triggers(f)))
        parts.append(card("Alert deliveries", self._deliveries(f)))
        evidence_json = json.dumps(f.evidence, indent=2, sort_keys=True, default=str)
        parts.append(f"<details><summary>Evidence as JSON</summary><pre>{esc(evidence_json)}</pre></details>")
        return "".join(parts)

    def _timeline(self, f: Finding) -> str:
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

    def _links(self, f: Finding) -> str:
        out = []
        if self._grafana:
            ref = panel_ref(f.kind)
            url = panel_url(f.kind, f.subject, self._grafana, start=f.started_at, end=f.resolved_at)
            out.append(f'<a class="grafana" href="{esc(url)}" rel="noopener">Grafana: {esc(ref.title)}</a>')
        else:
            out.append(
                '<span class="muted">Grafana: set server.grafana_url to link the matching panel</span>'
            )
        api = "/api/v1/findings?" + urlencode({"kind": f.kind, **f.subject})
        out.append(f'<a href="{esc(api)}">This finding as JSON</a>')
        records = self._records_link(f)
        if records:
            out.append(f'<a class="records" href="{esc(records)}">Raw records behind it</a>')
        if f.kind in TRAINING_KINDS and f.subject.get("run_id"):
            out.append(link(f"/ui/runs/{quote(f.subject['run_id'], safe='')}", "Training run page"))
        if f.subject.get("gpu_uuid"):
            out.append(link(f"/ui/gpus/{quote(f.subject['gpu_uuid'], safe='')}", "GPU page"))
        return '<ul class="links">' + "".join(f"<li>{x}</li>" for x in out) + "</ul>"

    def _records_link(self, f: Finding) -> str | None:
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

    def _triggers(self, f: Finding) -> str:
        retrain = self.ctx.services.get("retrain")
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
                f"{when(h.get('at'))} {esc(h.get('status'))}: {esc(h.get('reason'))}"
                for h in t["history"][-6:]
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
        return table(
            ["status", "policy", "target", "run", "delivery", "history", "actions"], rows, "triggers"
        )

    def _deliveries(self, f: Finding) -> str:
        alerts = self.ctx.services.get("alerts")
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

    async def trigger_action(self, request: web.Request) -> web.Response:
        tid, action = request.match_info["trigger_id"], request.match_info["action"]
        if request.headers.get("X-Mlvigil-Console") != "1":
            return web.json_response(
                {"error": "console actions need the X-Mlvigil-Console: 1 header"}, status=403
            )
        if (
            self._token is not None
            and "Authorization" not in request.headers
            and not auth.same_origin(request)
        ):
            return web.json_response({"error": "console actions must come from a console page"}, status=403)
        retrain = self.ctx.services.get("retrain")
        if retrain is None:
            return web.json_response({"error": "no retraining configured"}, status=404)
        if action not in ("approve", "reject", "dry-run") or not _ID.match(tid):
            return web.json_response(
                {"error": f"unknown action {action!r}; approve, reject or dry-run"}, status=404
            )
        try:
            if action == "dry-run":
                doc = await asyncio.to_thread(retrain.preview, tid)
            else:
                fn = retrain.approve if action == "approve" else retrain.reject
                doc = await asyncio.to_thread(fn, tid, "console", "")
        except KeyError:
            return web.json_response({"error": f"no such trigger {tid!r}"}, status=404)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=409)
        return web.json_response(json.loads(json.dumps(doc, default=str)))

    # -- monitors, runs, GPUs ------------------------------------------------------------------
    async def monitors(self, request: web.Request) -> web.Response:
        return await self._render("Drift monitors", "monitors", self._monitors_page)

    def _monitors_page(self) -> str:
        registry = self.ctx.services.get("drift")
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
                f"{statistic_chart(self.history, name)}{feat_table}<p>{findings_link}</p></section>"
            )
        return "".join(out)

    async def runs(self, request: web.Request) -> web.Response:
        return await self._render("Training runs", "runs", self._runs_page)

    def _firing_by(self, label: str, kinds: frozenset[str]) -> dict[str, list[Finding]]:
        """Firing findings of ``kinds`` grouped by the value of subject label ``label``."""
        out: dict[str, list[Finding]] = {}
        for f in self.ctx.book.firing():
            if f.kind in kinds and f.subject.get(label):
                out.setdefault(f.subject[label], []).append(f)
        return out

    def _health(self, label: str, value: str, kinds: frozenset[str]) -> tuple[str, list[Finding]]:
        firing = self._firing_by(label, kinds).get(value, [])
        return _worst(firing), firing

    def _runs_page(self) -> str:
        runs = [r[0] for r in self.ctx.store.distinct("training_steps", ["run_id"]) if r[0]]
        if not runs:
            return '<p class="muted empty">No training steps received yet (docs/training.md).</p>'
        by_run = self._firing_by("run_id", TRAINING_KINDS | CARBON_KINDS)
        rows = []
        for run_id in runs[:MAX_RUNS_LISTED]:
            firing = by_run.get(run_id, [])
            health = _worst(firing)
            rows.append(
                [
                    link(f"/ui/runs/{quote(run_id, safe='')}", run_id),
                    badge(health),
                    ", ".join(f'<a href="/ui/findings/{esc(f.id)}">{esc(f.kind)}</a>' for f in firing[:6])
                    or "-",
                ]
            )
        return table(["run", "health", "firing"], rows, "runs")

    async def run(self, request: web.Request) -> web.Response:
        run_id = request.match_info["run_id"]
        if len(run_id) > MAX_FILTER_CHARS:
            raise web.HTTPNotFound(text="no such run")
        return await self._render(f"Training run {run_id}", "runs", lambda: self._run_page(run_id))

    def _run_page(self, run_id: str) -> str:
        health, firing = self._health("run_id", run_id, TRAINING_KINDS | CARBON_KINDS)
        head = f"<p>Health: {badge(health)}</p>" + _firing_list(firing)
        return head + run_view(self.ctx, run_id)

    async def gpus(self, request: web.Request) -> web.Response:
        return await self._render("GPUs", "gpus", self._gpus_page)

    def _gpus_page(self) -> str:
        from gpu_health import names as gpu_names

        seen = self.ctx.store.distinct(
            "metric_points", ["host", "hw_id"], since=time.time() - 86400, where={"name": gpu_names.INFO}
        )
        known = {hw: host for host, hw in seen if hw}
        by_gpu: dict[str, list[Finding]] = {}
        for f in self.ctx.book.firing():
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

    async def gpu(self, request: web.Request) -> web.Response:
        uuid = request.match_info["gpu_uuid"]
        if len(uuid) > 256:
            raise web.HTTPNotFound(text="no such GPU")
        try:
            hours = float(request.query.get("hours", GPU_WINDOW_S / 3600))
        except ValueError:
            hours = -1.0
        if not 0 < hours <= 24 * 14:
            return await self._render(
                "GPU", "gpus", lambda: _raise(BadRequest("hours: a number from 0 to 336"))
            )
        since = time.time() - hours * 3600
        return await self._render(f"GPU {uuid}", "gpus", lambda: self._gpu_page(uuid, since))

    def _gpu_page(self, uuid: str, since: float) -> str:
        health, firing = self._health("gpu_uuid", uuid, GPU_KINDS)
        head = f"<p>Verdict: {badge(health)}</p>" + _firing_list(firing)
        return head + gpu_view(self.ctx, uuid, since)


def _worst(firing: list[Finding]) -> str:
    if any(f.severity == Severity.CRITICAL for f in firing):
        return "critical"
    return "warning" if firing else "healthy"


def _firing_list(firing: list[Finding]) -> str:
    items = "".join(
        f'<li>{badge(str(f.severity))} <a href="/ui/findings/{esc(f.id)}">{esc(f.kind)}</a>'
        f" {esc(f.summary)}</li>"
        for f in firing
    )
    return f'<ul class="firing">{items}</ul>' if items else ""


def _attempts(attempts: Any) -> str:
    """``3 (last: HTTP 503)`` from an outbox message's attempt log."""
    if not isinstance(attempts, list):
        return str(attempts)
    if not attempts:
        return "0"
    last = attempts[-1] if isinstance(attempts[-1], dict) else {}
    said = last.get("error") or (f"HTTP {last['status']}" if last.get("status") else last.get("outcome", ""))
    return f"{len(attempts)} (last: {said})"


def _raise(exc: Exception) -> str:
    raise exc


# Scripts and styles only from this service (no inline script); SVG attributes are allowed.
_CSP = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"

__all__ = ["DRIFT_KINDS", "Console"]
