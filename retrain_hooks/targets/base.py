"""The ``RetrainTarget`` interface: submit a run idempotently, preview it, follow its state.

Idempotency rests on the run's deterministic name (``mlvigil-<trigger id>``), so a retry after
a crash between "sent" and "recorded as sent" never starts a second run; each target module
says how its system de-duplicates on that name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import aiohttp

from mlvigil.core.config import Secret
from mlvigil.core.outbox import Message, Outcome
from retrain_hooks.config import KFP_IN_CLUSTER_TOKEN, SA_TOKEN
from retrain_hooks.trigger import RunRequest, Trigger

SessionOf = Callable[[], aiohttp.ClientSession]


class RetrainTarget(ABC):
    """One configured retraining target (a pipeline system or a webhook)."""

    #: The config key of this target type (``kfp``, ``argo``, ``webhook``).
    kind: ClassVar[str]
    #: Whether the run's state is followed after submission (else it counts as succeeded).
    followed: ClassVar[bool] = True

    def __init__(self, name: str, session_of: SessionOf) -> None:
        self.name = name
        self.session_of = session_of

    @abstractmethod
    async def submit(self, msg: Message) -> Outcome:
        """Start the run of one outbox message (the outbox's sender for this target)."""

    @abstractmethod
    def preview(self, trigger: Trigger) -> dict[str, Any]:
        """The request submitting ``trigger`` would send: ``{"method", "url", "body"}``."""

    async def state(self, trigger: Trigger) -> tuple[str, str] | None:
        """(trigger status, the target's own word) of a started run; None when unknown now."""
        return None

    @staticmethod
    def request_of(msg: Message) -> RunRequest:
        return RunRequest.from_payload(msg.payload)


def bearer(
    token: Secret | None, in_cluster: bool, token_files: tuple[Any, ...] = (SA_TOKEN,)
) -> dict[str, str]:
    """The authorization header: the configured token, else the pod's projected token."""
    value = token.resolve() if token else None
    if value is None and in_cluster:
        for path in token_files:
            if path.exists():
                value = path.read_text().strip()
                break
    return {"authorization": f"Bearer {value}"} if value else {}


KFP_TOKEN_FILES = (KFP_IN_CLUSTER_TOKEN, SA_TOKEN)


def failed(where: str, status: int, text: str, retry_after: str | None = None) -> Outcome:
    outcome = Outcome.from_http(status, text, retry_after)
    outcome.error = f"{where}: HTTP {status}: {text[:200]}"
    return outcome


def connection_failed(where: str, exc: BaseException) -> Outcome:
    # Only the exception's type: its text may carry a URL with credentials.
    return Outcome(ok=False, error=f"{where}: connection failed: {type(exc).__name__}")
