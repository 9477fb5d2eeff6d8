"""Mute stage: silences kept in the store; a muted alert is left out of group notifications."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mlvigil.core.matchers import Matcher, all_match, matcher_from_obj, parse_matcher
from mlvigil.core.store import Store

log = logging.getLogger(__name__)

MUTES = "alert_mutes"


@dataclass
class Mute:
    """One silence: alerts whose labels match every matcher are muted in ``[starts_at, ends_at)``.

    >>> m = Mute.from_dict({"id": "m1", "matchers": ['model="fraud"'], "starts_at": 10, "ends_at": 20})
    >>> m.active(15), m.active(20), m.to_dict()["matchers"]
    (True, False, ['model="fraud"'])
    """

    id: str
    matchers: list[Matcher]
    starts_at: float
    ends_at: float
    comment: str = ""
    created_by: str = ""

    def active(self, now: float) -> bool:
        return self.starts_at <= now < self.ends_at

    def to_dict(self, now: float | None = None) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id,
            "matchers": [str(m) for m in self.matchers],
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
            "comment": self.comment,
            "created_by": self.created_by,
        }
        if now is not None:
            d["active"] = self.active(now)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Mute:
        return cls(
            id=d["id"],
            matchers=[parse_matcher(m) for m in d["matchers"]],
            starts_at=float(d["starts_at"]),
            ends_at=float(d["ends_at"]),
            comment=d.get("comment", ""),
            created_by=d.get("created_by", ""),
        )


class Mutes:
    """The mutes of one service, mirrored from the store's ``alert_mutes`` collection."""

    def __init__(self, store: Store, clock: Callable[[], float], default_duration: float) -> None:
        self.store = store
        self._clock = clock
        self.default_duration = default_duration
        self._mutes: dict[str, Mute] = {}

    def restore(self) -> None:
        self._mutes = {}
        for doc in self.store.list_docs(MUTES).values():
            try:
                self._mutes[doc["id"]] = Mute.from_dict(doc)
            except (KeyError, ValueError):
                log.warning("ignoring unreadable mute %s", doc.get("id"))

    def muted(self, labels: dict[str, str], now: float) -> bool:
        return any(m.active(now) and all_match(m.matchers, labels) for m in list(self._mutes.values()))

    def add(
        self,
        matchers: list[Any],
        *,
        duration: float | None = None,
        ends_at: float | None = None,
        starts_at: float | None = None,
        comment: str = "",
        created_by: str = "",
    ) -> Mute:
        parsed = [matcher_from_obj(m) for m in matchers]
        if not parsed:
            raise ValueError("a mute needs at least one matcher")
        now = self._clock()
        start = now if starts_at is None else starts_at
        end = ends_at if ends_at is not None else start + (duration or self.default_duration)
        if end <= start:
            raise ValueError("a mute must end after it starts")
        mute = Mute(uuid.uuid4().hex, parsed, start, end, comment, created_by)
        self.store.put_doc(MUTES, mute.id, mute.to_dict())
        self._mutes[mute.id] = mute
        return mute

    def delete(self, mute_id: str) -> bool:
        found = self._mutes.pop(mute_id, None) is not None
        self.store.delete_doc(MUTES, mute_id)
        return found

    def listing(self, include_expired: bool = False) -> list[dict[str, Any]]:
        now = self._clock()
        return [
            m.to_dict(now)
            for m in sorted(self._mutes.values(), key=lambda m: m.starts_at)
            if include_expired or m.ends_at > now
        ]
