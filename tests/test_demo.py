"""`mlvigil demo --short`: every story beat produces its finding, alert and trigger."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BEATS = ("data drift", "llm drift", "straggler", "gpu slowdown", "xid", "carbon", "alerts", "retraining")


def test_demo_short_tells_the_whole_story(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-m", "mlvigil", "demo", "--short", "--random-ports", "--data-dir", str(tmp_path / "demo")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240,
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-4000:] + proc.stderr[-4000:]
    for beat in BEATS:
        assert f"[ok ] {beat}" in out, f"story beat {beat!r} missing:\n{out[-3000:]}"
    assert "signature verified" in out and "SIGNATURE INVALID" not in out
    assert "degraded with GPU fault" in out, "the straggler must be attributed to its throttling GPU"
    assert "XID 79" in out
    # The demo kept its store where asked: the service wrote records there.
    assert (tmp_path / "demo" / "data" / "mlvigil.duckdb").exists()
