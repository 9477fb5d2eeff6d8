"""The ``Receiver`` interface: one alert integration, its outbox targets and their senders.

A receiver is built from its config section and the service's session getter. It names the
outbox targets it delivers to (:meth:`Receiver.senders`), and, if it takes grouped
notifications, turns one (Alertmanager webhook-format) group payload into its own body
(:meth:`Receiver.encode`). Secrets are read at send time and never logged.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import aiohttp

from alerts.payloads import Alert
from mlvigil.core.outbox import Outcome, RetryPolicy, Sender

SessionOf = Callable[[], aiohttp.ClientSession]


class Receiver(ABC):
    """One configured alert integration.

    ``grouped`` receivers get grouped notifications (routing, grouping, mutes and the
    notification log apply); the others (Alertmanager) get each alert as it fires and
    resolves and are re-sent the firing set, leaving grouping to the receiving side.
    """

    #: The config key of this integration (``alertmanager``, ``webhook``, ``slack``).
    kind: ClassVar[str]
    grouped: ClassVar[bool] = True

    def __init__(self, name: str, retry: RetryPolicy, session_of: SessionOf) -> None:
        self.name = name
        self.retry = retry
        self.session_of = session_of

    @abstractmethod
    def senders(self) -> dict[str, Sender]:
        """Outbox target name -> sender, one per endpoint."""

    #: Grouped receivers: whether resolved alerts are notified.
    send_resolved: bool = True
    #: Grouped receivers: most alerts in one notification (0: all).
    max_alerts: int = 0

    def encode(self, payload: dict[str, Any], alerts: list[Alert]) -> dict[str, Any]:
        """The body sent for one group notification (default: the webhook payload itself)."""
        return payload


def connection_error(exc: BaseException) -> Outcome:
    # Only the exception's type: its text may carry a URL, and Slack's URL is a credential.
    return Outcome(ok=False, retry=True, error=f"connection failed: {type(exc).__name__}")


async def post(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str], safe_url: str
) -> Outcome:
    """POST one body; the error text names ``safe_url``, never ``url`` (it may be a secret)."""
    try:
        async with session.post(url, data=body, headers=headers) as resp:
            text = await resp.text(errors="replace")
            outcome = Outcome.from_http(resp.status, text[:300], resp.headers.get("Retry-After"))
            if not outcome.ok:
                outcome.error = f"{safe_url}: HTTP {resp.status}: {text[:200]}"
            return outcome
    except (aiohttp.ClientError, OSError) as exc:
        return connection_error(exc)
