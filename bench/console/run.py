"""Console benchmark: pages stay fast on a big store.

Fills a store with 10,000 findings and one training run of 64 ranks x 10,000 steps (640,000
step rows), starts the real service on it and times the console's pages over HTTP (server
render and transfer) and, when Chromium and chromedriver are installed, in headless Chromium
(navigation start to the load event: parse, layout and the SVG drawn). Bound: 1 s per page.
Run: ``bash scripts/bench.sh console [--ranks 64 --steps 10000 --findings 10000]``.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

from mlvigil.app.demo.supervise import ServiceProcess
from mlvigil.core.findings import KINDS, Finding, Severity, State
from mlvigil.core.records import RecordBatch
from mlvigil.core.store.duckdb import DuckDBStore

BOUND_S = 1.0
RUN_ID = "bench-run"
REPEATS = 5


def fill(data: Path, n_findings: int, ranks: int, steps: int) -> str:
    """The store's content; returns the id of the run's straggler finding."""
    rng = random.Random(1)
    store = DuckDBStore(data)
    now = time.time()
    t0 = now - steps * 1.0
    chunk = 2500
    for first in range(0, steps, chunk):
        # Columns filled directly: every value is valid by construction, and 640,000 checked
        # ``add`` calls would take longer than the benchmark itself.
        batch = RecordBatch()
        cols = batch.table("training_steps")
        for step in range(first, min(steps, first + chunk)):
            for rank in range(ranks):
                slow = 1.3 if rank == 17 and step >= steps // 2 else 1.0
                row = {
                    "ts": t0 + step,
                    "service": "trainer",
                    "run_id": RUN_ID,
                    "step": step,
                    "rank": rank,
                    "world_size": ranks,
                    "gpu_uuid": f"GPU-bench-{rank:04d}",
                    "step_time_s": 1.0 * slow + rng.gauss(0, 0.02),
                    "loss": 3.0 * 0.9997**step + rng.gauss(0, 0.01),
                    "comm_s": 0.1,
                }
                for name, column in cols.items():
                    column.append(row.get(name))
        store.append(batch)
    findings = []
    for i in range(n_findings):
        kind = KINDS[i % len(KINDS)]
        findings.append(
            Finding(
                kind=kind,
                severity=Severity(("info", "warning", "critical")[i % 3]),
                subject={"service": f"svc-{i % 50}", "model": f"model-{i % 20}", "run_id": f"run-{i % 30}"},
                summary=f"bench finding {i} of kind {kind}",
                evidence={"statistic": rng.random(), "p_value": rng.random() / 100, "threshold": 0.05},
                key=str(i),
                state=State.FIRING if i % 4 else State.RESOLVED,
                started_at=now - 86400 + i,
                updated_at=now - 3600 + i * 0.3,
                resolved_at=None if i % 4 else now - 60,
            )
        )
    straggler = Finding(
        kind="straggler",
        severity=Severity.WARNING,
        subject={"run_id": RUN_ID, "rank": "17"},
        summary=f"Rank 17 of run {RUN_ID} computed 30% slower than the median rank",
        evidence={"since_step": steps // 2, "peak_relative_score": 1.3, "relative_score": 1.3},
        window_start=t0 + steps // 2,
        window_end=now,
        started_at=now - steps // 2,
        updated_at=now,
    )
    store.upsert_findings([*findings, straggler])
    store.close()
    return straggler.id


def http_times(url: str) -> tuple[list[float], int]:
    times, size = [], 0
    for _ in range(REPEATS):
        t = time.perf_counter()
        with urllib.request.urlopen(url, timeout=30) as resp:
            size = len(resp.read())
            assert resp.status == 200, (url, resp.status)
        times.append(time.perf_counter() - t)
    return times, size


def browser_times(urls: dict[str, str]) -> dict[str, list[float]] | str:
    try:
        from selenium import webdriver
    except ImportError:
        return "selenium not installed (pip install -e '.[test]')"
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_bin = shutil.which("chromedriver") or "/usr/lib/chromium/chromedriver"
    if chromium is None or not Path(driver_bin).exists():
        return "chromium / chromedriver not installed (apt-get install chromium chromium-driver)"
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=driver_bin))
    out: dict[str, list[float]] = {}
    try:
        for name, url in urls.items():
            out[name] = []
            for _ in range(REPEATS):
                driver.get(url)
                ms = driver.execute_script(
                    "const t = performance.getEntriesByType('navigation')[0];"
                    " return t.loadEventEnd - t.startTime;"
                )
                out[name].append(float(ms) / 1000.0)
    finally:
        driver.quit()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--findings", type=int, default=10_000)
    ap.add_argument("--ranks", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10_000)
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="mlvigil-bench-console-"))
    try:
        t = time.perf_counter()
        straggler_id = fill(tmp / "data", args.findings, args.ranks, args.steps)
        print(
            f"store: {args.findings:,} findings, run {RUN_ID} of {args.ranks} ranks x {args.steps:,} steps"
            f" ({args.ranks * args.steps:,} step rows), filled in {time.perf_counter() - t:.1f} s",
            flush=True,
        )
        svc = ServiceProcess(tmp / "data", {"detectors": {"interval": "1h"}}).start()
        try:
            last_page = max(1, min(args.findings // 50, 200))
            pages = {
                "findings list, page 1": "/ui/findings",
                f"findings list, last page ({last_page})": f"/ui/findings?page={last_page}",
                "findings list, kind + label filter": "/ui/findings?kind=straggler&label=model%3Dmodel-3",
                f"training run ({args.ranks} x {args.steps:,})": f"/ui/runs/{RUN_ID}",
                "straggler finding of that run": f"/ui/findings/{straggler_id}",
                "training runs list": "/ui/runs",
                "drift monitors": "/ui/monitors",
            }
            urls = {name: svc.api + path for name, path in pages.items()}
            for url in urls.values():  # warm: the first query plans and caches
                http_times(url)
            print(f"\n{'page':<44} {'server+transfer (median / max)':>32} {'bytes':>10}")
            worst = 0.0  # the slowest page's median
            for name, url in urls.items():
                times, size = http_times(url)
                worst = max(worst, statistics.median(times))
                med, top = statistics.median(times) * 1000, max(times) * 1000
                print(f"{name:<44} {med:>14.0f} ms / {top:>6.0f} ms {size:>10,}")
            browser = browser_times(urls)
            if isinstance(browser, str):
                print(f"\nin the browser: skipped, {browser}")
            else:
                print(f"\n{'page':<44} {'headless Chromium, load event (median / max)':>46}")
                for name, times in browser.items():
                    worst = max(worst, statistics.median(times))
                    med, top = statistics.median(times) * 1000, max(times) * 1000
                    print(f"{name:<44} {med:>28.0f} ms / {top:>6.0f} ms")
        finally:
            svc.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    verdict = "within" if worst < BOUND_S else "OVER"
    load = os.getloadavg()[0]
    print(
        f"\nslowest page (median): {worst * 1000:.0f} ms, {verdict} the {BOUND_S:.0f} s bound"
        f" (load average {load:.1f} on {os.cpu_count()} CPUs)"
    )
    return 0 if worst < BOUND_S else 1
