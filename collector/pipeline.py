"""The ingest pipeline: a bounded queue in front of one group-committing writer thread.

Receivers decode and normalise on the event loop, then ``submit`` the batch and await its
durable commit before acknowledging. The writer takes every batch waiting (up to a cap) and
commits them in one transaction, so commit cost is shared under load while each batch stays
all-or-nothing. The queue is bounded in items: when full, ``Overloaded`` is raised at once
and the receiver answers 429/UNAVAILABLE with Retry-After, so memory never grows unbounded.
A batch the store cannot take now (disk full) fails with ``StoreUnavailable``: nothing of it
was stored, and the receiver answers 503/UNAVAILABLE with Retry-After so the client retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from mlvigil.core.errors import Overloaded, ShuttingDown
from mlvigil.core.metrics import Telemetry
from mlvigil.core.os_thread import name_os_thread
from mlvigil.core.records import RecordBatch
from mlvigil.core.store import Store, StoreUnavailable

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    batch: RecordBatch
    items: int
    future: asyncio.Future[None]
    loop: asyncio.AbstractEventLoop


class IngestPipeline:
    name = "ingest"

    def __init__(
        self,
        store: Store,
        telemetry: Telemetry,
        *,
        max_items: int,
        retry_after: int = 1,
        max_group_batches: int = 256,
        max_group_rows: int = 100_000,
        on_committed: Callable[[RecordBatch], None] | None = None,
    ) -> None:
        self._store = store
        self._telemetry = telemetry
        self.max_items = max_items
        self.retry_after = retry_after
        self._max_group_batches = max_group_batches
        self._max_group_rows = max_group_rows
        # Called on the writer thread with each batch once it is durable (derived metrics).
        self._on_committed = on_committed
        self._queue: deque[_Pending] = deque()
        self._cond = threading.Condition()
        self._reserved = 0  # items queued or being committed
        self._closing = False
        self._thread: threading.Thread | None = None
        # Why the store refused the last group (None: the last commit worked).
        self.store_refusing: str | None = None
        telemetry.queue_capacity.set(max_items)

    @property
    def depth(self) -> int:
        return self._reserved

    def is_full(self) -> bool:
        return self._reserved >= self.max_items

    async def submit(self, batch: RecordBatch, items: int | None = None) -> None:
        """Queue ``batch`` and wait until it is durable. Raises Overloaded when full."""
        n = len(batch) if items is None else items
        if n == 0 and not batch.inference_merges:
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        with self._cond:
            if self._closing:
                raise ShuttingDown("service is shutting down")
            # A batch larger than the whole queue is still taken when the queue is empty.
            if self._reserved and self._reserved + n > self.max_items:
                raise Overloaded(self.retry_after)
            self._reserved += n
            self._queue.append(_Pending(batch, n, fut, loop))
            self._cond.notify()
        self._telemetry.queue_items.set(self._reserved)
        await asyncio.shield(fut)

    def _take_group(self) -> list[_Pending] | None:
        with self._cond:
            while not self._queue:
                if self._closing:
                    return None
                self._cond.wait()
            group: list[_Pending] = []
            rows = 0
            while self._queue and len(group) < self._max_group_batches and rows < self._max_group_rows:
                p = self._queue.popleft()
                group.append(p)
                rows += p.items
            return group

    def _run(self) -> None:
        name_os_thread()
        while (group := self._take_group()) is not None:
            try:
                self._commit(group)
            except Exception:
                # The writer thread must outlive any one group: if it died, every later
                # submit would wait forever. Fail whatever of the group is still waiting.
                log.exception("ingest writer: a group failed unexpectedly")
                for p in group:
                    with contextlib.suppress(RuntimeError):  # its loop may be closed
                        p.loop.call_soon_threadsafe(_resolve, p.future, ShuttingDown("ingest writer error"))

    def _commit(self, group: list[_Pending]) -> None:
        t0 = time.perf_counter()
        try:
            try:
                results = self._store.append_many([p.batch for p in group])
            except Exception as exc:  # a store failure fails the whole group
                results = [exc] * len(group)
        finally:
            # Release the room before acknowledging, so an acknowledged sender never finds
            # the queue still holding its own batch.
            with self._cond:
                self._reserved -= sum(p.items for p in group)
            self._telemetry.queue_items.set(self._reserved)
        self._telemetry.commit_duration.observe(time.perf_counter() - t0)
        self._note_store_state(results)
        for p, err in zip(group, results, strict=True):
            with contextlib.suppress(RuntimeError):  # the sender's loop is closed: nobody waits
                p.loop.call_soon_threadsafe(_resolve, p.future, err)
            if err is None:
                for table, n in p.batch.counts().items():
                    self._telemetry.records_written.labels(table=table).inc(n)
                if self._on_committed is not None:
                    try:
                        self._on_committed(p.batch)
                    except Exception:
                        log.exception("post-commit observer failed")

    def _note_store_state(self, results: list[BaseException | None]) -> None:
        """Log a store outage once when it starts and once when it ends, not per request."""
        refused = next((r for r in results if isinstance(r, StoreUnavailable)), None)
        if refused is not None and self.store_refusing is None:
            log.warning("ingest: the store refuses writes (answering 503 until it recovers): %s", refused)
        elif refused is None and self.store_refusing is not None:
            log.warning("ingest: the store accepts writes again")
        self.store_refusing = None if refused is None else refused.reason
        for r in results:
            if r is not None and not isinstance(r, StoreUnavailable):
                log.error("ingest: batch not stored: %s", r, exc_info=r)

    async def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ingest-writer", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Stop taking batches and commit everything already queued."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread:
            await asyncio.to_thread(self._thread.join)


def _resolve(fut: asyncio.Future[None], err: BaseException | None) -> None:
    if fut.done():
        return
    if err is None:
        fut.set_result(None)
    else:
        fut.set_exception(err)
