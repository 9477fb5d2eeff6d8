"""The producer distribution on its own: installed into an empty venv, it pulls none of the
server's dependencies, and a training script using it reports to a running service."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.harness import REPO, ServiceHandle

# What a job must not drag in: the server's storage, gRPC server, web server and SciPy.
SERVER_ONLY = ("duckdb", "grpcio", "aiohttp", "scipy", "mlvigil")

TRAINING_SCRIPT = textwrap.dedent(
    """
    import sys
    from mlvigil_producer.training import TrainingTelemetry, configure_otlp

    provider = configure_otlp(sys.argv[1], service_name="trainer", resource={"host.name": "node-3"})
    telemetry = TrainingTelemetry("producer-dist-run", rank=0, world_size=1)
    for step in range(12):
        with telemetry.step(step) as s:
            with s.phase("forward"):
                sum(range(2000))
            s.set(loss=2.0 - step * 0.05, samples=32)
    provider.shutdown()  # flushes the batch exporter
    print("done")
    """
)


@pytest.mark.timeout(420)
def test_producer_installs_alone_and_reports_to_a_running_service(
    tmp_path: Path, service: ServiceHandle
) -> None:
    venv = tmp_path / "job-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    # Pinned like the server (constraints.txt), from the repository's producer/ folder.
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         "-c", str(REPO / "constraints.txt"), str(REPO / "producer")],
        capture_output=True, text=True, timeout=360,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr

    listed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format", "json"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    installed = {p["name"].lower().replace("_", "-") for p in json.loads(listed.stdout)}
    assert "mlvigil-producer" in installed and "opentelemetry-sdk" in installed
    assert not installed & set(SERVER_ONLY), f"server dependencies pulled in: {installed & set(SERVER_ONLY)}"

    script = tmp_path / "train.py"
    script.write_text(TRAINING_SCRIPT)
    # Run from tmp_path so the repository's own packages cannot be imported by accident.
    run = subprocess.run(
        [str(python), str(script), service.otlp_http],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert run.returncode == 0 and "done" in run.stdout, run.stdout + run.stderr

    rows = service.wait_for(
        lambda: (
            (r := service.get("/api/v1/records/training_steps", run_id="producer-dist-run")["rows"])
            and len(r) == 12
            and r
        )
    )
    assert sorted(r["step"] for r in rows) == list(range(12))
    assert {r["host"] for r in rows} == {"node-3"}
