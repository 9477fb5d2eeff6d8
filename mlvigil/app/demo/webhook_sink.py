"""A local webhook receiver that records what it is sent (the demo's alert sink, and tests').

It verifies Standard Webhooks signatures when given the secret, answers 200, and keeps each
delivery (path, headers, JSON body) in order; ``wait_for`` blocks until N have arrived.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: Any
    signature_ok: bool | None


def standard_webhook_signature(secret: str, msg_id: str, timestamp: str, body: bytes) -> str:
    key = base64.b64decode(secret[len("whsec_") :]) if secret.startswith("whsec_") else secret.encode()
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


class WebhookSink:
    def __init__(self, secret: str | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.secret = secret
        self.deliveries: list[Delivery] = []
        self._cond = threading.Condition()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                ok: bool | None = None
                if sink.secret is not None:
                    want = standard_webhook_signature(
                        sink.secret, headers.get("webhook-id", ""), headers.get("webhook-timestamp", ""), raw
                    )
                    ok = want in headers.get("webhook-signature", "").split()
                try:
                    body: Any = json.loads(raw)
                except json.JSONDecodeError:
                    body = raw.decode(errors="replace")
                with sink._cond:
                    sink.deliveries.append(Delivery(self.path, headers, body, ok))
                    sink._cond.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="webhook-sink")

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> WebhookSink:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def wait_for(self, n: int, timeout: float = 30.0) -> list[Delivery]:
        """The first ``n`` deliveries, waiting up to ``timeout`` seconds for them."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.deliveries) >= n, timeout):
                raise TimeoutError(f"{len(self.deliveries)} of {n} webhook deliveries within {timeout}s")
            return list(self.deliveries[:n])
