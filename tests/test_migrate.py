"""``mlvigil migrate``: an embedded data dir copied into PostgreSQL by the real CLI, then
read back through the PostgreSQL store: the same records, findings and documents."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

from mlvigil.core.findings import Finding, Severity
from mlvigil.core.records import RecordBatch
from mlvigil.core.store.duckdb import DuckDBStore
from mlvigil.core.store.postgres import PostgresStore

REPO = Path(__file__).resolve().parents[1]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "mlvigil", "migrate", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_migrate_copies_everything_once(tmp_path: Path, postgres_dsn: str) -> None:
    now = time.time()
    src = DuckDBStore(tmp_path / "data")
    b = RecordBatch()
    for i in range(120_000):  # more than one streamed chunk
        b.add(
            "metric_points", ts=now - 86400 * (i % 3) - i * 1e-3, hw_id=f"GPU-{i % 8}", name="util", value=i
        )
    b.add("training_steps", ts=now, run_id="r", step=1, loss=float("nan"))
    b.add("spans", ts=now, end_ts=now, trace_id="t", span_id="s", span_proto=b"\x00\xff")
    src.append(b)
    f = Finding("straggler", Severity.WARNING, {"run_id": "r", "rank": "2"}, "slow rank", updated_at=now)
    src.upsert_findings([f])
    src.put_docs("alerts_outbox", {"m1": {"state": "pending", "seq": 3}})
    src.put_docs("drift_monitors", {"churn": {"name": "churn"}})
    profile = {"features": {"x": list(range(30_000))}}  # large: kept in a file of documents/
    src.put_doc("drift_reference_profiles", "p1", profile)
    src.close()

    done = _cli("--data-dir", str(tmp_path / "data"), "--dsn", postgres_dsn)
    assert done.returncode == 0, done.stderr
    dst = PostgresStore(postgres_dsn)
    try:
        counts = dst.counts()
        assert counts["metric_points"] == 120_000 and counts["training_steps"] == 1 and counts["spans"] == 1
        assert math.isnan(dst.query("training_steps", columns=["loss"])["loss"][0])
        assert dst.query("spans", columns=["span_proto"])["span_proto"] == [b"\x00\xff"]
        assert sum(dst.query("metric_points", columns=["value"])["value"]) == sum(range(120_000))
        assert [x.id for x in dst.findings()] == [f.id]
        assert dst.list_docs("alerts_outbox", states=["pending"]) == {"m1": {"state": "pending", "seq": 3}}
        assert dst.get_doc("drift_monitors", "churn") == {"name": "churn"}
        assert dst.get_doc("drift_reference_profiles", "p1") == profile
    finally:
        dst.close()

    # A second run would double the records: refused, with what to do.
    again = _cli("--data-dir", str(tmp_path / "data"), "--dsn", postgres_dsn)
    assert again.returncode == 1 and "migrate into an empty database" in again.stderr


def test_migrate_names_what_is_missing(tmp_path: Path, postgres_dsn: str) -> None:
    done = _cli("--data-dir", str(tmp_path / "nothing"), "--dsn", postgres_dsn)
    assert done.returncode == 1 and "mlvigil.duckdb not found" in done.stderr
    env_less = subprocess.run(
        [sys.executable, "-m", "mlvigil", "migrate", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "MLVIGIL_STORE_DSN"} | {"PYTHONPATH": str(REPO)},
    )
    assert env_less.returncode == 2 and "--dsn" in env_less.stderr
