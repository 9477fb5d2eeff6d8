"""Retraining triggers: policies turn firing Findings into at most one pipeline run per model.

A trigger's id is deterministic (policy, Finding fingerprint, the firing episode's start), so
every evaluation of the same firing Finding maps onto the same trigger, and the run it starts
is named ``mlvigil-<id>``: the target de-duplicates on that name (see ``targets``).

Life of a trigger (each step appended to its ``history``, the audit trail):

``skipped`` (cooldown / in flight; reconsidered while the Finding keeps firing) |
``dry_run`` | ``pending_approval`` -> ``approved`` | ``rejected`` | ``expired`` ->
``queued`` (recorded in the outbox) -> ``submitted`` -> ``running`` -> ``succeeded`` |
``failed`` | ``canceled``; or ``submit_failed`` when the outbox gave up.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from alerts.matchers import all_match, parse_matcher
from mlvigil.aio import stop_task
from mlvigil.finding_book import FindingBook
from mlvigil.findings import Finding
from mlvigil.outbox import Dispatcher, NewMessage, Outbox
from mlvigil.store import Store
from retrain_hooks import targets as tg
from retrain_hooks.config import PolicyConfig, RetrainConfig

log = logging.getLogger(__name__)

TRIGGERS = "retrain_triggers"
OUTBOX = "retrain_outbox"
# States in which a model counts as having a run in flight.
IN_FLIGHT = frozenset({"pending_approval", "approved", "queued", "submitted", "running"})
# States that count as "a run was started" for the cooldown.
STARTED = frozenset({"queued", "submitted", "running", "succeeded", "failed", "canceled"})


def trigger_id(policy: str, finding: Finding) -> str:
    raw = json.dumps([policy, finding.id, round(finding.started_at, 3)])
    return hashlib.sha256(raw.encode()).hexdigest()[:20]


class RetrainService:
    """The ``retrain`` component: Finding listener, outbox dispatcher and run follower."""

    name = "retrain"

    def __init__(
        self,
        cfg: RetrainConfig,
        store: Store,
        book: FindingBook,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self._clock = clock
        self.targets = {t.name: t for t in cfg.targets}
        self._policies = [(p, [parse_matcher(m) for m in p.matchers]) for p in cfg.policies]
        self.outbox = Outbox(store, OUTBOX, clock=clock)
        self.dispatcher = Dispatcher(self.outbox, name="retrain")
        self._session: aiohttp.ClientSession | None = None
        for t in cfg.targets:
            if t.kfp:
                sender = tg.kfp_sender(self._session_of, t.kfp)
            elif t.argo:
                sender = tg.argo_sender(self._session_of, t.argo)
            else:
                assert t.webhook is not None
                sender = tg.webhook_sender(self._session_of, t.webhook)
            self.dispatcher.add_target(t.name, sender, t.retry)
        self.dispatcher.on_result(self._on_result)
        self._lock = threading.RLock()
        self._triggers: dict[str, dict[str, Any]] = store.list_docs(TRIGGERS)
        self._task: asyncio.Task[None] | None = None
        self._wake_event: asyncio.Event | None = None
        book.subscribe(self.on_finding)

    def _session_of(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("retrain service is not started")
        return self._session

    # -- policies (detector thread) ------------------------------------------------------
    def on_finding(self, finding: Finding, transition: str) -> None:
        if transition == "resolved":
            return
        now = self._clock()
        for policy, matchers in self._policies:
            if policy.kinds and finding.kind not in policy.kinds:
                continue
            if str(finding.severity) not in policy.severities or not all_match(matchers, finding.subject):
                continue
            # Firing time as of the evaluation that reported it (updated_at is that evaluation).
            if finding.updated_at - finding.started_at < policy.min_firing:
                continue
            try:
                self._consider(policy, finding, now)
            except Exception:
                log.exception("retrain policy %s failed on finding %s", policy.name, finding.id)

    def _consider(self, policy: PolicyConfig, finding: Finding, now: float) -> None:
        tid = trigger_id(policy.name, finding)
        model = finding.subject.get(policy.model_label, "")
        with self._lock:
            existing = self._triggers.get(tid)
            if existing is None and self.outbox.claims is not None:
                # Replicas on a shared store: another replica may have made this trigger.
                existing = self.store.get_doc(TRIGGERS, tid)
                if existing is not None:
                    self._triggers[tid] = existing
            if existing is not None and existing["status"] != "skipped":
                return  # this firing episode already has its trigger
            reason = self._blocked(model, tid, now, policy)
            if reason is not None:
                if existing is None or existing.get("reason") != reason:
                    doc = existing or self._new_trigger(tid, policy, finding, model, now)
                    self._set(doc, "skipped", now, reason)
                return
            doc = self._new_trigger(tid, policy, finding, model, now)
            if existing is not None:
                doc["history"] = existing["history"]
            if policy.dry_run:
                doc["would_send"] = self._request_preview(doc)
                self._set(doc, "dry_run", now, "dry-run policy: nothing started")
            elif policy.approval:
                self._set(doc, "pending_approval", now, "waiting for approval through the API")
            else:
                self._queue(doc, now, f"{finding.kind} {finding.severity} on {model or finding.subject}")

    def _blocked(self, model: str, tid: str, now: float, policy: PolicyConfig) -> str | None:
        last_started = 0.0
        for doc in self._triggers.values():
            if doc["model"] != model or doc["id"] == tid:
                continue
            if doc["status"] in IN_FLIGHT:
                return f"in_flight: trigger {doc['id']} is {doc['status']}"
            if doc["status"] in STARTED:
                last_started = max(last_started, float(doc.get("started_at") or doc["created_at"]))
        if last_started and now < last_started + policy.cooldown:
            until = last_started + policy.cooldown
            return f"cooldown: no new run for {model or 'this model'} before {until:.0f}"
        return None

    def _new_trigger(
        self, tid: str, policy: PolicyConfig, finding: Finding, model: str, now: float
    ) -> dict[str, Any]:
        run_name = f"mlvigil-{tid}"
        params: dict[str, Any] = dict(policy.parameters)
        if policy.pass_finding:
            params.update(
                {
                    "mlvigil_trigger_id": tid,
                    "mlvigil_finding_id": finding.id,
                    "mlvigil_finding_kind": finding.kind,
                    "mlvigil_severity": str(finding.severity),
                    "mlvigil_model": model,
                    "mlvigil_summary": finding.summary,
                    "mlvigil_evidence": json.dumps(finding.evidence, sort_keys=True, default=str),
                }
            )
        target = self.targets[policy.target]
        return {
            "id": tid,
            "policy": policy.name,
            "target": target.name,
            "target_kind": target.kind,
            "model": model,
            "run_name": run_name,
            "parameters": params,
            "labels": {"mlvigil.io/trigger-id": tid, "mlvigil.io/policy": policy.name},
            "finding": {
                "id": finding.id,
                "kind": finding.kind,
                "severity": str(finding.severity),
                "subject": finding.subject,
                "summary": finding.summary,
                "evidence": finding.evidence,
                "started_at": finding.started_at,
            },
            "status": "new",
            "reason": "",
            "created_at": now,
            "started_at": None,
            "run": None,
            "history": [],
        }

    def _request_preview(self, doc: dict[str, Any]) -> dict[str, Any]:
        """What the target would be sent, for the audit of a dry run."""
        target = self.targets[doc["target"]]
        if target.kfp:
            body = tg.kfp_run_body(target.kfp, doc["run_name"], doc["parameters"], doc["finding"]["summary"])
            return {"method": "POST", "url": target.kfp.url.rstrip("/") + "/apis/v2beta1/runs", "body": body}
        if target.argo:
            body = tg.argo_submit_body(target.argo, doc["run_name"], doc["parameters"], doc["labels"])
            url = f"{target.argo.url.rstrip('/')}/api/v1/workflows/{target.argo.namespace}/submit"
            return {"method": "POST", "url": url, "body": body}
        assert target.webhook is not None
        return {"method": "POST", "url": target.webhook.url, "body": {"run_name": doc["run_name"]}}

    def _set(self, doc: dict[str, Any], status: str, now: float, reason: str, persist: bool = True) -> None:
        doc["status"] = status
        doc["reason"] = reason
        doc["updated_at"] = now
        doc["history"] = [*doc["history"], {"at": now, "status": status, "reason": reason}]
        self._triggers[doc["id"]] = doc
        if persist:
            self.store.put_doc(TRIGGERS, doc["id"], doc)

    def _queue(self, doc: dict[str, Any], now: float, reason: str) -> None:
        # Outbox first: the message id is the trigger id, so re-queueing after a crash is a no-op.
        payload = {
            "run_name": doc["run_name"],
            "parameters": doc["parameters"],
            "labels": doc["labels"],
            "description": f"mlvigil retraining trigger {doc['id']}: {doc['finding']['summary']}",
            "trigger_id": doc["id"],
            "policy": doc["policy"],
            "finding": doc["finding"],
        }
        self.dispatcher.record([NewMessage(doc["id"], doc["target"], payload, meta={"trigger": doc["id"]})])
        doc["started_at"] = now
        self._set(doc, "queued", now, reason)

    # -- API actions ---------------------------------------------------------------------
    def approve(self, tid: str, who: str = "", note: str = "") -> dict[str, Any]:
        with self._lock:
            doc = self._triggers.get(tid)
            if doc is None:
                raise KeyError(tid)
            if doc["status"] != "pending_approval":
                raise ValueError(f"trigger {tid} is {doc['status']}, not pending_approval")
            now = self._clock()
            self._set(doc, "approved", now, f"approved by {who or 'anonymous'}{': ' + note if note else ''}")
            self._queue(doc, now, "queued after approval")
            return dict(doc)

    def preview(self, tid: str) -> dict[str, Any]:
        """What approving the trigger would send to its target, sending nothing (a dry run)."""
        with self._lock:
            doc = self._triggers.get(tid)
            if doc is None:
                raise KeyError(tid)
            return {"id": tid, "status": doc["status"], "would_send": self._request_preview(doc)}

    def reject(self, tid: str, who: str = "", note: str = "") -> dict[str, Any]:
        with self._lock:
            doc = self._triggers.get(tid)
            if doc is None:
                raise KeyError(tid)
            if doc["status"] != "pending_approval":
                raise ValueError(f"trigger {tid} is {doc['status']}, not pending_approval")
            self._set(
                doc,
                "rejected",
                self._clock(),
                f"rejected by {who or 'anonymous'}{': ' + note if note else ''}",
            )
            return dict(doc)

    def triggers(self, status: str | None = None, model: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            docs = [
                dict(d)
                for d in self._triggers.values()
                if (status is None or d["status"] == status) and (model is None or d["model"] == model)
            ]
        for d in docs:
            msg = self.outbox.get(d["id"])
            d["delivery"] = {"state": msg["state"], "attempts": msg["attempts"]} if msg else None
        return sorted(docs, key=lambda d: -float(d["created_at"]))

    # -- delivery results and following --------------------------------------------------
    def _on_result(self, msg: dict[str, Any]) -> None:
        with self._lock:
            doc = self._triggers.get(msg["id"])
            if doc is None:
                # Replicas on a shared store: another replica recorded the trigger and this one
                # delivered it (docs/scale-out.md); the outcome is kept on the stored trigger.
                doc = self.store.get_doc(TRIGGERS, msg["id"])
                if doc is None:
                    return
                self._triggers[msg["id"]] = doc
            now = self._clock()
            if msg["state"] == "delivered":
                doc["run"] = msg.get("result") or {}
                follow = doc["target_kind"] != "webhook"
                existing = " (it already existed)" if doc["run"].get("existing") else ""
                self._set(
                    doc,
                    "submitted" if follow else "succeeded",
                    now,
                    f"run {doc['run'].get('run_id') or doc['run_name']} started{existing}"
                    + ("" if follow else "; webhook targets are not followed"),
                )
            elif msg["state"] in ("failed", "expired"):
                last = msg["attempts"][-1] if msg["attempts"] else {}
                self._set(doc, "submit_failed", now, f"outbox {msg['state']}: {last.get('error')}")

    def _reconcile(self) -> None:
        """After a restart: re-queue what was approved or queued, settle what was delivered."""
        now = self._clock()
        with self._lock:
            for doc in list(self._triggers.values()):
                if doc["status"] in ("approved", "queued"):
                    msg = self.outbox.get(doc["id"])
                    if msg is None:
                        self._queue(doc, now, "re-queued after restart")
                    elif msg["state"] != "pending":
                        self._on_result(msg)
                elif (
                    doc["status"] == "pending_approval"
                    and now > doc["created_at"] + self.cfg.approval_timeout
                ):
                    self._set(doc, "expired", now, "not approved in time")

    async def follow_once(self) -> None:
        """Poll the state of every started run once."""
        with self._lock:
            active = [dict(d) for d in self._triggers.values() if d["status"] in ("submitted", "running")]
        for doc in active:
            target = self.targets.get(doc["target"])
            if target is None:
                continue
            try:
                if target.kfp and doc["run"] and doc["run"].get("run_id"):
                    state = await tg.kfp_state(self._session_of(), target.kfp, doc["run"]["run_id"])
                elif target.argo:
                    state = await tg.argo_state(
                        self._session_of(), target.argo, doc["run"].get("run_name") or doc["run_name"]
                    )
                else:
                    continue
            except (aiohttp.ClientError, OSError) as exc:
                log.warning("cannot read the state of run %s: %s", doc["run_name"], type(exc).__name__)
                continue
            if state is None:
                continue
            status, raw = state
            with self._lock:
                live = self._triggers[doc["id"]]
                if live["status"] != status:
                    self._set(live, status, self._clock(), f"{target.kind} reports {raw}")
        now = self._clock()
        with self._lock:
            for doc in list(self._triggers.values()):
                if (
                    doc["status"] == "pending_approval"
                    and now > doc["created_at"] + self.cfg.approval_timeout
                ):
                    self._set(doc, "expired", now, "not approved in time")

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()
        await self.dispatcher.start()
        await asyncio.to_thread(self._reconcile)
        self._task = asyncio.create_task(self._follow(), name="retrain-follow")

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.poll_interval)
            try:
                await self.follow_once()
            except Exception:
                log.exception("retrain follow pass failed")

    async def stop(self) -> None:
        await stop_task(self._task)
        self._task = None
        await self.dispatcher.stop()
        if self._session:
            await self._session.close()
            self._session = None
