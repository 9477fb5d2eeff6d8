"""The triggers of one service, mirrored from the store's ``retrain_triggers`` collection."""

from __future__ import annotations

import threading

from mlvigil.core.store import Store
from retrain_hooks.trigger import Trigger

TRIGGERS = "retrain_triggers"


class TriggerBook:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.lock = threading.RLock()
        self.triggers: dict[str, Trigger] = {
            tid: Trigger.from_doc(doc) for tid, doc in store.list_docs(TRIGGERS).items()
        }

    def get(self, tid: str, *, shared: bool = False) -> Trigger | None:
        """A trigger; with ``shared``, one another replica recorded is read from the store."""
        trigger = self.triggers.get(tid)
        if trigger is None and shared:
            doc = self.store.get_doc(TRIGGERS, tid)
            if doc is not None:
                trigger = self.triggers[tid] = Trigger.from_doc(doc)
        return trigger

    def set(self, trigger: Trigger, status: str, now: float, reason: str) -> None:
        """Move a trigger on (appending to its history) and store it."""
        trigger.set_status(status, now, reason)
        self.triggers[trigger.id] = trigger
        self.store.put_doc(TRIGGERS, trigger.id, trigger.to_doc())

    def values(self) -> list[Trigger]:
        return list(self.triggers.values())
