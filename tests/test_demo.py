"""`mlvigil demo --short`: every story beat produces its finding, alert and trigger."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from tests.harness import REPO, SOURCE_PATH

BEATS = ("data drift", "llm drift", "straggler", "gpu slowdown", "xid", "carbon", "alerts", "retraining")


def _lines_until(proc: subprocess.Popen[str], marker: str, timeout: float) -> list[str]:
    """The demo's stdout lines up to and including the first one containing ``marker``."""
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        if line is None:
            break
        seen.append(line)
        if marker in line:
            return seen
    raise AssertionError(f"{marker!r} not printed within {timeout}s:\n{''.join(seen)[-4000:]}")


def test_demo_short_tells_the_whole_story_and_keeps_running(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=SOURCE_PATH)
    cmd = [sys.executable, "-m", "mlvigil", "demo", "--short", "--random-ports", "--keep-running"]
    proc = subprocess.Popen(
        [*cmd, "--data-dir", str(tmp_path / "demo")],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        out = "".join(_lines_until(proc, "  data ", timeout=240))
        for beat in BEATS:
            assert f"[ok ] {beat}" in out, f"story beat {beat!r} missing:\n{out[-3000:]}"
        assert "signature verified" in out and "SIGNATURE INVALID" not in out
        assert "degraded with GPU fault" in out, "the straggler must be attributed to its throttling GPU"
        assert "XID 79" in out
        # Plain words, and only the features that moved (age did not).
        drift = next(line for line in out.splitlines() if line.strip().startswith("Data drift on fraud"))
        assert "the input distribution moved away from the reference" in drift
        assert "amount" in drift and "age" not in drift
        # No terminal colour codes leak from the instrumented LLM app.
        assert "\x1b[" not in out
        assert "Traceback" not in out
        # With --keep-running the URLs printed are live.
        url = next(line.split()[1] for line in out.splitlines() if line.strip().startswith("findings "))
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert json.load(resp)["findings"]
        # The demo kept its store where asked: the service wrote records there.
        assert (tmp_path / "demo" / "data" / "mlvigil.duckdb").exists()
        proc.send_signal(signal.SIGINT)  # Ctrl-C: stops the service, exit 0
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_demo_says_why_the_service_did_not_start(tmp_path: Path) -> None:
    # codecarbon made unimportable: the demo's carbon budget cannot be set up.
    shim = tmp_path / "shim" / "codecarbon"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('codecarbon hidden by the test')\n")
    env = dict(os.environ, PYTHONPATH=f"{shim.parent}{os.pathsep}{SOURCE_PATH}")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlvigil",
            "demo",
            "--short",
            "--random-ports",
            "--data-dir",
            str(tmp_path / "d"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-3000:]
    assert "the service did not start" in proc.stderr
    assert "config: detectors.carbon: carbon budgets need codecarbon" in proc.stderr
    assert "Traceback" not in out and "in use" not in out
