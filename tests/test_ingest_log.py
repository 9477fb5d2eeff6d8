"""The OTLP path through the native normaliser and the write-ahead log, on the real service:
prompt text never on disk unless kept, the Python fallback for shapes left to it, and a
clear exit when the extension is missing. Replay after kill -9: tests/test_durability.py."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from tests.harness import REPO, ServiceHandle

PROTOBUF = {"Content-Type": "application/x-protobuf"}
SECRETS = ["zebra-quartz-prompt-7731", "mango-ultra-completion-4410"]


def _kv(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _llm_export(trace_no: int, tokens: str = "12") -> bytes:
    now = time.time_ns()
    span = Span(
        trace_id=trace_no.to_bytes(16, "big"),
        span_id=(1).to_bytes(8, "big"),
        name="openai.chat",
        start_time_unix_nano=now,
        end_time_unix_nano=now + 1_000_000,
        attributes=[
            _kv("gen_ai.system", "openai"),
            _kv("gen_ai.request.model", "gpt-4o"),
            _kv("gen_ai.usage.input_tokens", tokens),
            _kv("gen_ai.prompt.0.role", "user"),
            _kv("gen_ai.prompt.0.content", SECRETS[0]),
            _kv("gen_ai.completion.0.role", "assistant"),
            _kv("gen_ai.completion.0.content", SECRETS[1]),
        ],
    )
    resource = ResourceSpans(scope_spans=[ScopeSpans(spans=[span])])
    resource.resource.attributes.append(_kv("service.name", "chat-svc"))
    return ExportTraceServiceRequest(resource_spans=[resource]).SerializeToString()


def _post(service: ServiceHandle, body: bytes, headers: dict[str, str] = PROTOBUF) -> None:
    status, _, reply = service.request("POST", service.otlp_http + "/v1/traces", body, headers)
    assert status == 200, reply


def _llm_calls(service: ServiceHandle) -> list[dict[str, Any]]:
    return list(service.get("/api/v1/records/llm_calls", service="chat-svc")["rows"])


@pytest.mark.parametrize("keep", [False, True])
def test_prompt_and_completion_text_reach_disk_only_when_kept(
    service_factory: Callable[..., ServiceHandle], keep: bool
) -> None:
    service = service_factory({"ingest": {"keep_llm_content": keep}})
    _post(service, _llm_export(1))
    # The same span as OTLP/JSON (decoded, re-serialised, normalised natively).
    as_json = json.dumps(
        {
            "resourceSpans": [
                {
                    "resource": {
                        "attributes": [{"key": "service.name", "value": {"stringValue": "chat-svc"}}]
                    },
                    "scopeSpans": [
                        {
                            "spans": [
                                {
                                    "traceId": f"{2:032x}",
                                    "spanId": f"{1:016x}",
                                    "name": "openai.chat",
                                    "startTimeUnixNano": str(time.time_ns()),
                                    "endTimeUnixNano": str(time.time_ns() + 1_000_000),
                                    "attributes": [
                                        {"key": "gen_ai.system", "value": {"stringValue": "openai"}},
                                        {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}},
                                        {
                                            "key": "gen_ai.prompt.0.content",
                                            "value": {"stringValue": SECRETS[0]},
                                        },
                                        {
                                            "key": "gen_ai.completion.0.content",
                                            "value": {"stringValue": SECRETS[1]},
                                        },
                                    ],
                                }
                            ]
                        }
                    ],
                }
            ]
        }
    ).encode()
    _post(service, as_json, {"Content-Type": "application/json"})
    service.wait_for(lambda: len(_llm_calls(service)) == 2, timeout=30)
    assert {r["request_model"] for r in _llm_calls(service)} == {"gpt-4o"}
    assert service.stop() == 0
    found = {
        secret
        for path in service.data_dir.rglob("*")
        if path.is_file()
        for secret in SECRETS
        if secret.encode() in path.read_bytes()
    }
    assert found == (set(SECRETS) if keep else set())


def test_a_shape_left_to_the_python_normaliser_is_stored_and_counted(service: ServiceHandle) -> None:
    """Non-ASCII digits read as a number: the native side hands the request to the Python
    reference (same result), counted in mlvigil_native_fallbacks_total."""
    _post(service, _llm_export(3, tokens="١٢"))
    service.wait_for(lambda: _llm_calls(service))
    assert [r["input_tokens"] for r in _llm_calls(service)] == [12]
    _, _, text = service.request("GET", "/metrics")
    assert 'mlvigil_native_fallbacks_total{signal="traces"} 1.0' in text.decode()


def test_serve_exits_2_saying_to_run_setup_when_the_extension_is_missing(tmp_path: Path) -> None:
    shadow = tmp_path / "shadow" / "mlvigil_native"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('not built')\n")
    proc = subprocess.run(
        [sys.executable, "-m", "mlvigil", "serve"],
        cwd=REPO,
        env={
            "PYTHONPATH": f"{shadow.parent}:{REPO}",
            "MLVIGIL_DATA_DIR": str(tmp_path / "data"),
            "PATH": "/usr/bin",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "scripts/setup.sh" in proc.stderr and "Traceback" not in proc.stderr


def test_llm_traffic_metrics_from_arrow_equal_the_per_row_ones() -> None:
    """The log path aggregates the LLM series in Arrow; every series and value must equal what
    the per-row path makes of the same rows (NaN, infinities, empty strings, nulls)."""
    from prometheus_client import CollectorRegistry, generate_latest

    from collector.llm_metrics import LlmTrafficMetrics
    from collector.native import LOG_SCHEMAS
    from mlvigil.core.records import RecordBatch

    batch = RecordBatch()
    rows: list[dict[str, Any]] = [
        {"service": "a", "response_model": "m1", "input_tokens": 3, "output_tokens": 0, "latency_s": 0.07},
        {"service": "a", "response_model": "", "request_model": "m2", "error": "Timeout", "latency_s": 99.0},
        {"service": None, "request_model": None, "finish_reasons": "stop,,length", "ttft_s": 0.3},
        {"service": "a", "response_model": "m1", "latency_s": float("nan"), "ttft_s": float("inf")},
        {"service": "b", "request_model": "m1", "error": "", "latency_s": 0.05, "input_tokens": 7},
        {"service": "b", "request_model": "m1", "finish_reasons": "stop", "latency_s": -1.0},
    ]
    for i, row in enumerate(rows):
        batch.add("llm_calls", ts=1.0 + i, **row)
    per_row, arrow = CollectorRegistry(), CollectorRegistry()
    LlmTrafficMetrics(per_row).observe(batch)
    cols = batch.columns["llm_calls"]
    schema = LOG_SCHEMAS["llm_calls"]
    # In chunks, one a log record, as the loader hands over a group of records.
    table = pa.concat_tables(
        pa.Table.from_pydict({f.name: cols[f.name][a:b] for f in schema}, schema=schema)
        for a, b in ((0, 2), (2, 5), (5, len(rows)))
    )
    assert table["service"].num_chunks == 3
    LlmTrafficMetrics(arrow).observe_arrow({"llm_calls": table})

    def series(registry: CollectorRegistry) -> list[str]:
        return sorted(
            line
            for line in generate_latest(registry).decode().splitlines()
            if not line.startswith("#") and "_created{" not in line
        )

    assert series(arrow) == series(per_row)
    assert any("Timeout" in line for line in series(arrow))


def test_llm_traffic_metrics_from_log_records_write_nothing_to_stderr(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Tables read back from log records have unaligned buffers (each IPC stream starts after
    its table's name); counting them must not make Arrow's Acero print its "poorly aligned"
    warning, which it did ten times a record, for every loaded group, into the service's log."""
    from prometheus_client import CollectorRegistry

    from collector.llm_metrics import LlmTrafficMetrics
    from collector.native import LOG_SCHEMAS
    from collector.wal import decode, encode

    schema = LOG_SCHEMAS["llm_calls"]
    n = 50
    cols: dict[str, list[Any]] = {f.name: [None] * n for f in schema}
    cols.update(
        ts=[float(i) for i in range(n)],
        service=["svc"] * n,
        response_model=[f"m{i % 3}" for i in range(n)],
        error=[None if i % 7 else "Timeout" for i in range(n)],
        input_tokens=list(range(n)),
        finish_reasons=["stop"] * n,
        latency_s=[0.1 * i for i in range(n)],
    )
    tables = [
        decode(encode({"llm_calls": pa.Table.from_pydict(cols, schema=schema)}))["llm_calls"]
        for _ in range(2)
    ]
    capfd.readouterr()
    registry = CollectorRegistry()
    LlmTrafficMetrics(registry).observe_arrow({"llm_calls": pa.concat_tables(tables)})
    assert "poorly aligned" not in capfd.readouterr().err
    assert registry.get_sample_value(
        "mlvigil_llm_calls_total", {"service": "svc", "model": "m0", "outcome": "ok"}
    )


