"""Standard Webhooks signatures (https://www.standardwebhooks.com/): HMAC-SHA256 over
``{webhook-id}.{webhook-timestamp}.{body}``, sent as ``webhook-signature: v1,<base64>``.

Shared by alert webhooks and the retraining webhook target, with the body they sign
(``dumps``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any


def dumps(payload: Any) -> bytes:
    """The JSON bytes sent (compact, sorted: the same message signs the same way).

    >>> dumps({"b": 1, "a": [1, 2]})
    b'{"a":[1,2],"b":1}'
    """
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


def signing_key(secret: str) -> bytes:
    """The key bytes: ``whsec_`` + base64 as the spec writes it, else the secret's UTF-8 bytes."""
    if secret.startswith("whsec_"):
        return base64.b64decode(secret[len("whsec_") :])
    return secret.encode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(signing_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def webhook_headers(msg_id: str, body: bytes, secret: str | None, now: float | None = None) -> dict[str, str]:
    """Headers of one delivery attempt; the timestamp is the attempt's, the id the message's."""
    ts = int(time.time() if now is None else now)
    headers = {"content-type": "application/json", "webhook-id": msg_id, "webhook-timestamp": str(ts)}
    if secret:
        headers["webhook-signature"] = sign(secret, msg_id, ts, body)
    return headers
