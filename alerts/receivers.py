"""Senders for the outbox: one per receiver endpoint. Each POSTs a payload recorded earlier and
turns the HTTP answer into an Outcome; secrets are read at send time and never logged."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import aiohttp

from alerts.signing import webhook_headers
from mlvigil.config import Secret
from mlvigil.outbox import Outcome, Sender


def _dumps(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


def _connection_error(exc: BaseException) -> Outcome:
    # Only the exception's type: its text may carry a URL, and Slack's URL is a credential.
    return Outcome(ok=False, retry=True, error=f"connection failed: {type(exc).__name__}")


async def _post(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str], safe_url: str
) -> Outcome:
    try:
        async with session.post(url, data=body, headers=headers) as resp:
            text = await resp.text(errors="replace")
            outcome = Outcome.from_http(resp.status, text[:300], resp.headers.get("Retry-After"))
            if not outcome.ok:
                outcome.error = f"{safe_url}: HTTP {resp.status}: {text[:200]}"
            return outcome
    except (aiohttp.ClientError, OSError) as exc:
        return _connection_error(exc)


def alertmanager_sender(
    session_of: Callable[[], aiohttp.ClientSession], url: str, token: Secret | None
) -> Sender:
    endpoint = url.rstrip("/") + "/api/v2/alerts"

    async def send(doc: dict[str, Any]) -> Outcome:
        headers = {"content-type": "application/json"}
        if token is not None and (value := token.resolve()):
            headers["authorization"] = f"Bearer {value}"
        return await _post(session_of(), endpoint, _dumps(doc["payload"]["alerts"]), headers, endpoint)

    return send


def webhook_sender(
    session_of: Callable[[], aiohttp.ClientSession], url: str, secret: Secret | None
) -> Sender:
    async def send(doc: dict[str, Any]) -> Outcome:
        body = _dumps(doc["payload"])
        headers = webhook_headers(doc["id"], body, secret.resolve() if secret else None)
        return await _post(session_of(), url, body, headers, url)

    return send


def slack_sender(session_of: Callable[[], aiohttp.ClientSession], webhook_url: Secret) -> Sender:
    async def send(doc: dict[str, Any]) -> Outcome:
        url = webhook_url.resolve()
        if not url:
            return Outcome(ok=False, retry=True, error="slack webhook_url secret is not set")
        return await _post(
            session_of(), url, _dumps(doc["payload"]), {"content-type": "application/json"}, "slack webhook"
        )

    return send
