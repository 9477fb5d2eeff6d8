"""Slack incoming webhooks: one message per group notification."""

from __future__ import annotations

from typing import Any

from alerts.config import SlackReceiver
from alerts.payloads import Alert, slack_message
from alerts.receivers.base import Receiver, SessionOf, post
from mlvigil.core.outbox import Message, Outcome, RetryPolicy, Sender
from mlvigil.core.signing import dumps


class SlackIntegration(Receiver):
    kind = "slack"

    def __init__(self, name: str, cfg: SlackReceiver, retry: RetryPolicy, session_of: SessionOf) -> None:
        super().__init__(name, retry, session_of)
        self.cfg = cfg
        self.send_resolved = cfg.send_resolved

    def encode(self, payload: dict[str, Any], alerts: list[Alert]) -> dict[str, Any]:
        return slack_message(payload, alerts)

    def senders(self) -> dict[str, Sender]:
        webhook_url, session_of = self.cfg.webhook_url, self.session_of

        async def send(msg: Message) -> Outcome:
            url = webhook_url.resolve()  # a credential: read per attempt, never logged
            if not url:
                return Outcome(ok=False, retry=True, error="slack webhook_url secret is not set")
            headers = {"content-type": "application/json"}
            return await post(session_of(), url, dumps(msg.payload), headers, "slack webhook")

        return {self.name: send}
