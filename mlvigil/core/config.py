"""Typed, validated configuration: YAML file, then MLVIGIL_* environment overrides.

Every section is a strict model (unknown keys are errors) and every error names the key's
path, e.g. ``ingest.max_request_bytes: Input should be greater than 0``.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from mlvigil.core.records import TABLES

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string such as ``500ms``, ``30s``, ``15m``, ``7d``."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 15m or 7d")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and (m := _DURATION.match(value)):
        return float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    raise ValueError(f"expected a duration such as 30s, 15m or 7d, got {value!r}")


Duration = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]


def _check_addr(value: str) -> str:
    _, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected host:port, got {value!r}")
    return value


Address = Annotated[str, BeforeValidator(lambda v: _check_addr(str(v)))]


def split_addr(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Secret(Strict):
    """A secret from the environment or a file, never written in the config itself or logged."""

    env: str | None = None
    file: Path | None = None

    def resolve(self) -> str | None:
        if self.env:
            return os.environ.get(self.env) or None
        if self.file:
            return self.file.read_text().strip() or None
        return None

    def __repr__(self) -> str:
        return f"Secret(env={self.env!r}, file={self.file!r})"


class ServerConfig(Strict):
    otlp_grpc_addr: Address = "0.0.0.0:4317"
    otlp_http_addr: Address = "0.0.0.0:4318"
    api_addr: Address = "0.0.0.0:9710"
    # Bearer token required on every receiver and the API when set (from env or file).
    auth_token: Secret | None = None
    # Public URL of the API, used in alert links (generatorURL, Slack buttons) to each
    # finding's console page (<external_url>/ui/findings/<id>).
    external_url: str = "http://localhost:9710"
    # Public URL of the Grafana that has mlvigil's dashboards (dashboards/); when set, alerts
    # and the console link each finding to the panel that shows it.
    grafana_url: str | None = None


class StorageConfig(Strict):
    data_dir: Path = Path("./mlvigil-data")
    # How long each record table is kept; raw spans are the bulkiest and kept shortest.
    retention: dict[str, Duration] = Field(
        default_factory=lambda: {
            "spans": 3 * 86400.0,
            "llm_calls": 30 * 86400.0,
            "inferences": 30 * 86400.0,
            "labels": 30 * 86400.0,
            "training_steps": 30 * 86400.0,
            "metric_points": 14 * 86400.0,
            "logs": 7 * 86400.0,
            "monitor_stats": 30 * 86400.0,
        }
    )
    retention_interval: Duration = 600.0
    # Writes are refused (503/UNAVAILABLE, retryable) while the data dir's disk has less free
    # space than this, so a checkpoint always has room; 0 turns the check off.
    min_free_bytes: int = Field(default=64 * 1024 * 1024, ge=0)
    # The embedded DuckDB's memory (its buffer pool: recently written and read pages; it spills
    # to disk beyond this). DuckDB's own default is 80% of the machine's RAM, so under sustained
    # ingest the server's RSS would grow towards that. A DuckDB size ("512MB", "2GB").
    duckdb_memory_limit: str = Field(
        default="512MB", pattern=r"^\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)$"
    )
    # duckdb: the embedded file in data_dir (one process). postgres: a shared database, for N
    # equal replicas (docs/scale-out.md); MLVIGIL_STORE_DSN selects it with its DSN.
    backend: Literal["duckdb", "postgres"] = "duckdb"
    # postgresql://user@host:5432/db as text (no password: use PGPASSFILE or .pgpass), or a
    # secret from the environment or a file when the DSN holds a password.
    dsn: str | Secret | None = None
    # Replicas hold their share of the detector work by leases that expire this long after the
    # last heartbeat: a dead replica's work moves within this bound (postgres only).
    lease_ttl: Duration = Field(default=15.0, ge=1.0)

    def resolve_dsn(self) -> str | None:
        return self.dsn.resolve() if isinstance(self.dsn, Secret) else self.dsn

    @model_validator(mode="after")
    def _dsn_for_postgres(self) -> StorageConfig:
        if self.backend == "postgres" and self.dsn is None:
            raise ValueError(
                "storage.backend is postgres but storage.dsn is not set: set storage.dsn or MLVIGIL_STORE_DSN"
            )
        return self

    @field_validator("retention")
    @classmethod
    def _known_tables(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(TABLES))
        if unknown:
            raise ValueError(f"unknown record table(s) {unknown}; known: {sorted(TABLES)}")
        return value


class IngestConfig(Strict):
    # Largest request body accepted, after decompression (413 above it).
    max_request_bytes: int = Field(default=16 * 1024 * 1024, gt=0)
    # Items (spans, points, log records) waiting for a durable commit; beyond it: 429/UNAVAILABLE.
    queue_max_items: int = Field(default=200_000, gt=0)
    # Seconds a client is told to wait (Retry-After) when the queue is full.
    retry_after_seconds: int = Field(default=1, ge=1)
    # Keep prompt and completion text of LLM calls (off: it may hold personal data).
    keep_llm_content: bool = False
    # Keep every span in the raw span table besides its normalised record.
    keep_raw_spans: bool = True
    # Longest prompt/completion text kept, in characters.
    max_content_chars: int = Field(default=8192, gt=0)
    # Items in one request: spans, data points or log records plus the resource/scope entries
    # around them (OTLP), instances (CloudEvents). Above it: 413 / RESOURCE_EXHAUSTED.
    max_items_per_request: int = Field(default=100_000, gt=0)
    # JSON objects plus arrays in one JSON body (OTLP/JSON, CloudEvents). Above it: 413.
    max_json_containers: int = Field(default=1_000_000, gt=0)
    # Threads that decode and normalise requests, off the event loop.
    decode_workers: int = Field(default=2, gt=0, le=64)
    # Requests being read, decoded or committed at once, all receivers together; beyond it
    # a request is answered 429 / UNAVAILABLE with Retry-After (bounds memory under a flood).
    max_requests_in_flight: int = Field(default=32, gt=0)
    # How long a client may take to send a request's headers, and then its body (408 for a
    # slow body); also how long an idle keep-alive connection is kept open.
    read_timeout: Duration = Field(default=30.0, gt=0)
    # Write-ahead log of OTLP records (the acknowledgement point); default <storage.data_dir>/wal.
    log_dir: Path | None = None
    # Bytes of the log not yet loaded into the store; beyond it: 503 / UNAVAILABLE + Retry-After.
    log_max_bytes: int = Field(default=1024 * 1024 * 1024, gt=0)
    # Size at which the log starts a new segment file (loaded segments are deleted whole).
    log_segment_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    # Log records (requests) the loader inserts into the store per transaction.
    loader_max_records: int = Field(default=32, gt=0, le=100_000)


class DetectorsConfig(Strict):
    # How often the detector loop evaluates all detectors.
    interval: Duration = 15.0
    # Threads evaluating detectors at once; each detector keeps its own schedule.
    workers: int = Field(default=2, ge=1, le=64)
    # Each detector family's section (training, drift, carbon) is its plugin's model, added by
    # mlvigil.core.plugin.config_model.


class Config(Strict):
    """The kernel's sections; each plugin's section (gpu, alerts, retrain, console,
    detectors.*) is added by ``mlvigil.core.plugin.config_model``."""

    server: ServerConfig = Field(default_factory=ServerConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    detectors: DetectorsConfig = Field(default_factory=DetectorsConfig)
    log_level: str = "info"

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        if value.lower() not in {"debug", "info", "warning", "error"}:
            raise ValueError("expected one of debug, info, warning, error")
        return value.lower()


class ConfigError(Exception):
    """A configuration that cannot be used; the message names each bad key and its problem."""


# Named overrides (DESIGN.md); any other key can be set with MLVIGIL__SECTION__KEY=value.
ENV_OVERRIDES = {
    "MLVIGIL_OTLP_GRPC_ADDR": ("server", "otlp_grpc_addr"),
    "MLVIGIL_OTLP_HTTP_ADDR": ("server", "otlp_http_addr"),
    "MLVIGIL_API_ADDR": ("server", "api_addr"),
    "MLVIGIL_DATA_DIR": ("storage", "data_dir"),
    "MLVIGIL_LOG_LEVEL": ("log_level",),
}


def _set_path(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[path[-1]] = value


def _unwrap_model(annotation: Any) -> type[BaseModel] | None:
    """The model class inside ``annotation`` (``X | None``, ``Annotated[X, ...]``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        if (found := _unwrap_model(arg)) is not None:
            return found
    return None


def _keys_at(model: type[BaseModel], loc: tuple[str | int, ...]) -> list[str]:
    """The keys a model accepts at ``loc`` (a path of field names), or [] where it cannot tell."""
    for part in loc:
        if part.isdigit() if isinstance(part, str) else isinstance(part, int):
            continue  # a list index: same model for every item
        field = model.model_fields.get(str(part))
        inner = _unwrap_model(field.annotation) if field is not None else None
        if inner is None:
            return []
        model = inner
    return list(model.model_fields)


def did_you_mean(name: str, known: list[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest known name, or ``""``."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def describe_errors(
    exc: ValidationError, model: type[BaseModel], prefix: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], str]]:
    """(full key path, message) per error; an unknown key gets the closest known one."""
    out = []
    for e in exc.errors(include_url=False):
        loc = tuple(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            known = _keys_at(model, loc[:-1])
            msg = "unknown key" + did_you_mean(loc[-1], known) if loc else "unknown key"
        else:
            msg = e["msg"]
        out.append(((*prefix, *loc), msg))
    return out


def _format_issues(
    issues: list[tuple[tuple[str, ...], str]], source: str, origins: dict[tuple[str, ...], str]
) -> str:
    lines = []
    for loc, msg in issues:
        key = ".".join(loc) or "(top level)"
        # The environment variable that set this key (or a section above it), if one did.
        var = next((v for p, v in origins.items() if loc[: len(p)] == p), None)
        where = f"environment variable {var} (sets {key})" if var else f"{source}: {key}"
        lines.append(f"{where}: {msg}")
    return "\n".join(lines)


ConfigT = TypeVar("ConfigT", bound=BaseModel)


def build_config(
    raw: dict[str, Any] | None,
    env: dict[str, str] | None = None,
    source: str = "config",
    model: type[ConfigT] = Config,  # type: ignore[assignment]
) -> ConfigT:
    """Validate ``raw`` as ``model`` after applying environment overrides from ``env`` (default:
    os.environ), in one pass. ``model`` is ``Config`` with the plugins' sections
    (``mlvigil.core.plugin.config_model``); the application passes it (``mlvigil.app.plugins``).

    An error in a value that came from the environment names the variable, not the file.
    """
    env = dict(os.environ) if env is None else env
    tree: dict[str, Any] = dict(raw or {})
    origins: dict[tuple[str, ...], str] = {}
    for name, path in ENV_OVERRIDES.items():
        if env.get(name):
            _set_path(tree, path, env[name])
            origins[path] = name
    if env.get("MLVIGIL_STORE_DSN"):
        _set_path(tree, ("storage", "backend"), "postgres")
        _set_path(tree, ("storage", "dsn"), {"env": "MLVIGIL_STORE_DSN"})
    if env.get("MLVIGIL_AUTH_TOKEN"):
        _set_path(tree, ("server", "auth_token"), {"env": "MLVIGIL_AUTH_TOKEN"})
    elif env.get("MLVIGIL_AUTH_TOKEN_FILE"):
        _set_path(tree, ("server", "auth_token"), {"file": env["MLVIGIL_AUTH_TOKEN_FILE"]})
        origins[("server", "auth_token")] = "MLVIGIL_AUTH_TOKEN_FILE"
    for name, value in env.items():
        if name.startswith("MLVIGIL__"):
            path = tuple(p.lower() for p in name[len("MLVIGIL__") :].split("__") if p)
            if path:
                try:
                    parsed = yaml.safe_load(value)
                except yaml.YAMLError as exc:
                    raise ConfigError(f"environment variable {name}: not a YAML value: {exc}") from None
                _set_path(tree, path, parsed)
                origins[path] = name
    try:
        return model.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_format_issues(describe_errors(exc, model), source, origins)) from None


