"""Run ``mlvigil serve`` as a child process and talk to it (the demo's and the tests' harness)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ServiceProcess:
    """A real ``mlvigil serve`` on loopback ports chosen by the OS (kept across restarts)."""

    def __init__(
        self,
        data_dir: Path,
        config: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
        ports: dict[str, int] | None = None,
        echo: Callable[[str], None] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.config_path = self.data_dir.parent / f"{self.data_dir.name}-config.yaml"
        self.config = dict(config or {})
        self.extra_env = dict(env or {})
        self.token = self.extra_env.get("MLVIGIL_AUTH_TOKEN")
        self.proc: subprocess.Popen[str] | None = None
        self.output: list[str] = []
        self.api = self.otlp_http = self.otlp_grpc = ""
        #: After a failed start: why, short (see ``_failure``).
        self.failure = ""
        self._ports = dict(ports) if ports else None
        self._echo = echo

    def start(self, timeout: float = 60.0) -> ServiceProcess:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config))
        env = dict(os.environ)
        ports = self._ports or {}
        env.update(
            {
                "MLVIGIL_DATA_DIR": str(self.data_dir),
                "PYTHONUNBUFFERED": "1",
                "MLVIGIL_API_ADDR": f"127.0.0.1:{ports.get('api', 0)}",
                "MLVIGIL_OTLP_HTTP_ADDR": f"127.0.0.1:{ports.get('otlp_http', 0)}",
                "MLVIGIL_OTLP_GRPC_ADDR": f"127.0.0.1:{ports.get('otlp_grpc', 0)}",
            }
        )
        env.update(self.extra_env)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlvigil", "serve", "-c", str(self.config_path)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        ready = threading.Event()
        proc = self.proc
        found: dict[str, Any] = {}

        def pump() -> None:
            assert proc.stdout
            for line in proc.stdout:
                self.output.append(line)
                if line.startswith("MLVIGIL_READY "):
                    found.update(json.loads(line.split(" ", 1)[1]))
                    ready.set()
                elif self._echo:
                    self._echo(line.rstrip("\n"))
            ready.set()

        threading.Thread(target=pump, daemon=True, name="serve-output").start()
        if not ready.wait(timeout) or not found:
            exited = ready.is_set()  # its output ended: the process is gone
            self.kill()
            self.failure = self._failure(exited, timeout)
            raise RuntimeError("mlvigil serve did not become ready:\n" + "".join(self.output[-50:]))
        self._ports = {k: int(found[k]) for k in ("api", "otlp_http", "otlp_grpc")}
        self.api = f"http://127.0.0.1:{self._ports['api']}"
        self.otlp_http = f"http://127.0.0.1:{self._ports['otlp_http']}"
        self.otlp_grpc = f"127.0.0.1:{self._ports['otlp_grpc']}"
        return self

    def _failure(self, exited: bool, timeout: float) -> str:
        """Why the service did not start, in its own words and short: its ``mlvigil:`` error
        lines (configuration, addresses), else the last line it wrote (a traceback's error)."""
        lines = [line.rstrip() for line in self.output if line.strip()]
        if not exited:
            return f"it did not report ready within {timeout:.0f}s" + (
                f"; last output: {lines[-1]}" if lines else ""
            )
        own = [i for i, line in enumerate(lines) if line.startswith("mlvigil:")]
        if own:
            return "\n".join(lines[own[-1] :][:6])
        code = self.proc.returncode if self.proc else None
        return lines[-1] if lines else f"it exited with code {code} and wrote nothing"

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM: graceful shutdown; returns the exit code."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            return self.proc.wait(timeout)
        return self.proc.returncode if self.proc else 0

    def kill(self) -> None:
        """SIGKILL: no chance to flush anything that was not already durable."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self) -> ServiceProcess:
        self.kill()
        return self.start()

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        auth: bool = True,
    ) -> tuple[int, dict[str, str], bytes]:
        hdrs = dict(headers or {})
        if auth and self.token and "Authorization" not in hdrs:
            hdrs["Authorization"] = f"Bearer {self.token}"
        url = path if path.startswith("http") else self.api + path
        req = urllib.request.Request(url, data=body, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), err.read()

    def get(self, path: str, **params: Any) -> Any:
        if params:
            path += "?" + urllib.parse.urlencode(params)
        status, _, body = self.request("GET", path)
        if status != 200:
            raise AssertionError(f"GET {path} -> {status}: {body[:500]!r}")
        return json.loads(body)

    def post(self, path: str, payload: Any = None, expect: int | tuple[int, ...] = (200, 201, 202)) -> Any:
        data = json.dumps(payload).encode() if payload is not None else b""
        status, _, body = self.request("POST", path, data, {"Content-Type": "application/json"})
        ok = (expect,) if isinstance(expect, int) else expect
        if status not in ok:
            raise AssertionError(f"POST {path} -> {status}: {body[:500]!r}")
        return json.loads(body) if body else None

    def evaluate(self) -> list[dict[str, Any]]:
        """Run every detector once now; the transitions it caused."""
        return list(self.post("/api/v1/evaluate")["transitions"])

    def stats(self) -> dict[str, int]:
        return dict(self.get("/api/v1/stats")["records"])

    def findings(self, **filters: Any) -> list[dict[str, Any]]:
        return list(self.get("/api/v1/findings", **filters)["findings"])

    def wait_for(self, fn: Callable[[], T], timeout: float = 30.0, interval: float = 0.05) -> T:
        """Poll ``fn`` until it returns something truthy; fail with its last value at the deadline."""
        deadline = time.monotonic() + timeout
        value = fn()
        while not value:
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout}s (last value {value!r})")
            time.sleep(interval)  # the polling period of a deadline-bounded wait
            value = fn()
        return value
