"""Dividing work among N equal replicas by leases held in PostgreSQL.

No cluster protocol of our own: a lease is a row of ``mlvigil_leases`` (name, holder,
expires_at), taken with one INSERT ... ON CONFLICT DO UPDATE ... WHERE expired, renewed by
its holder's heartbeat, and measured on the database's clock (replicas' clocks never meet).

- Liveness: every replica renews ``replica:<id>`` each heartbeat (``ttl / 3``).
- Detector work: each detector (each drift monitor, each training/GPU/carbon detector) is a
  lease ``detector:<name>``. A replica holds at most ``ceil(keys / live replicas)`` of them;
  one holding more releases the surplus (a new replica gets its share), one holding fewer
  takes expired or free ones. A replica believes it holds a lease only until
  ``renewed_at + ttl * (1 - SAFETY)`` on its own monotonic clock, which is earlier than the
  database's expiry, so two replicas never evaluate the same detector at once. A dead
  replica's leases expire ``ttl`` after its last heartbeat and are taken within one more
  heartbeat: work moves within ``ttl * 4 / 3``.
- Outbox messages: a replica claims a message before sending it (``MessageClaims``): the
  document row is locked with SELECT ... FOR UPDATE SKIP LOCKED, its stored state checked
  (another replica may have delivered it), and a lease ``outbox:<collection>:<id>`` taken for
  the attempt's timeout. Each message is thus attempted by one replica at a time; after a
  crash mid-attempt the claim expires and another replica retries it under the same id.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from mlvigil.core.aio import stop_task

if TYPE_CHECKING:
    import psycopg

    from mlvigil.core.store.base import Store
    from mlvigil.core.store.postgres import PostgresStore

log = logging.getLogger(__name__)

# Fraction of the lease a holder gives up early (its own clock may run slow, a renewal slow).
SAFETY = 0.2
_NOW = "extract(epoch from clock_timestamp())"


def new_replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Leases:
    """Lease rows on one connection of its own (a long COPY never delays a heartbeat)."""

    def __init__(self, store: PostgresStore, holder: str) -> None:
        self.store = store
        self.holder = holder
        self._lock = threading.Lock()
        self._con: psycopg.Connection[Any] | None = None

    def _run(self, work: Callable[[psycopg.Connection[Any]], Any]) -> Any:
        with self._lock:
            if self._con is None or self._con.closed or self._con.broken:
                self._con = self.store.connect()
            try:
                return work(self._con)
            except Exception:
                with contextlib.suppress(Exception):
                    self._con.close()
                self._con = None
                raise

    def acquire(self, names: Iterable[str], ttl: float) -> list[str]:
        """Take or renew each lease that is free, expired or ours; returns those now held."""
        names = list(names)
        if not names:
            return []

        def take(con: psycopg.Connection[Any]) -> list[str]:
            rows = con.execute(
                "INSERT INTO mlvigil_leases (name, holder, expires_at, acquired_at)"
                f" SELECT n, %(me)s, {_NOW} + %(ttl)s, {_NOW} FROM unnest(%(names)s::text[]) AS n"
                " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,"
                " expires_at = excluded.expires_at,"
                " acquired_at = CASE WHEN mlvigil_leases.holder = excluded.holder"
                " THEN mlvigil_leases.acquired_at ELSE excluded.acquired_at END"
                f" WHERE mlvigil_leases.holder = excluded.holder OR mlvigil_leases.expires_at < {_NOW}"
                " RETURNING name",
                {"me": self.holder, "ttl": ttl, "names": names},
            ).fetchall()
            return [r[0] for r in rows]

        return list(self._run(take))

    def renew_held(self, prefix: str, ttl: float) -> list[str]:
        """Renew every unexpired lease of ours under ``prefix``; returns their names."""

        def renew(con: psycopg.Connection[Any]) -> list[str]:
            rows = con.execute(
                f"UPDATE mlvigil_leases SET expires_at = {_NOW} + %s WHERE holder = %s AND name LIKE %s"
                f" AND expires_at >= {_NOW} RETURNING name",
                [ttl, self.holder, prefix + "%"],
            ).fetchall()
            return [r[0] for r in rows]

        return list(self._run(renew))

    def live(self, prefix: str) -> list[tuple[str, str]]:
        """(name, holder) of the unexpired leases under ``prefix``."""

        def read(con: psycopg.Connection[Any]) -> list[tuple[str, str]]:
            rows = con.execute(
                f"SELECT name, holder FROM mlvigil_leases WHERE name LIKE %s AND expires_at >= {_NOW}",
                [prefix + "%"],
            ).fetchall()
            return [(r[0], r[1]) for r in rows]

        return list(self._run(read))

    def release(self, names: Iterable[str]) -> None:
        names = list(names)
        if names:
            self._run(
                lambda con: con.execute(
                    "DELETE FROM mlvigil_leases WHERE holder = %s AND name = ANY(%s)", [self.holder, names]
                )
            )

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                with contextlib.suppress(Exception):
                    self._con.close()
                self._con = None


class Coordinator:
    """This replica's share of the detector work; a component (heartbeat task)."""

    name = "coordination"

    def __init__(self, store: PostgresStore, ttl: float, replica_id: str | None = None) -> None:
        self.replica_id = replica_id or new_replica_id()
        self.ttl = ttl
        self.heartbeat = ttl / 3
        self.leases = Leases(store, self.replica_id)
        self.claims = MessageClaims(store, self.replica_id)
        self._keys: set[str] = set()
        # Lease name -> monotonic deadline until which this replica may act on it.
        self._held: dict[str, float] = {}
        self._lock = threading.Lock()
        self._listeners: list[Callable[[str], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._rng = random.Random()

    # -- what detectors ask ----------------------------------------------------------------
    def set_keys(self, keys: Iterable[str]) -> None:
        with self._lock:
            self._keys = set(keys)

    def holds(self, key: str) -> bool:
        with self._lock:
            deadline = self._held.get(key)
        return deadline is not None and time.monotonic() < deadline

    def held(self) -> list[str]:
        now = time.monotonic()
        with self._lock:
            return sorted(k for k, d in self._held.items() if now < d)

    def on_acquired(self, listener: Callable[[str], None]) -> None:
        """Called (heartbeat thread) with each key this replica newly holds, before it acts on it."""
        self._listeners.append(listener)

    # -- the heartbeat ---------------------------------------------------------------------
    def tick(self) -> None:
        """One heartbeat: announce liveness, renew, shed surplus, take a fair share."""
        started = time.monotonic()
        deadline = started + self.ttl * (1 - SAFETY)
        with self._lock:
            keys = set(self._keys)
        self.leases.acquire([f"replica:{self.replica_id}"], self.ttl)
        renewed = set(self.leases.renew_held("detector:", self.ttl))
        live = self.leases.live("")
        replicas = max(1, sum(1 for name, _ in live if name.startswith("replica:")))
        target = math.ceil(len(keys) / replicas)
        # Leases on keys this replica no longer has (a monitor deleted) are given back.
        surplus = sorted(renewed - keys)
        mine = sorted(renewed & keys)
        if len(mine) > target:
            surplus += mine[target:]
            mine = mine[:target]
        if surplus:
            with self._lock:  # stop acting on them before anyone else may take them
                for key in surplus:
                    self._held.pop(key, None)
            self.leases.release(surplus)
        taken = {name for name, _ in live}
        free = [k for k in keys if k not in taken and k not in mine]
        self._rng.shuffle(free)
        new: list[str] = []
        if len(mine) < target and free:
            new = self.leases.acquire(free[: target - len(mine)], self.ttl)
        for key in new:
            # Before this replica acts on the key (its state may have moved on elsewhere).
            log.info("coordination: %s now runs %s", self.replica_id, key)
            for listener in self._listeners:
                try:
                    listener(key)
                except Exception:
                    log.exception("coordination listener failed on %s", key)
        with self._lock:
            self._held = {k: deadline for k in (*mine, *new)}

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.tick)
            except Exception as exc:
                # The database is away: what we held lapses by its deadline; keep trying.
                log.warning("coordination: heartbeat failed (%s); retrying", exc)
            await asyncio.sleep(self.heartbeat)

    async def start(self) -> None:
        await asyncio.to_thread(self.tick)
        self._task = asyncio.create_task(self._run(), name="coordination")

    async def stop(self) -> None:
        await stop_task(self._task)
        self._task = None
        with self._lock:
            held, self._held = list(self._held), {}
        # Hand the work over now instead of after the lease expires (a rolling restart).
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.leases.release, [*held, f"replica:{self.replica_id}"])
        self.leases.close()
        self.claims.leases.close()


