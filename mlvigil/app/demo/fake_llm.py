"""A small OpenAI-compatible chat server for the demo and tests (no model, deterministic).

Answers ``POST /v1/chat/completions`` (plain and streaming, with usage) and
``POST /v1/embeddings``. Token counts are whitespace word counts, so a caller controls them
through its prompt; ``max_tokens`` truncates the answer with finish_reason "length".
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def _answer(messages: list[dict[str, Any]], max_tokens: int | None) -> tuple[str, str, int, int]:
    prompt = " ".join(str(m.get("content", "")) for m in messages)
    prompt_tokens = max(1, len(prompt.split()))
    words = ("the answer is " + " ".join(reversed(prompt.split()))).split()
    finish = "stop"
    if max_tokens is not None and len(words) > max_tokens:
        words, finish = words[:max_tokens], "length"
    return " ".join(words), finish, prompt_tokens, len(words)


class _Handler(BaseHTTPRequestHandler):
    server_version = "fake-llm/1"
    latency_s = 0.0

    def log_message(self, format: str, *args: Any) -> None:  # silence per-request logs
        pass

    def _json(self, status: int, doc: dict[str, Any]) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        try:
            req = json.loads(self.rfile.read(length) or b"{}")
        except json.JSONDecodeError:
            self._json(400, {"error": {"message": "invalid JSON", "type": "invalid_request_error"}})
            return
        if self.path.rstrip("/").endswith("/embeddings"):
            inputs = req.get("input")
            items = inputs if isinstance(inputs, list) else [inputs]
            data = [
                {"object": "embedding", "index": i, "embedding": [float(len(str(t))) / 100.0, 0.5, -0.5]}
                for i, t in enumerate(items)
            ]
            n = sum(len(str(t).split()) for t in items)
            self._json(
                200,
                {
                    "object": "list",
                    "data": data,
                    "model": req.get("model"),
                    "usage": {"prompt_tokens": n, "total_tokens": n},
                },
            )
            return
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._json(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})
            return
        model = req.get("model", "fake-model")
        if str(model).startswith("error"):
            self._json(500, {"error": {"message": "upstream failure", "type": "server_error"}})
            return
        text, finish, pt, ct = _answer(req.get("messages", []), req.get("max_tokens"))
        delay = float(self.server.latency_s)  # type: ignore[attr-defined]
        created = int(time.time())
        usage = {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}
        if not req.get("stream"):
            if delay:
                time.sleep(delay)  # simulated model latency
            self._json(
                200,
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": finish,
                        }
                    ],
                    "usage": usage,
                },
            )
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        words = text.split()
        for i, word in enumerate(words):
            if delay:
                time.sleep(delay / max(1, len(words)))  # simulated token latency
            chunk = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "delta": {"content": word + " ", **({"role": "assistant"} if i == 0 else {})},
                        "finish_reason": None,
                    }
                ],
            }
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        last: dict[str, Any] = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": {}, "finish_reason": finish}],
        }
        if (req.get("stream_options") or {}).get("include_usage"):
            last["usage"] = usage
        self.wfile.write(f"data: {json.dumps(last)}\n\ndata: [DONE]\n\n".encode())


class FakeLLM:
    """Runs the server on a loopback port in a background thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, latency_s: float = 0.0) -> None:
        self._server = ThreadingHTTPServer((host, port), _Handler)
        self._server.latency_s = latency_s  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="fake-llm")

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def set_latency(self, seconds: float) -> None:
        self._server.latency_s = seconds  # type: ignore[attr-defined]

    def start(self) -> FakeLLM:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
