"""Alertmanager API v2: every alert as it fires and resolves, and the firing set re-sent."""

from __future__ import annotations

from alerts.config import AlertmanagerReceiver
from alerts.receivers.base import Receiver, SessionOf, post
from mlvigil.core.config import Secret
from mlvigil.core.outbox import Message, Outcome, RetryPolicy, Sender
from mlvigil.core.signing import dumps


class AlertmanagerIntegration(Receiver):
    """One outbox target per Alertmanager (``<name>#<i>``): an HA pair hears every alert."""

    kind = "alertmanager"
    grouped = False

    def __init__(
        self, name: str, cfg: AlertmanagerReceiver, retry: RetryPolicy, session_of: SessionOf
    ) -> None:
        super().__init__(name, retry, session_of)
        self.cfg = cfg
        self.resend_interval = float(cfg.resend_interval)
        self.targets = [f"{name}#{i}" for i in range(len(cfg.urls))]

    def senders(self) -> dict[str, Sender]:
        return {
            target: _sender(self.session_of, url, self.cfg.bearer_token)
            for target, url in zip(self.targets, self.cfg.urls, strict=True)
        }


def _sender(session_of: SessionOf, url: str, token: Secret | None) -> Sender:
    endpoint = url.rstrip("/") + "/api/v2/alerts"

    async def send(msg: Message) -> Outcome:
        headers = {"content-type": "application/json"}
        if token is not None and (value := token.resolve()):
            headers["authorization"] = f"Bearer {value}"
        return await post(session_of(), endpoint, dumps(msg.payload["alerts"]), headers, endpoint)

    return send
