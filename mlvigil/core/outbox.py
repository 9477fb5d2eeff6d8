"""A durable outbox on the store's document API, and the asyncio dispatcher that drains it.

Every outgoing notification (an alert to Alertmanager, a signed webhook, a Slack message, a
retraining run) is *recorded* in the store before anything is sent, under a deterministic id.
The dispatcher then sends it, retrying with exponential backoff and full jitter until it is
delivered, fails permanently (a 4xx other than 408/409/425/429), runs out of attempts, or
expires. Whatever is pending when the process dies is resumed on the next start.

Delivery is at-least-once with a stable id, which receivers use to make it exactly-once:
Alertmanager de-duplicates alerts by their label set, Standard Webhooks receivers by
``webhook-id`` (the message id), and retraining targets by the deterministic run name.

Messages that share an ``order_key`` are delivered strictly in the order they were recorded
(a "resolved" never overtakes its "firing"); different keys proceed independently.

States: ``pending`` -> ``delivering`` -> ``delivered`` | ``failed`` | ``expired`` (back to
``pending`` after a retryable failure). ``delivering`` is kept in memory only: a message that
was being sent when the process died is ``pending`` again after the restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import random
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import Field

from mlvigil.core.aio import stop_task, wait_event
from mlvigil.core.config import Duration, Strict
from mlvigil.core.coordination import SAFETY, message_claims
from mlvigil.core.store import Store

log = logging.getLogger(__name__)

PENDING = "pending"
DELIVERING = "delivering"
DELIVERED = "delivered"
FAILED = "failed"
EXPIRED = "expired"
TERMINAL = frozenset({DELIVERED, FAILED, EXPIRED})

#: Seconds a claim on a message outlasts the attempt's timeout (to start it and record it).
CLAIM_MARGIN_S = 10.0


def claim_ttl(timeout: float) -> float:
    """The lease asked for a message's claim: the holder acts on it only until
    ``timeout + CLAIM_MARGIN_S`` (the rest is the clock-skew safety of leases)."""
    return (timeout + CLAIM_MARGIN_S) / (1 - SAFETY)


# HTTP statuses that are worth retrying although they are 4xx.
RETRYABLE_4XX = frozenset({408, 409, 425, 429})


class RetryPolicy(Strict):
    """How one target is retried: backoff ``min(max_backoff, initial_backoff * multiplier**(n-1))``
    with full jitter (a uniform draw below it), until ``max_attempts`` (0: no limit) or
    ``expire_after`` since the message was recorded."""

    initial_backoff: Duration = 1.0
    max_backoff: Duration = 300.0
    multiplier: float = Field(default=2.0, ge=1.0)
    max_attempts: int = Field(default=0, ge=0)
    expire_after: Duration = 86400.0
    # Per attempt, connect to last byte.
    timeout: Duration = 10.0
    # Attempts to this target in flight at once.
    concurrency: int = Field(default=4, ge=1)

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Delay before attempt ``attempt + 1`` after ``attempt`` failed ones ("full jitter")."""
        cap = min(self.max_backoff, self.initial_backoff * self.multiplier ** max(0, attempt - 1))
        return rng.uniform(0.0, cap)


@dataclass
class Outcome:
    """What one attempt achieved. ``result`` is kept on the message (e.g. the run id created)."""

    ok: bool
    retry: bool = True
    status: int | None = None
    error: str | None = None
    retry_after: float | None = None
    result: dict[str, Any] | None = None

    @classmethod
    def from_http(cls, status: int, body: str = "", retry_after: str | None = None) -> Outcome:
        if 200 <= status < 300:
            return cls(ok=True, status=status)
        delay: float | None = None
        if retry_after and retry_after.strip().isdigit():
            delay = float(retry_after.strip())
        retry = status >= 500 or status in RETRYABLE_4XX
        return cls(
            ok=False, retry=retry, status=status, error=body[:300] or f"HTTP {status}", retry_after=delay
        )


