"""The config is typed and validated; errors name the key's path; env overrides apply."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mlvigil.app.plugins import build_config, load_config
from mlvigil.core.config import ConfigError, parse_duration

REPO = Path(__file__).resolve().parents[1]


def test_defaults_and_env_overrides() -> None:
    cfg = build_config({}, env={})
    assert cfg.server.otlp_grpc_addr == "0.0.0.0:4317" and cfg.server.api_addr == "0.0.0.0:9710"
    assert str(cfg.storage.data_dir) == "mlvigil-data"
    cfg = build_config(
        {"server": {"api_addr": "127.0.0.1:1"}},
        env={
            "MLVIGIL_API_ADDR": "127.0.0.1:9999",
            "MLVIGIL_OTLP_HTTP_ADDR": "127.0.0.1:5318",
            "MLVIGIL_OTLP_GRPC_ADDR": "127.0.0.1:5317",
            "MLVIGIL_DATA_DIR": "/tmp/x",
            "MLVIGIL__INGEST__QUEUE_MAX_ITEMS": "5000",
        },
    )
    assert cfg.server.api_addr == "127.0.0.1:9999" and cfg.server.otlp_grpc_addr == "127.0.0.1:5317"
    assert str(cfg.storage.data_dir) == "/tmp/x" and cfg.ingest.queue_max_items == 5000


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            {"ingest": {"max_request_byts": 5}},
            "ingest.max_request_byts: unknown key (did you mean 'max_request_bytes'?)",
        ),
        ({"server": {"api_adr": "x:1"}}, "server.api_adr: unknown key (did you mean 'api_addr'?)"),
        (
            {"alerts": {"recievers": []}},
            "config: alerts.recievers: unknown key (did you mean 'receivers'?)",
        ),
        (
            {
                "detectors": {
                    "drift": {"monitors": [{"name": "m", "reference": {"dataset": True}, "windw": {}}]}
                }
            },
            "detectors.drift.monitors.0.windw: unknown key (did you mean 'window'?)",
        ),
        ({"ingest": {"max_request_bytes": 0}}, "ingest.max_request_bytes: Input should be greater than 0"),
        ({"server": {"api_addr": "nohost"}}, "server.api_addr: Value error, expected host:port"),
        (
            {"storage": {"retention": {"spans": "forever"}}},
            "storage.retention.spans: Value error, expected a duration",
        ),
        (
            {"storage": {"retention": {"nosuch": "1d"}}},
            "storage.retention: Value error, unknown record table",
        ),
        ({"detectors": {"interval": "soon"}}, "detectors.interval: Value error, expected a duration"),
        ({"colour": "red"}, "colour: unknown key"),
    ],
)
def test_bad_values_name_the_key(raw: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_config(raw, env={})
    assert expected in str(err.value)


def test_env_override_is_validated_too() -> None:
    with pytest.raises(ConfigError, match=r"server\.otlp_http_addr"):
        build_config({}, env={"MLVIGIL_OTLP_HTTP_ADDR": "localhost"})


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"MLVIGIL_API_ADDR": "localhost"},
            "environment variable MLVIGIL_API_ADDR (sets server.api_addr): Value error, expected host:port",
        ),
        (
            {"MLVIGIL__INGEST__QUEUE_MAX_ITEMS": "-1"},
            "environment variable MLVIGIL__INGEST__QUEUE_MAX_ITEMS (sets ingest.queue_max_items)",
        ),
        (
            {"MLVIGIL__ALERTS__RECIEVERS": "[]"},
            "environment variable MLVIGIL__ALERTS__RECIEVERS (sets alerts.recievers): unknown key"
            " (did you mean 'receivers'?)",
        ),
        ({"MLVIGIL__INGEST__QUEUE_MAX_ITEMS": "[1"}, "environment variable MLVIGIL__INGEST__QUEUE_MAX_ITEMS"),
    ],
)
def test_env_errors_name_the_variable(env: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_config({"server": {"api_addr": "127.0.0.1:1"}}, env=env)
    assert expected in str(err.value)


def test_file_value_errors_still_name_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("server:\n  api_addr: nohost\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: server\.api_addr: Value error"):
        load_config(cfg, env={})


def test_durations() -> None:
    assert parse_duration("500ms") == 0.5 and parse_duration("15m") == 900 and parse_duration(3) == 3.0
    assert parse_duration("7d") == 7 * 86400
    with pytest.raises(ValueError):
        parse_duration("tomorrow")


def test_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("server: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad, env={})
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(scalar, env={})
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml", env={})


@pytest.mark.timeout(20)
def test_config_file_is_bounded_before_validation(tmp_path: Path) -> None:
    """A file of a few hundred bytes whose aliases expand to 10^9 values ("billion laughs"),
    an oversized file and a binary one are refused with a reason, quickly."""
    laughs = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i, name in enumerate("bcdefghi"):
        prev = "abcdefghi"[i]
        laughs.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(laughs) + "\nserver: {extra: *i}\n")
    with pytest.raises(ConfigError, match="expands to more than 200,000 values"):
        load_config(bomb, env={})
    big = tmp_path / "big.yaml"
    big.write_bytes(b"# padding\n" * 500_000)
    with pytest.raises(ConfigError, match="over 4,194,304 bytes"):
        load_config(big, env={})
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"server:\n  api_addr: \xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(binary, env={})


def test_serve_exits_2_with_the_key_named(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("ingest:\n  queue_max_items: -1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "mlvigil", "serve", "-c", str(cfg)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "ingest.queue_max_items" in proc.stderr and "Traceback" not in proc.stderr