class MessageClaims:
    """Claims on outbox messages, so each is attempted by one replica at a time."""

    def __init__(self, store: PostgresStore, holder: str) -> None:
        self.store = store
        self.holder = holder
        self.leases = Leases(store, holder)

    def claim(self, collection: str, msg_id: str, ttl: float) -> tuple[bool, dict[str, Any] | None]:
        """(claimed, the stored message). Not claimed when another replica holds it, is
        writing it right now, or it is no longer pending (then the stored message says why)."""

        def claim(con: psycopg.Connection[Any]) -> tuple[bool, dict[str, Any] | None]:
            with con.transaction():
                row = con.execute(
                    "SELECT body FROM docs WHERE collection = %s AND id = %s FOR UPDATE SKIP LOCKED",
                    [collection, msg_id],
                ).fetchone()
                if row is None:
                    return False, None
                doc = json.loads(row[0])
                if doc.get("state") != "pending":
                    return False, doc
                got = con.execute(
                    "INSERT INTO mlvigil_leases (name, holder, expires_at, acquired_at)"
                    f" VALUES (%s, %s, {_NOW} + %s, {_NOW}) ON CONFLICT (name) DO UPDATE"
                    " SET holder = excluded.holder, expires_at = excluded.expires_at,"
                    " acquired_at = excluded.acquired_at"
                    f" WHERE mlvigil_leases.holder = excluded.holder OR mlvigil_leases.expires_at < {_NOW}"
                    " RETURNING name",
                    [f"outbox:{collection}:{msg_id}", self.leases.holder, ttl],
                ).fetchone()
                return got is not None, doc

        result: tuple[bool, dict[str, Any] | None] = self.leases._run(claim)
        return result

    def release(self, collection: str, msg_id: str) -> None:
        self.leases.release([f"outbox:{collection}:{msg_id}"])


def message_claims(store: Store) -> MessageClaims | None:
    """The outbox claims of ``store``'s replica when the store is shared; None when embedded."""
    coordinator: Coordinator | None = getattr(store, "coordinator", None)
    return coordinator.claims if coordinator is not None else None
