"""From a Finding to the alert shapes receivers expect: Alertmanager API v2 postable alerts,
the Alertmanager webhook payload (version 4) and a Slack message."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from dashboards.links import panel_url
from mlvigil.core.findings import Finding

# Alertmanager's "zero time": what a firing alert's endsAt reads in webhook payloads.
ZERO_TIME = "0001-01-01T00:00:00Z"
_LABEL_NAME = re.compile(r"[^a-zA-Z0-9_]")


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def label_name(name: str) -> str:
    """A Prometheus label name from a subject key (``k8s.namespace`` -> ``k8s_namespace``)."""
    out = _LABEL_NAME.sub("_", name)
    return out if out and not out[0].isdigit() else f"_{out}"


@dataclass
class Alert:
    """One Finding as an alert; ``fingerprint`` is the Finding's id."""

    fingerprint: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: float
    ends_at: float | None
    generator_url: str
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)
    subject: dict[str, str] = field(default_factory=dict)
    dashboard_url: str | None = None
    api_url: str = ""
    console_url: str = ""

    @property
    def resolved(self) -> bool:
        return self.ends_at is not None

    def postable(self, ends_at: float | None = None) -> dict[str, Any]:
        """Alertmanager API v2 ``postableAlert``."""
        end = self.ends_at if self.ends_at is not None else ends_at
        body: dict[str, Any] = {
            "labels": self.labels,
            "annotations": self.annotations,
            "startsAt": rfc3339(self.starts_at),
            "generatorURL": self.generator_url,
        }
        if end is not None:
            body["endsAt"] = rfc3339(end)
        return body

    def webhook_alert(self) -> dict[str, Any]:
        """One entry of the webhook payload's ``alerts``."""
        return {
            "status": "resolved" if self.resolved else "firing",
            "labels": self.labels,
            "annotations": self.annotations,
            "startsAt": rfc3339(self.starts_at),
            "endsAt": rfc3339(self.ends_at) if self.ends_at is not None else ZERO_TIME,
            "generatorURL": self.generator_url,
            "fingerprint": self.fingerprint,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "status": "resolved" if self.resolved else "firing",
            "labels": self.labels,
            "annotations": self.annotations,
            "startsAt": rfc3339(self.starts_at),
            "endsAt": rfc3339(self.ends_at) if self.ends_at is not None else None,
            "generatorURL": self.generator_url,
        }


def _evidence_line(evidence: dict[str, Any], limit: int = 8) -> str:
    parts = []
    for k, v in list(evidence.items())[:limit]:
        if isinstance(v, float):
            v = f"{v:.4g}"
        elif isinstance(v, dict | list):
            v = json.dumps(v, default=str)[:80]
        parts.append(f"{k}={v}")
    return ", ".join(parts)


def finding_page_url(external_url: str, finding_id: str) -> str:
    """The finding's page in the console (``mlvigil.app.console``)."""
    return f"{external_url.rstrip('/')}/ui/findings/{finding_id}"


