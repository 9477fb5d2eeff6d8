"""Alertmanager-format webhooks, signed as Standard Webhooks when a secret is set."""

from __future__ import annotations

from alerts.config import WebhookReceiver
from alerts.receivers.base import Receiver, SessionOf, post
from mlvigil.core.outbox import Message, Outcome, RetryPolicy, Sender
from mlvigil.core.signing import dumps, webhook_headers


class WebhookIntegration(Receiver):
    kind = "webhook"

    def __init__(self, name: str, cfg: WebhookReceiver, retry: RetryPolicy, session_of: SessionOf) -> None:
        super().__init__(name, retry, session_of)
        self.cfg = cfg
        self.send_resolved = cfg.send_resolved
        self.max_alerts = cfg.max_alerts

    def senders(self) -> dict[str, Sender]:
        url, secret, session_of = self.cfg.url, self.cfg.secret, self.session_of

        async def send(msg: Message) -> Outcome:
            body = dumps(msg.payload)
            # The message id is the webhook-id: receivers drop a repeated delivery by it.
            headers = webhook_headers(msg.id, body, secret.resolve() if secret else None)
            return await post(session_of(), url, body, headers, url)

        return {self.name: send}