#: Bounds on a config file: its size, and the values it expands to. YAML aliases share one
#: object, so a small file can stand for an exponential tree ("billion laughs") that validation
#: would walk path by path: the walk is counted and stopped at the bound instead.
MAX_CONFIG_BYTES = 4 * 1024 * 1024
MAX_CONFIG_VALUES = 200_000


def _check_expanded_size(raw: Any, source: str) -> None:
    """ConfigError when ``raw``, walked as a tree (aliases expanded), has more than
    MAX_CONFIG_VALUES values; the walk stops at the bound."""
    stack = [raw]
    seen = 0
    while stack:
        value = stack.pop()
        seen += 1
        if seen > MAX_CONFIG_VALUES:
            raise ConfigError(
                f"{source}: expands to more than {MAX_CONFIG_VALUES:,} values (YAML aliases "
                "repeat what they point to); write the repeated parts out or use fewer aliases"
            )
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)


def load_config(
    path: str | Path | None,
    env: dict[str, str] | None = None,
    model: type[ConfigT] = Config,  # type: ignore[assignment]
) -> ConfigT:
    """Read a YAML config file (or the embedded defaults when ``path`` is None) and validate it
    as ``model`` (see ``build_config``)."""
    raw: Any = {}
    source = "config"
    if path is not None:
        source = str(path)
        try:
            with Path(path).open("rb") as fh:
                text = fh.read(MAX_CONFIG_BYTES + 1)
            if len(text) > MAX_CONFIG_BYTES:
                raise ConfigError(f"{source}: over {MAX_CONFIG_BYTES:,} bytes; is this the config file?")
            raw = yaml.safe_load(text.decode("utf-8")) or {}
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{source}: not UTF-8 text (byte {exc.start})") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source}: not valid YAML: {exc}") from None
        _check_expanded_size(raw, source)
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: (top level): expected a mapping of sections")
    return build_config(raw, env, source, model)
