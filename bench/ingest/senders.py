"""How the ingest benchmarks send: OTLP/HTTP on one kept-alive connection per sender thread
(as OTLP/HTTP exporters keep theirs), and a list of requests spread over sender threads."""

from __future__ import annotations

import http.client
import threading
from collections.abc import Callable

from tests.harness import ServiceHandle


def http_sender(svc: ServiceHandle) -> Callable[[bytes], None]:
    """POSTs an OTLP/HTTP trace export to ``svc``, asserting 200; each calling thread on its
    own kept-alive connection."""
    conns = threading.local()
    host, port = svc.otlp_http.removeprefix("http://").rsplit(":", 1)

    def send(body: bytes) -> None:
        if not hasattr(conns, "http"):
            conns.http = http.client.HTTPConnection(host, int(port), timeout=60)
        headers = {"Content-Type": "application/x-protobuf"}
        if svc.token:
            headers["Authorization"] = f"Bearer {svc.token}"
        conns.http.request("POST", "/v1/traces", body, headers)
        reply = conns.http.getresponse()
        assert reply.status == 200, reply.read()
        reply.read()

    return send


def send_all(bodies: list[bytes], clients: int, send: Callable[[bytes], None]) -> None:
    """Sends every one of ``bodies`` through ``send`` from ``clients`` threads at once, each
    taking the next request as soon as its last was answered; returns when all are."""
    todo = list(bodies)
    lock = threading.Lock()

    def client() -> None:
        while True:
            with lock:
                if not todo:
                    return
                body = todo.pop()
            send(body)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