def alert_from_finding(
    finding: Finding, external_url: str, dashboard_url: str | None, grafana_url: str | None = None
) -> Alert:
    """``dashboard_url`` (alerts.dashboard_url) links one dashboard with the subject labels as
    variables; ``grafana_url`` (server.grafana_url), when set, links the panel that shows this
    kind of finding instead (``dashboards.links``)."""
    labels = {label_name(k): str(v) for k, v in finding.subject.items()}
    labels.update(
        {
            "alertname": finding.kind,
            "severity": str(finding.severity),
            "finding_id": finding.id,
            "source": "mlvigil",
        }
    )
    base = external_url.rstrip("/")
    api_url = f"{base}/api/v1/findings?" + urlencode({"kind": finding.kind, **finding.subject})
    console_url = finding_page_url(external_url, finding.id)
    dash = None
    if grafana_url:
        dash = panel_url(
            finding.kind, finding.subject, grafana_url, start=finding.started_at, end=finding.resolved_at
        )
    elif dashboard_url:
        sep = "&" if "?" in dashboard_url else "?"
        dash = (
            dashboard_url + sep + urlencode({f"var-{label_name(k)}": v for k, v in finding.subject.items()})
        )
    annotations = {
        "summary": finding.summary,
        "description": f"{finding.summary} Evidence: {_evidence_line(finding.evidence)}".strip(),
        "evidence": json.dumps(finding.evidence, sort_keys=True, default=str),
        "api_url": api_url,
        "console_url": console_url,
    }
    if dash:
        annotations["dashboard_url"] = dash
    return Alert(
        fingerprint=finding.id,
        labels=labels,
        annotations=annotations,
        starts_at=finding.started_at,
        ends_at=finding.resolved_at if str(finding.state) == "resolved" else None,
        generator_url=console_url,
        summary=finding.summary,
        evidence=dict(finding.evidence),
        subject=dict(finding.subject),
        dashboard_url=dash,
        api_url=api_url,
        console_url=console_url,
    )


def _common(dicts: list[dict[str, str]]) -> dict[str, str]:
    if not dicts:
        return {}
    out = dict(dicts[0])
    for d in dicts[1:]:
        out = {k: v for k, v in out.items() if d.get(k) == v}
    return out


def webhook_payload(
    receiver: str,
    group_key: str,
    group_labels: dict[str, str],
    alerts: list[Alert],
    external_url: str,
    max_alerts: int = 0,
) -> dict[str, Any]:
    """The Alertmanager webhook payload, version 4, so existing receivers work unchanged."""
    status = "firing" if any(not a.resolved for a in alerts) else "resolved"
    shown = alerts[:max_alerts] if max_alerts else alerts
    return {
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": len(alerts) - len(shown),
        "status": status,
        "receiver": receiver,
        "groupLabels": group_labels,
        "commonLabels": _common([a.labels for a in alerts]),
        "commonAnnotations": _common([a.annotations for a in alerts]),
        "externalURL": external_url,
        "alerts": [a.webhook_alert() for a in shown],
    }


def slack_message(payload: dict[str, Any], alerts: list[Alert]) -> dict[str, Any]:
    """A Slack incoming-webhook message a person can act on: what, where, the evidence, links."""
    firing = [a for a in alerts if not a.resolved]
    status = payload["status"]
    labels = payload["groupLabels"] or payload["commonLabels"]
    where = ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k not in {"source"})
    icon = ":rotating_light:" if status == "firing" else ":white_check_mark:"
    title = f"{icon} [{status.upper()}:{len(firing) if status == 'firing' else len(alerts)}] {where}"
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": f"*{title}*"}}]
    for a in alerts[:10]:
        subject = ", ".join(f"{k}={v}" for k, v in sorted(a.subject.items())) or "-"
        state = (
            "resolved"
            if a.resolved
            else f"{a.labels.get('severity', '')}, firing since {rfc3339(a.starts_at)}"
        )
        text = (
            f"*{a.labels.get('alertname', '')}* ({state})\n{a.summary}\n"
            f"*Where:* {subject}\n*Evidence:* {_evidence_line(a.evidence) or '-'}"
        )
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": text[:2900]}})
        buttons = [
            {"type": "button", "text": {"type": "plain_text", "text": "Open finding"}, "url": a.console_url},
            {"type": "button", "text": {"type": "plain_text", "text": "Finding (API)"}, "url": a.api_url},
        ]
        if a.dashboard_url:
            buttons.insert(
                1,
                {
                    "type": "button",
                    "text": {"type": "plain_text", "text": "Dashboard"},
                    "url": a.dashboard_url,
                },
            )
        blocks.append({"type": "actions", "elements": buttons})
    if len(alerts) > 10:
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": f"and {len(alerts) - 10} more"}]}
        )
    fallback = f"[{status.upper()}] {where}: " + "; ".join(a.summary for a in alerts[:3])
    return {"text": fallback, "blocks": blocks}
