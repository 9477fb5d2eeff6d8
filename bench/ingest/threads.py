"""bench/ingest, the server's CPU by thread: where each 1000-span request's CPU goes in the
real service (``mlvigil serve`` in a subprocess), over OTLP/HTTP from ``--clients`` senders
on kept-alive connections.

    bash scripts/bench.sh ingest --by-thread [--repeat 15] [--clients 4]

Sends the 20 requests of bench/ingest/spans.py ``--repeat`` times, then prints, per thread
of the server (the service names its threads for the OS: mlvigil/core/os_thread.py), the CPU
in ms per request at three moments: the last acknowledgement, the hot loader pass done
(llm_calls in DuckDB) and both passes done (the raw spans' files too); and the loaders'
group sizes (``mlvigil_wal_loader_group_records``). Threads of the same name are summed
(the decode workers: ``ingest-decode_0``, ``_1``)."""

from __future__ import annotations

import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from bench.ingest.senders import http_sender, send_all
from bench.ingest.spans import llm_request

SPANS_PER_REQUEST = 1000


def thread_cpu_s(pid: int) -> dict[int, tuple[str, float]]:
    """Each thread of ``pid``: (its OS name, user + system CPU seconds)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        out[int(task.name)] = (name, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
    return out


def by_thread(repeat: int, clients: int) -> None:
    """Runs the service, sends the 20 requests ``repeat`` times from ``clients`` senders,
    prints the table of the module's docstring."""
    from tests.harness import ServiceHandle

    bodies = [llm_request(SPANS_PER_REQUEST, seed=i) for i in range(20)]
    n = len(bodies) * repeat
    with tempfile.TemporaryDirectory() as tmp:
        svc = ServiceHandle(Path(tmp) / "data", {"ingest": {"max_requests_in_flight": 64}}, None).start()
        assert svc.proc is not None
        pid = svc.proc.pid
        try:
            send = http_sender(svc)

            def loaded(tables: tuple[str, ...], rows: int) -> bool:
                stats = svc.stats()
                return min(stats.get(t, 0) for t in tables) >= rows

            send(bodies[0])  # warm-up: one-time imports
            svc.wait_for(lambda: loaded(("llm_calls", "spans"), SPANS_PER_REQUEST), timeout=60)
            before, wall0 = thread_cpu_s(pid), time.perf_counter()
            send_all([b for _ in range(repeat) for b in bodies], clients, send)
            acked, wall = thread_cpu_s(pid), time.perf_counter() - wall0
            everything = (n + 1) * SPANS_PER_REQUEST
            svc.wait_for(lambda: loaded(("llm_calls",), everything), timeout=300)
            hot = thread_cpu_s(pid)
            svc.wait_for(lambda: loaded(("llm_calls", "spans"), everything), timeout=300)
            done = thread_cpu_s(pid)
            _, _, metrics = svc.request("GET", "/metrics")
        finally:
            svc.stop()
    rows: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for tid, (name, _) in done.items():
        key = name.rstrip("0123456789").rstrip("_") or name  # the decode workers together
        if tid == pid:
            key = "main (event loop)"
        start = before.get(tid, (name, 0.0))[1]
        for i, moment in enumerate((acked, hot, done)):
            rows[key][i] += moment.get(tid, (name, start))[1] - start
    print(f"{n} requests x {SPANS_PER_REQUEST} LLM spans over OTLP/HTTP, {clients} clients")
    head = " ".join(f"{h:>11s}" for h in ("to the ack", "hot loaded", "all loaded"))
    print(f"  {'thread':28s} {head}  (CPU ms per request)")
    totals = [0.0, 0.0, 0.0]
    for name, cpu_s in sorted(rows.items(), key=lambda kv: -kv[1][2]):
        totals = [t + c for t, c in zip(totals, cpu_s, strict=True)]
        if cpu_s[2] * 1000 / n >= 0.01:
            print(f"  {name:28s} " + " ".join(f"{c * 1000 / n:11.2f}" for c in cpu_s))
    print(f"  {'all threads':28s} " + " ".join(f"{c * 1000 / n:11.2f}" for c in totals))
    rates = ", ".join(f"{n * SPANS_PER_REQUEST / c:,.0f}" for c in totals)
    print(f"  spans per server CPU-second (ack, hot, all): {rates}")
    print(f"  {n * SPANS_PER_REQUEST / wall:,.0f} spans/s of wall time to the last acknowledgement")
    for line in metrics.decode().splitlines():
        if line.startswith(
            ("mlvigil_wal_loader_group_records_count", "mlvigil_wal_loader_group_records_sum")
        ):
            print(f"  {line}")
