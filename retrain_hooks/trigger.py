"""Typed retraining triggers and the run request they send; the stored JSON is written and
read here only (``to_doc``/``from_doc``), in the format earlier versions stored."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from mlvigil.core.findings import Finding

# States in which a model counts as having a run in flight.
IN_FLIGHT = frozenset({"pending_approval", "approved", "queued", "submitted", "running"})
# States that count as "a run was started" for the cooldown.
STARTED = frozenset({"queued", "submitted", "running", "succeeded", "failed", "canceled"})


def trigger_id(policy: str, finding: Finding) -> str:
    """Deterministic per (policy, Finding, firing episode): every evaluation of the same
    firing Finding maps onto the same trigger."""
    raw = json.dumps([policy, finding.id, round(finding.started_at, 3)])
    return hashlib.sha256(raw.encode()).hexdigest()[:20]


@dataclass
class FindingRef:
    """The Finding a trigger was made for, as it was then."""

    id: str
    kind: str
    severity: str
    subject: dict[str, str]
    summary: str
    evidence: dict[str, Any]
    started_at: float

    @classmethod
    def of(cls, f: Finding) -> FindingRef:
        return cls(f.id, f.kind, str(f.severity), f.subject, f.summary, f.evidence, f.started_at)

    def to_doc(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "severity": self.severity,
            "subject": self.subject,
            "summary": self.summary,
            "evidence": self.evidence,
            "started_at": self.started_at,
        }

    @classmethod
    def from_doc(cls, d: dict[str, Any]) -> FindingRef:
        return cls(
            id=str(d.get("id", "")),
            kind=str(d.get("kind", "")),
            severity=str(d.get("severity", "")),
            subject=dict(d.get("subject") or {}),
            summary=str(d.get("summary", "")),
            evidence=dict(d.get("evidence") or {}),
            started_at=float(d.get("started_at") or 0.0),
        )


@dataclass
class HistoryEntry:
    at: float
    status: str
    reason: str

    def to_doc(self) -> dict[str, Any]:
        return {"at": self.at, "status": self.status, "reason": self.reason}

    @classmethod
    def from_doc(cls, d: dict[str, Any]) -> HistoryEntry:
        return cls(float(d["at"]), str(d["status"]), str(d.get("reason", "")))


@dataclass
class RunRequest:
    """What a target is asked to start: the outbox message's payload.

    >>> r = RunRequest("mlvigil-1", {"a": "1"}, {"k": "v"}, "why", "1", "p", {"id": "f"})
    >>> RunRequest.from_payload(r.to_payload()) == r
    True
    """

    run_name: str
    parameters: dict[str, Any]
    labels: dict[str, str] = field(default_factory=dict)
    description: str = ""
    trigger_id: str = ""
    policy: str = ""
    finding: dict[str, Any] = field(default_factory=dict)

    def to_payload(self) -> dict[str, Any]:
        return {
            "run_name": self.run_name,
            "parameters": self.parameters,
            "labels": self.labels,
            "description": self.description,
            "trigger_id": self.trigger_id,
            "policy": self.policy,
            "finding": self.finding,
        }

    @classmethod
    def from_payload(cls, p: dict[str, Any]) -> RunRequest:
        return cls(
            run_name=str(p["run_name"]),
            parameters=dict(p.get("parameters") or {}),
            labels=dict(p.get("labels") or {}),
            description=str(p.get("description", "")),
            trigger_id=str(p.get("trigger_id", "")),
            policy=str(p.get("policy", "")),
            finding=dict(p.get("finding") or {}),
        )


@dataclass
class Trigger:
    """One retraining decision and its audit trail (``history``).

    Examples
    --------
    >>> t = Trigger(id="t1", policy="p", target="argo", target_kind="argo", model="churn",
    ...             run_name="mlvigil-t1", parameters={}, labels={},
    ...             finding=FindingRef("f1", "data_drift", "critical", {}, "drift", {}, 1.0),
    ...             created_at=5.0)
    >>> t.set_status("queued", 6.0, "why")
    >>> t.status, [h.status for h in t.history], t.in_flight
    ('queued', ['queued'], True)
    >>> Trigger.from_doc(t.to_doc()) == t
    True
    """

    id: str
    policy: str
    target: str
    target_kind: str
    model: str
    run_name: str
    parameters: dict[str, Any]
    labels: dict[str, str]
    finding: FindingRef
    created_at: float
    status: str = "new"
    reason: str = ""
    started_at: float | None = None
    #: What the target answered when the run was submitted (``run_id``, ``run_name``, ``existing``).
    run: dict[str, Any] | None = None
    history: list[HistoryEntry] = field(default_factory=list)
    updated_at: float | None = None
    #: Dry runs: the request that would have been sent.
    would_send: dict[str, Any] | None = None

    @property
    def in_flight(self) -> bool:
        return self.status in IN_FLIGHT

    @property
    def last_started(self) -> float:
        return float(self.started_at or self.created_at)

    def set_status(self, status: str, now: float, reason: str) -> None:
        self.status = status
        self.reason = reason
        self.updated_at = now
        self.history = [*self.history, HistoryEntry(now, status, reason)]

    def run_request(self) -> RunRequest:
        return RunRequest(
            run_name=self.run_name,
            parameters=self.parameters,
            labels=self.labels,
            description=f"mlvigil retraining trigger {self.id}: {self.finding.summary}",
            trigger_id=self.id,
            policy=self.policy,
            finding=self.finding.to_doc(),
        )

    def to_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "id": self.id,
            "policy": self.policy,
            "target": self.target,
            "target_kind": self.target_kind,
            "model": self.model,
            "run_name": self.run_name,
            "parameters": self.parameters,
            "labels": self.labels,
            "finding": self.finding.to_doc(),
            "status": self.status,
            "reason": self.reason,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "run": self.run,
            "history": [h.to_doc() for h in self.history],
        }
        if self.would_send is not None:
            doc["would_send"] = self.would_send
        if self.updated_at is not None:
            doc["updated_at"] = self.updated_at
        return doc

    @classmethod
    def from_doc(cls, d: dict[str, Any]) -> Trigger:
        return cls(
            id=str(d["id"]),
            policy=str(d.get("policy", "")),
            target=str(d.get("target", "")),
            target_kind=str(d.get("target_kind", "")),
            model=str(d.get("model", "")),
            run_name=str(d.get("run_name") or f"mlvigil-{d['id']}"),
            parameters=dict(d.get("parameters") or {}),
            labels=dict(d.get("labels") or {}),
            finding=FindingRef.from_doc(d.get("finding") or {}),
            created_at=float(d["created_at"]),
            status=str(d.get("status", "new")),
            reason=str(d.get("reason", "")),
            started_at=d.get("started_at"),
            run=d.get("run"),
            history=[HistoryEntry.from_doc(h) for h in d.get("history") or []],
            updated_at=d.get("updated_at"),
            would_send=d.get("would_send"),
        )