def test_on_postgresql_the_native_normaliser_commits_and_no_prompt_text_is_stored(
    service_factory: Callable[..., ServiceHandle], postgres_dsn: str
) -> None:
    """The PostgreSQL store has no log (docs/limits.md) but the same normaliser: the row is
    committed before the acknowledgement, the raw span without a prompt-bearing blob, and
    with keep_llm_content false no prompt or completion text in any table."""
    import psycopg
    from psycopg import sql

    from mlvigil.core.records import TABLES

    service = service_factory({"ingest": {"keep_llm_content": False}}, {"MLVIGIL_STORE_DSN": postgres_dsn})
    _post(service, _llm_export(1))
    _post(service, _llm_export(2, tokens="١٢"))  # a shape left to the Python reference
    with psycopg.connect(postgres_dsn, autocommit=True) as con:
        # Acknowledged means committed: no polling.
        models = con.execute(
            "SELECT request_model, input_tokens FROM llm_calls ORDER BY input_tokens"
        ).fetchall()
        assert models == [("gpt-4o", 12), ("gpt-4o", 12)]
        assert con.execute("SELECT count(*), count(span_proto) FROM spans").fetchone() == (2, 0)
        stored = " ".join(
            str(row)
            for table in TABLES
            for row in con.execute(
                sql.SQL("SELECT t::text FROM {} t").format(sql.Identifier(table))
            ).fetchall()
        )
    assert [s for s in SECRETS if s in stored] == []
    _, _, text = service.request("GET", "/metrics")
    assert 'mlvigil_native_fallbacks_total{signal="traces"} 1.0' in text.decode()