@dataclass
class Attempt:
    """One delivery attempt, as kept in a message's ``attempts`` history."""

    at: float
    duration_s: float
    #: ``delivered``, ``retry`` or ``failed``.
    outcome: str
    status: int | None = None
    error: str | None = None

    def to_doc(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "duration_s": self.duration_s,
            "outcome": self.outcome,
            "status": self.status,
            "error": self.error,
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Attempt:
        return cls(
            at=float(doc["at"]),
            duration_s=float(doc.get("duration_s", 0.0)),
            outcome=str(doc["outcome"]),
            status=doc.get("status"),
            error=doc.get("error"),
        )


@dataclass
class Message:
    """One recorded message: what is sent, to which target, and its delivery state.

    The stored JSON document is written by :meth:`to_doc` and read by :meth:`from_doc` only,
    so the stored format lives in one place.

    Examples
    --------
    >>> m = Message.from_doc({"id": "m1", "target": "hook", "order_key": "m1", "seq": 0,
    ...     "payload": {"n": 1}, "meta": {}, "state": "pending", "created_at": 1.0,
    ...     "expires_at": 2.0, "next_attempt_at": 1.0, "attempts": [],
    ...     "delivered_at": None, "result": None})
    >>> m.payload, m.state, m.last_attempt is None
    ({'n': 1}, 'pending', True)
    >>> Message.from_doc(m.to_doc()) == m
    True
    """

    id: str
    target: str
    payload: dict[str, Any]
    state: str
    created_at: float
    expires_at: float
    next_attempt_at: float
    order_key: str = ""
    seq: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    attempts: list[Attempt] = field(default_factory=list)
    delivered_at: float | None = None
    #: What the receiver answered that is worth keeping (e.g. the run id it created).
    result: dict[str, Any] | None = None
    #: The replica that recorded it (shared stores only).
    recorded_by: str | None = None

    @property
    def last_attempt(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None

    def copy(self) -> Message:
        """A copy whose attempt list can be extended without touching this one."""
        return replace(self, attempts=list(self.attempts))

    def to_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "id": self.id,
            "target": self.target,
            "order_key": self.order_key or self.id,
            "seq": self.seq,
            "payload": self.payload,
            "meta": self.meta,
            "state": self.state,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "next_attempt_at": self.next_attempt_at,
            "attempts": [a.to_doc() for a in self.attempts],
            "delivered_at": self.delivered_at,
            "result": self.result,
        }
        if self.recorded_by is not None:
            doc["recorded_by"] = self.recorded_by
        return doc

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Message:
        return cls(
            id=str(doc["id"]),
            target=str(doc["target"]),
            payload=doc.get("payload") or {},
            state=str(doc["state"]),
            created_at=float(doc["created_at"]),
            expires_at=float(doc["expires_at"]),
            next_attempt_at=float(doc["next_attempt_at"]),
            order_key=str(doc.get("order_key") or doc["id"]),
            seq=int(doc.get("seq", 0)),
            meta=dict(doc.get("meta") or {}),
            attempts=[Attempt.from_doc(a) for a in doc.get("attempts") or []],
            delivered_at=doc.get("delivered_at"),
            result=doc.get("result"),
            recorded_by=doc.get("recorded_by"),
        )


@dataclass
class NewMessage:
    id: str
    target: str
    payload: dict[str, Any]
    order_key: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    # Overrides the target's expire_after (e.g. a keep-alive that is useless once stale).
    ttl: float | None = None


Sender = Callable[[Message], Awaitable[Outcome]]
ResultHook = Callable[[Message], None]


class Outbox:
    """The message documents of one collection, mirrored in memory (the store is the truth
    after a restart; in between, this process is the only writer of the collection)."""

    def __init__(
        self,
        store: Store,
        collection: str,
        *,
        clock: Callable[[], float] = time.time,
        keep_done: float = 7 * 86400.0,
        max_done: int = 10_000,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.collection = collection
        self._clock = clock
        self._keep_done = keep_done
        self._max_done = max_done
        self._rng = rng or random.Random()
        self._lock = threading.RLock()
        self._docs: dict[str, Message] = {}
        self._seq = itertools.count()
        self._in_flight: set[str] = set()
        # Ids not yet terminal: what the dispatcher scans (finished history can be large).
        self._open: set[str] = set()
        # State changes the store could not take yet (it was unavailable); written on a later pass.
        self._unsaved: dict[str, Message] = {}
        # Replicas on a shared store: messages are claimed before each attempt, and the
        # others' messages are read back every ``refresh_every`` seconds (mlvigil.core.coordination).
        self.claims = message_claims(store)
        self.refresh_every = 1.0
        # A message another replica recorded is left to it this long (it sends at once; the
        # others step in when it could not: it died or its target is down).
        self.takeover_after = 5.0
        self._refreshed_at = 0.0
        # Message id -> monotonic time until which this replica's claim on it is safe to act on
        # (the fencing deadline: a send must end before it, or another replica may take over).
        self._claimed_until: dict[str, float] = {}
        self.load()

    # -- recording -----------------------------------------------------------------------
    def load(self) -> None:
        """(Re)read the collection; anything not terminal is pending again."""
        with self._lock:
            docs = {i: Message.from_doc(d) for i, d in self.store.list_docs(self.collection).items()}
            for msg in docs.values():
                if msg.state == DELIVERING:
                    msg.state = PENDING
            self._docs = docs
            self._open = {i for i, m in docs.items() if m.state not in TERMINAL}
            top = max((m.seq for m in docs.values()), default=-1)
            self._seq = itertools.count(top + 1)
            self._in_flight.clear()

    def record(self, messages: Sequence[NewMessage], policy_for: Callable[[str], RetryPolicy]) -> list[str]:
        """Durably record the messages not recorded before (ids are deterministic, so a
        second record of the same notification is a no-op), in one transaction."""
        now = self._clock()
        with self._lock:
            new: dict[str, Message] = {}
            for m in messages:
                if m.id in self._docs or m.id in new:
                    continue
                if self.claims is not None and (stored := self.store.get_doc(self.collection, m.id)):
                    # Recorded by another replica already: never reset it to pending.
                    self._docs[m.id] = Message.from_doc(stored)
                    if self._docs[m.id].state not in TERMINAL:
                        self._open.add(m.id)
                    continue
                policy = policy_for(m.target)
                new[m.id] = Message(
                    id=m.id,
                    target=m.target,
                    order_key=m.order_key or m.id,
                    seq=next(self._seq),
                    payload=m.payload,
                    meta=m.meta,
                    state=PENDING,
                    created_at=now,
                    expires_at=now + (m.ttl if m.ttl is not None else policy.expire_after),
                    next_attempt_at=now,
                    recorded_by=self.claims.holder if self.claims is not None else None,
                )
            if new:
                self.store.put_docs(self.collection, {i: m.to_doc() for i, m in new.items()})
                self._docs.update(new)
                self._open.update(new)
            return list(new)

    def update_meta(self, msg_id: str, **meta: Any) -> None:
        with self._lock:
            msg = self._docs.get(msg_id)
            if msg is None:
                return
            msg.meta = {**msg.meta, **meta}
            self._save({msg_id: msg})

    def _save(self, msgs: dict[str, Message]) -> None:
        """Write state changes; if the store cannot take them now (disk full), keep them
        to write on a later pass instead of failing the attempt whose outcome they record."""
        try:
            self.store.put_docs(self.collection, {i: m.to_doc() for i, m in msgs.items()})
        except Exception as exc:
            if not self._unsaved:  # once per outage, not once per pass
                log.warning("%s: cannot save message state now (%s); will retry", self.collection, exc)
            self._unsaved.update(msgs)
        else:
            for msg_id in msgs:
                self._unsaved.pop(msg_id, None)

    @property
    def unsaved(self) -> int:
        """State changes not yet written (the store was unavailable)."""
        return len(self._unsaved)

    def save_unsaved(self) -> int:
        """Retry the writes ``_save`` could not make; returns how many are still unsaved."""
        with self._lock:
            # Docs forgotten since (pruned) need no write; the others are written as they are now.
            self._unsaved = {i: self._docs[i] for i in self._unsaved if i in self._docs}
            if self._unsaved:
                self._save(dict(self._unsaved))
            return len(self._unsaved)

    # -- replicas --------------------------------------------------------------------------
    def refresh(self, now: float) -> None:
        """Read back the messages other replicas recorded or finished (shared store only)."""
        if self.claims is None or now - self._refreshed_at < self.refresh_every:
            return
        self._refreshed_at = now
        pending = {
            i: Message.from_doc(d) for i, d in self.store.list_docs(self.collection, states=[PENDING]).items()
        }
        with self._lock:
            gone = [i for i in self._open if i not in pending and i not in self._in_flight]
        finished = {i: self.store.get_doc(self.collection, i) for i in gone}
        with self._lock:
            top = -1
            for msg_id, msg in pending.items():
                top = max(top, msg.seq)
                if msg_id in self._in_flight or msg_id in self._unsaved:
                    continue
                self._docs[msg_id] = msg
                self._open.add(msg_id)
            for msg_id, fdoc in finished.items():
                if msg_id in self._in_flight or msg_id in self._unsaved or msg_id not in self._open:
                    continue
                if fdoc is None:
                    self._docs.pop(msg_id, None)
                    self._open.discard(msg_id)
                elif fdoc.get("state") in TERMINAL:
                    self._docs[msg_id] = Message.from_doc(fdoc)
                    self._open.discard(msg_id)
            # Keep this replica's next message after every one it has seen (order keys span replicas).
            nxt = next(self._seq)
            self._seq = itertools.count(max(nxt, top + 1))

    def claim(self, msg_id: str, ttl: float) -> bool:
        """Claim one taken message for an attempt (always granted on an embedded store). When
        another replica holds it or finished it, it is given back, with the stored copy kept."""
        if self.claims is None:
            return True
        with self._lock:
            msg = self._docs.get(msg_id)
            by = msg.recorded_by if msg else None
            if (
                msg is not None
                and by not in (None, self.claims.holder)
                and msg.created_at > self._clock() - self.takeover_after
            ):
                # Its recorder is sending it now; what it writes around the message (a retrain
                # trigger's state) is not stored yet either.
                self._in_flight.discard(msg_id)
                return False
        # Measured from before the claim is asked for: the lease ends ``ttl`` after the
        # database granted it, which is later than this.
        safe_until = time.monotonic() + ttl * (1 - SAFETY)
        try:
            claimed, stored_doc = self.claims.claim(self.collection, msg_id, ttl)
        except Exception as exc:
            log.warning("%s: cannot claim %s now (%s); will retry", self.collection, msg_id, exc)
            claimed, stored_doc = False, None
        stored = Message.from_doc(stored_doc) if stored_doc is not None else None
        with self._lock:
            if stored is not None and not claimed:
                self._docs[msg_id] = stored
                if stored.state in TERMINAL:
                    self._open.discard(msg_id)
            elif claimed and stored is not None:
                # The stored copy carries the attempts other replicas made.
                self._docs[msg_id] = stored
                if stored.next_attempt_at > self._clock():
                    claimed = False  # another replica attempted it meanwhile and set its backoff
                    self.claims.release(self.collection, msg_id)
            if claimed:
                self._claimed_until[msg_id] = safe_until
            else:
                self._in_flight.discard(msg_id)
        return claimed

    def claim_left(self, msg_id: str) -> float:
        """Seconds this replica may still act on its claim of ``msg_id`` (inf when embedded)."""
        if self.claims is None:
            return math.inf
        with self._lock:
            until = self._claimed_until.get(msg_id)
        return 0.0 if until is None else until - time.monotonic()

    # -- reading -------------------------------------------------------------------------
    def get(self, msg_id: str) -> Message | None:
        """A copy of one message (its state as stored: ``delivering`` is not shown here)."""
        with self._lock:
            msg = self._docs.get(msg_id)
            return msg.copy() if msg else None

    def messages(
        self, *, state: str | None = None, target: str | None = None, limit: int = 1000
    ) -> list[Message]:
        """Newest first, with delivery history; ``state`` shows ``delivering`` too."""
        with self._lock:
            msgs = [
                m
                for m in self._docs.values()
                if (state is None or self._state(m) == state) and (target is None or m.target == target)
            ]
            msgs.sort(key=lambda m: -m.seq)
            return [replace(m.copy(), state=self._state(m)) for m in msgs[:limit]]

    def counts(self) -> dict[str, int]:
        with self._lock:
            out: dict[str, int] = {}
            for m in self._docs.values():
                s = self._state(m)
                out[s] = out.get(s, 0) + 1
            return out

    def _state(self, msg: Message) -> str:
        return DELIVERING if msg.id in self._in_flight else msg.state

    # -- dispatching ---------------------------------------------------------------------
    def take_due(
        self, now: float, capacity: Callable[[str], int], policy_for: Callable[[str], RetryPolicy]
    ) -> list[Message]:
        """Claim the messages to attempt now: the oldest unfinished message of each order key,
        if it is due and its target has capacity. Expired ones are marked on the way."""
        with self._lock:
            heads: dict[str, Message] = {}
            expired: dict[str, Message] = {}
            for msg_id in list(self._open):
                m = self._docs[msg_id]
                if m.state != PENDING:
                    continue
                if m.expires_at <= now and m.id not in self._in_flight:
                    m.state = EXPIRED
                    expired[m.id] = m
                    self._open.discard(msg_id)
                    continue
                cur = heads.get(m.order_key)
                if cur is None or m.seq < cur.seq:
                    heads[m.order_key] = m
            if expired:
                self._save(expired)
            used: dict[str, int] = {}
            taken: list[Message] = []
            for m in sorted(heads.values(), key=lambda m: m.seq):
                if m.id in self._in_flight or m.next_attempt_at > now:
                    continue
                room = capacity(m.target) - used.get(m.target, 0)
                if room <= 0:
                    continue
                used[m.target] = used.get(m.target, 0) + 1
                self._in_flight.add(m.id)
                taken.append(m.copy())
            return taken

    def next_due_at(self) -> float | None:
        with self._lock:
            times = [
                min(m.next_attempt_at, m.expires_at)
                for m in (self._docs[i] for i in self._open)
                if m.state == PENDING and m.id not in self._in_flight
            ]
            return min(times) if times else None

    def complete(self, msg_id: str, started: float, outcome: Outcome, policy: RetryPolicy) -> Message:
        """Record one attempt's outcome and the message's next state; returns the message."""
        now = self._clock()
        with self._lock:
            msg = self._docs[msg_id]
            self._in_flight.discard(msg_id)
            attempt = Attempt(
                at=started,
                duration_s=round(now - started, 6),
                outcome="delivered" if outcome.ok else ("retry" if outcome.retry else "failed"),
                status=outcome.status,
                error=outcome.error,
            )
            msg.attempts = [*msg.attempts, attempt]
            if outcome.result is not None:
                msg.result = outcome.result
            n = len(msg.attempts)
            if outcome.ok:
                msg.state = DELIVERED
                msg.delivered_at = now
            elif not outcome.retry or (policy.max_attempts and n >= policy.max_attempts):
                msg.state = FAILED
            else:
                delay = policy.backoff(n, self._rng)
                if outcome.retry_after is not None:
                    delay = max(delay, outcome.retry_after)
                msg.next_attempt_at = now + delay
                msg.state = EXPIRED if msg.next_attempt_at >= msg.expires_at else PENDING
            if msg.state in TERMINAL:
                self._open.discard(msg_id)
            self._save({msg_id: msg})
            self._claimed_until.pop(msg_id, None)
            # An outcome the store could not take keeps its claim until the claim expires:
            # released now, another replica would read "pending" and send it again.
            saved = msg_id not in self._unsaved
        if self.claims is not None and saved:
            with contextlib.suppress(Exception):  # an unreleased claim expires by itself
                self.claims.release(self.collection, msg_id)
        with self._lock:
            return msg.copy()

    def release(self, msg_id: str, *, claim: bool = False) -> None:
        """Give back a taken message without an attempt (the dispatcher is stopping); with
        ``claim``, its claim too (it had too little time left for an attempt)."""
        with self._lock:
            self._in_flight.discard(msg_id)
            had_claim = self._claimed_until.pop(msg_id, None) is not None
        if self.claims is not None and had_claim and claim:
            with contextlib.suppress(Exception):  # an unreleased claim expires by itself
                self.claims.release(self.collection, msg_id)

    def prune(self, now: float) -> int:
        """Forget finished messages older than ``keep_done`` (and beyond ``max_done``)."""
        with self._lock:
            done = sorted(
                (m for m in self._docs.values() if m.state in TERMINAL), key=lambda m: m.seq, reverse=True
            )
            drop = [
                m.id
                for i, m in enumerate(done)
                if i >= self._max_done or m.created_at < now - self._keep_done
            ]
            for msg_id in drop:
                self.store.delete_doc(self.collection, msg_id)
                del self._docs[msg_id]
            return len(drop)


@dataclass
class _Target:
    sender: Sender
    policy: RetryPolicy


class Dispatcher:
    """Drains an Outbox on the event loop: one task per attempt, bounded per target."""

    def __init__(
        self, outbox: Outbox, name: str = "outbox", *, prune_every: float = 600.0, stop_grace: float = 5.0
    ) -> None:
        self.outbox = outbox
        #: Seconds ``stop`` waits for attempts in flight before cancelling them.
        self.stop_grace = stop_grace
        self.name = name
        self._targets: dict[str, _Target] = {}
        self._hooks: list[ResultHook] = []
        self._running: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self._main: asyncio.Task[None] | None = None
        self._stopping = False
        self._last_prune = 0.0
        self._prune_every = prune_every
        self._default_policy = RetryPolicy()

    def add_target(self, target: str, sender: Sender, policy: RetryPolicy) -> None:
        self._targets[target] = _Target(sender, policy)

    def on_result(self, hook: ResultHook) -> None:
        """Called (on the loop) with the message after every attempt."""
        self._hooks.append(hook)

    def policy_for(self, target: str) -> RetryPolicy:
        t = self._targets.get(target)
        return t.policy if t else self._default_policy

    def record(self, messages: Sequence[NewMessage]) -> list[str]:
        """Record durably, then wake the dispatcher; safe from any thread."""
        ids = self.outbox.record(messages, self.policy_for)
        if ids:
            self.wake()
        return ids

    def wake(self) -> None:
        loop, event = self._loop, self._event
        if loop is None or event is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            event.set()
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(event.set)

    def _capacity(self, target: str) -> int:
        t = self._targets.get(target)
        if t is None:
            return 0  # a target no longer configured: kept, not sent, until it expires
        return t.policy.concurrency - self._running.get(target, 0)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        self._stopping = False
        self.outbox.load()
        self._main = asyncio.create_task(self._run(), name=f"{self.name}-dispatcher")

    async def stop(self) -> None:
        # The flag ends the loop at its next wake even if a cancellation were lost.
        self._stopping = True
        self.wake()
        await stop_task(self._main)
        self._main = None
        if self._tasks:
            # Let attempts in flight finish and record their outcome: one cut off after the
            # receiver got it but before it was marked delivered would be sent again after
            # a restart. Those still running after the grace period are cancelled (released
            # for a later attempt; the stable message id lets receivers drop the repeat).
            _, late = await asyncio.wait(set(self._tasks), timeout=self.stop_grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if self.outbox.unsaved:
            await asyncio.to_thread(self.outbox.save_unsaved)
        self._loop = None

    async def _run(self) -> None:
        assert self._event is not None
        self._last_prune = time.time()
        while not self._stopping:
            self._event.clear()
            try:
                await self._dispatch_due()
            except Exception:
                # A store that cannot be read or written right now (disk full) must not end
                # the dispatcher: log and try again on the next pass.
                log.exception("%s: dispatch pass failed; retrying", self.name)
            nxt = self.outbox.next_due_at()
            timeout = 1.0 if nxt is None else min(1.0, max(0.001, nxt - self.outbox._clock()))
            await wait_event(self._event, timeout)

    async def _dispatch_due(self) -> None:
        """Start an attempt for every message due; prune now and then."""
        if self.outbox.unsaved:
            await asyncio.to_thread(self.outbox.save_unsaved)
        now = self.outbox._clock()
        if self.outbox.claims is not None:
            await asyncio.to_thread(self.outbox.refresh, now)
        for msg in self.outbox.take_due(now, self._capacity, self.policy_for):
            self._running[msg.target] = self._running.get(msg.target, 0) + 1
            task = asyncio.create_task(self._attempt(msg))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if now - self._last_prune > self._prune_every:
            self._last_prune = now  # first: a prune the store refuses waits a period, not a pass
            await asyncio.to_thread(self.outbox.prune, now)

    async def _attempt(self, msg: Message) -> None:
        target = self._targets[msg.target]
        try:
            # Claimed for the attempt's timeout and the time to record its outcome (a replica
            # that dies mid-attempt holds the message this long at most).
            timeout = target.policy.timeout
            try:
                claimed = await asyncio.to_thread(self.outbox.claim, msg.id, claim_ttl(timeout))
            except asyncio.CancelledError:
                self.outbox.release(msg.id)
                raise
            if not claimed:
                return
            # Fencing: the send must end while the claim is still ours. A replica stalled
            # between claiming and sending (an overloaded loop) gives the message back rather
            # than send it while another replica may already have taken it over.
            if self.outbox.claim_left(msg.id) < timeout + CLAIM_MARGIN_S / 2:
                log.warning("%s: claim on %s ran short before sending; giving it back", self.name, msg.id)
                await asyncio.to_thread(self.outbox.release, msg.id, claim=True)
                return
            started = self.outbox._clock()
            try:
                outcome = await asyncio.wait_for(target.sender(msg), timeout=timeout)
            except TimeoutError:
                outcome = Outcome(ok=False, error=f"timed out after {timeout}s")
            except asyncio.CancelledError:
                self.outbox.release(msg.id)
                raise
            except Exception as exc:
                outcome = Outcome(ok=False, error=f"{type(exc).__name__}: {exc}"[:300])
            done = await asyncio.to_thread(self.outbox.complete, msg.id, started, outcome, target.policy)
            if not outcome.ok:
                log.warning(
                    "%s: delivery of %s to %s failed (%s); state %s",
                    self.name,
                    msg.id,
                    msg.target,
                    outcome.error or outcome.status,
                    done.state,
                )
            for hook in self._hooks:
                try:
                    hook(done)
                except Exception:
                    log.exception("%s: result hook failed for %s", self.name, msg.id)
        finally:
            self._running[msg.target] -= 1
            self.wake()
