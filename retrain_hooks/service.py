"""Retraining triggers: policies turn firing Findings into at most one pipeline run per model.

A trigger's id is deterministic (policy, Finding fingerprint, the firing episode's start), so
every evaluation of the same firing Finding maps onto the same trigger, and the run it starts
is named ``mlvigil-<id>``: the target de-duplicates on that name (see ``targets``).

Life of a trigger (each step appended to its ``history``, the audit trail):

``skipped`` (cooldown / in flight; reconsidered while the Finding keeps firing) |
``dry_run`` | ``pending_approval`` -> ``approved`` | ``rejected`` | ``expired`` ->
``queued`` (recorded in the outbox) -> ``submitted`` -> ``running`` -> ``succeeded`` |
``failed`` | ``canceled``; or ``submit_failed`` when the outbox gave up.

Stages: ``policies`` (which policies a Finding meets, the in-flight and cooldown gate, the
trigger made), ``book`` (the stored triggers), the outbox (submission with retries, through
one ``targets`` module per target type), and the follower (:meth:`RetrainService.follow_once`).
``RetrainService`` wires them together.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from mlvigil.core.finding_book import FindingBook
from mlvigil.core.findings import Finding
from mlvigil.core.outbox import DELIVERED, EXPIRED, FAILED, PENDING, Message, NewMessage
from mlvigil.core.outbox_service import OutboxService
from mlvigil.core.store import Store
from retrain_hooks.book import TRIGGERS, TriggerBook
from retrain_hooks.config import PolicyConfig, RetrainConfig
from retrain_hooks.policies import Policies, blocked, new_trigger
from retrain_hooks.targets import TARGET_TYPES, RetrainTarget, build_target
from retrain_hooks.trigger import IN_FLIGHT, STARTED, Trigger, trigger_id

log = logging.getLogger(__name__)

OUTBOX = "retrain_outbox"
# Target kinds whose runs are followed after submission (the others count as succeeded).
FOLLOWED = frozenset(cls.kind for cls in TARGET_TYPES.values() if cls.followed)

__all__ = ["IN_FLIGHT", "OUTBOX", "STARTED", "TRIGGERS", "RetrainService", "trigger_id"]


class RetrainService(OutboxService):
    """The ``retrain`` component: Finding listener, outbox dispatcher and run follower."""

    name = "retrain"
    step_first = False  # the first follow pass comes one poll_interval after the start

    def __init__(
        self,
        cfg: RetrainConfig,
        store: Store,
        book: FindingBook,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(store, OUTBOX, clock=clock)
        self.cfg = cfg
        self.targets: dict[str, RetrainTarget] = {t.name: build_target(t, self.session) for t in cfg.targets}
        for t in cfg.targets:
            self.dispatcher.add_target(t.name, self.targets[t.name].submit, t.retry)
        self.dispatcher.on_result(self._on_result)
        self.policies = Policies(cfg.policies)
        self.book = TriggerBook(store)
        book.subscribe(self.on_finding)

    # -- policies (detector thread) ------------------------------------------------------
    def on_finding(self, finding: Finding, transition: str) -> None:
        if transition == "resolved":
            return
        now = self._clock()
        for policy in self.policies.matching(finding):
            try:
                self._consider(policy, finding, now)
            except Exception:
                log.exception("retrain policy %s failed on finding %s", policy.name, finding.id)

    def _consider(self, policy: PolicyConfig, finding: Finding, now: float) -> None:
        tid = trigger_id(policy.name, finding)
        model = finding.subject.get(policy.model_label, "")
        target = self.targets[policy.target]
        with self.book.lock:
            # Replicas on a shared store: another replica may have made this trigger.
            existing = self.book.get(tid, shared=self.outbox.claims is not None)
            if existing is not None and existing.status != "skipped":
                return  # this firing episode already has its trigger
            reason = blocked(self.book.values(), model, tid, now, policy)
            if reason is not None:
                if existing is None or existing.reason != reason:
                    trigger = existing or new_trigger(
                        tid, policy, target.name, target.kind, finding, model, now
                    )
                    self.book.set(trigger, "skipped", now, reason)
                return
            trigger = new_trigger(tid, policy, target.name, target.kind, finding, model, now)
            if existing is not None:
                trigger.history = existing.history
            if policy.dry_run:
                trigger.would_send = target.preview(trigger)
                self.book.set(trigger, "dry_run", now, "dry-run policy: nothing started")
            elif policy.approval:
                self.book.set(trigger, "pending_approval", now, "waiting for approval through the API")
            else:
                self._queue(trigger, now, f"{finding.kind} {finding.severity} on {model or finding.subject}")

    def _queue(self, trigger: Trigger, now: float, reason: str) -> None:
        # Outbox first: the message id is the trigger id, so re-queueing after a crash is a no-op.
        payload = trigger.run_request().to_payload()
        self.dispatcher.record(
            [NewMessage(trigger.id, trigger.target, payload, meta={"trigger": trigger.id})]
        )
        trigger.started_at = now
        self.book.set(trigger, "queued", now, reason)

    # -- API actions ---------------------------------------------------------------------
    def _pending(self, tid: str) -> Trigger:
        trigger = self.book.get(tid)
        if trigger is None:
            raise KeyError(tid)
        if trigger.status != "pending_approval":
            raise ValueError(f"trigger {tid} is {trigger.status}, not pending_approval")
        return trigger

    def approve(self, tid: str, who: str = "", note: str = "") -> dict[str, Any]:
        with self.book.lock:
            trigger = self._pending(tid)
            now = self._clock()
            self.book.set(
                trigger, "approved", now, f"approved by {who or 'anonymous'}{': ' + note if note else ''}"
            )
            self._queue(trigger, now, "queued after approval")
            return trigger.to_doc()

    def preview(self, tid: str) -> dict[str, Any]:
        """What approving the trigger would send to its target, sending nothing (a dry run)."""
        with self.book.lock:
            trigger = self.book.get(tid)
            if trigger is None:
                raise KeyError(tid)
            return {
                "id": tid,
                "status": trigger.status,
                "would_send": self.targets[trigger.target].preview(trigger),
            }

    def reject(self, tid: str, who: str = "", note: str = "") -> dict[str, Any]:
        with self.book.lock:
            trigger = self._pending(tid)
            reason = f"rejected by {who or 'anonymous'}{': ' + note if note else ''}"
            self.book.set(trigger, "rejected", self._clock(), reason)
            return trigger.to_doc()

    def triggers(self, status: str | None = None, model: str | None = None) -> list[dict[str, Any]]:
        """The triggers as the API shows them (their stored form and their delivery), newest first."""
        with self.book.lock:
            docs = [
                t.to_doc()
                for t in self.book.values()
                if (status is None or t.status == status) and (model is None or t.model == model)
            ]
        for d in docs:
            msg = self.outbox.get(d["id"])
            d["delivery"] = (
                {"state": msg.state, "attempts": [a.to_doc() for a in msg.attempts]} if msg else None
            )
        return sorted(docs, key=lambda d: -float(d["created_at"]))

    # -- delivery results and following --------------------------------------------------
    def _on_result(self, msg: Message) -> None:
        with self.book.lock:
            # Replicas on a shared store: another replica may have recorded the trigger and this
            # one delivered it (docs/scale-out.md); the outcome is kept on the stored trigger.
            trigger = self.book.get(msg.id, shared=True)
            if trigger is None:
                return
            now = self._clock()
            if msg.state == DELIVERED:
                run = trigger.run = msg.result or {}
                follow = trigger.target_kind in FOLLOWED
                existing = " (it already existed)" if run.get("existing") else ""
                self.book.set(
                    trigger,
                    "submitted" if follow else "succeeded",
                    now,
                    f"run {run.get('run_id') or trigger.run_name} started{existing}"
                    + ("" if follow else "; webhook targets are not followed"),
                )
            elif msg.state in (FAILED, EXPIRED):
                last = msg.last_attempt
                self.book.set(
                    trigger, "submit_failed", now, f"outbox {msg.state}: {last.error if last else None}"
                )

    def _expire_approvals(self, now: float) -> None:
        for trigger in self.book.values():
            if trigger.status == "pending_approval" and now > trigger.created_at + self.cfg.approval_timeout:
                self.book.set(trigger, "expired", now, "not approved in time")

    def restore(self) -> None:
        """After a restart: re-queue what was approved or queued, settle what was delivered."""
        now = self._clock()
        with self.book.lock:
            for trigger in self.book.values():
                if trigger.status in ("approved", "queued"):
                    msg = self.outbox.get(trigger.id)
                    if msg is None:
                        self._queue(trigger, now, "re-queued after restart")
                    elif msg.state != PENDING:
                        self._on_result(msg)
            self._expire_approvals(now)

    async def follow_once(self) -> None:
        """Poll the state of every started run once."""
        with self.book.lock:
            active = [
                dataclasses.replace(t) for t in self.book.values() if t.status in ("submitted", "running")
            ]
        for snapshot in active:
            target = self.targets.get(snapshot.target)
            if target is None:
                continue
            try:
                state = await target.state(snapshot)
            except (aiohttp.ClientError, OSError) as exc:
                log.warning("cannot read the state of run %s: %s", snapshot.run_name, type(exc).__name__)
                continue
            if state is None:
                continue
            status, raw = state
            with self.book.lock:
                live = self.book.triggers[snapshot.id]
                if live.status != status:
                    self.book.set(live, status, self._clock(), f"{target.kind} reports {raw}")
        with self.book.lock:
            self._expire_approvals(self._clock())

    async def step(self) -> None:
        await self.follow_once()

    def next_wait(self) -> float:
        return float(self.cfg.poll_interval)
