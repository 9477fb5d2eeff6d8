"""Debian's real PostgreSQL server, started by the tests in a temporary directory.

Nothing is assumed running: ``PostgresServer`` runs ``initdb`` and ``pg_ctl`` (from
/usr/lib/postgresql/<version>/bin, installed by scripts/test.sh) on a free loopback port,
with fsync on (the durability tests rely on it). PostgreSQL refuses to run as root, and CI
runs as root: then the server runs as the unprivileged ``postgres`` user that Debian's
package creates (through ``runuser``), in a directory handed to that user; the tests connect
over TCP with trust authentication on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

BIN_ROOT = Path("/usr/lib/postgresql")


def pg_bin() -> Path | None:
    """The newest installed server's bin directory, or None."""
    versions = sorted(
        (p for p in BIN_ROOT.glob("*/bin") if (p / "initdb").exists()), key=lambda p: int(p.parent.name)
    )
    return versions[-1] if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    def __init__(self) -> None:
        bindir = pg_bin()
        if bindir is None:
            raise RuntimeError(
                "PostgreSQL server binaries not found under /usr/lib/postgresql (apt install postgresql)"
            )
        self.bindir = bindir
        # Its own directory under /tmp: pytest's tmp dirs are private to root, and the server
        # may run as another user (below).
        self.root = root = Path(tempfile.mkdtemp(prefix="mlvigil-pg-"))
        self.data = root / "pgdata"
        self.port = _free_port()
        self._as: list[str] = []
        if os.geteuid() == 0:
            # initdb and postgres refuse root: run them as Debian's postgres user.
            user = pwd.getpwnam("postgres")
            os.chown(root, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str, timeout: float = 60) -> None:
        done = subprocess.run([*self._as, *args], capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args[:1])} failed ({done.returncode}): {done.stderr.strip()[-2000:]}"
            )

    def start(self) -> PostgresServer:
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-locale",
        )
        opts = (
            f"-h 127.0.0.1 -p {self.port} -k {self.root} -c max_connections=200 -c shared_buffers=64MB"
            " -c max_locks_per_transaction=256"
        )
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "server.log"),
            "-o",
            opts,
            "-w",
            "-t",
            "60",
            "start",
        )
        return self

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def create_database(self) -> str:
        """A fresh, empty database; returns its DSN."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.dsn(), autocommit=True) as con:
            con.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._run(
                str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=30
            )
        shutil.rmtree(self.root, ignore_errors=True)
