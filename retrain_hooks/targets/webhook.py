"""A signed webhook (Standard Webhooks): the run name in the body, the trigger id as
``webhook-id``. Not followed: delivered counts as succeeded."""

from __future__ import annotations

from typing import Any

import aiohttp

from mlvigil.core.outbox import Message, Outcome
from mlvigil.core.signing import dumps, webhook_headers
from retrain_hooks.config import WebhookTarget
from retrain_hooks.targets.base import RetrainTarget, SessionOf, connection_failed, failed
from retrain_hooks.trigger import Trigger


class WebhookRetrainTarget(RetrainTarget):
    kind = "webhook"
    followed = False

    def __init__(self, name: str, cfg: WebhookTarget, session_of: SessionOf) -> None:
        super().__init__(name, session_of)
        self.cfg = cfg

    async def submit(self, msg: Message) -> Outcome:
        body = dumps(msg.payload)
        headers = webhook_headers(msg.id, body, self.cfg.secret.resolve() if self.cfg.secret else None)
        try:
            async with self.session_of().post(self.cfg.url, data=body, headers=headers) as resp:
                text = await resp.text()
                if resp.status >= 300:
                    return failed("retrain webhook", resp.status, text, resp.headers.get("Retry-After"))
                return Outcome(
                    ok=True, status=resp.status, result={"run_name": self.request_of(msg).run_name}
                )
        except (aiohttp.ClientError, OSError) as exc:
            return connection_failed("webhook", exc)

    def preview(self, trigger: Trigger) -> dict[str, Any]:
        return {"method": "POST", "url": self.cfg.url, "body": {"run_name": trigger.run_name}}
