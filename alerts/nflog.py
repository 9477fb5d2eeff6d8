"""Notification log stage: what each group last said, so nothing is ever sent twice.

One stored document per group (collection ``alert_nflog``, as Alertmanager's nflog): the
fingerprints it last notified as firing, when, and a sequence number that makes the next
notification's id deterministic.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from mlvigil.core.store import Store

NFLOG = "alert_nflog"


def stable_hash(*parts: object) -> str:
    """A 32-hex-digit id from JSON-able parts (deterministic across restarts).

    >>> stable_hash("a", 1) == stable_hash("a", 1) != stable_hash("a", 2)
    True
    """
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


@dataclass
class NflogEntry:
    """What one group last notified.

    >>> e = NflogEntry.from_doc({"key": "g", "firing": ["f1"], "at": 5.0, "seq": 2, "receiver": "ops"})
    >>> e.firing, e.seq, e.to_doc() == {"key": "g", "firing": ["f1"], "at": 5.0, "seq": 2, "receiver": "ops"}
    (['f1'], 2, True)
    """

    key: str
    firing: list[str] = field(default_factory=list)
    at: float = 0.0
    seq: int = 0
    receiver: str = ""

    def to_doc(self) -> dict[str, Any]:
        return {
            "firing": self.firing,
            "at": self.at,
            "seq": self.seq,
            "receiver": self.receiver,
            "key": self.key,
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> NflogEntry:
        return cls(
            key=str(doc["key"]),
            firing=list(doc.get("firing", [])),
            at=float(doc.get("at", 0.0)),
            seq=int(doc.get("seq", 0)),
            receiver=str(doc.get("receiver", "")),
        )


class NotificationLog:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.entries: dict[str, NflogEntry] = {}

    def restore(self) -> None:
        self.entries = {
            doc["key"]: NflogEntry.from_doc(doc)
            for doc in self.store.list_docs(NFLOG).values()
            if "key" in doc
        }

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def get(self, key: str) -> NflogEntry:
        return self.entries.get(key) or NflogEntry(key)

    def reload(self, key: str) -> NflogEntry:
        """Read one group's entry back from the store (replicas share it); returns it."""
        doc = self.store.get_doc(NFLOG, stable_hash(key))
        if doc is not None and "key" in doc:
            self.entries[key] = NflogEntry.from_doc(doc)
        return self.get(key)

    def put(self, entry: NflogEntry) -> None:
        self.entries[entry.key] = entry
        self.store.put_doc(NFLOG, stable_hash(entry.key), entry.to_doc())
