"""The calling thread's name, given to the operating system too (Linux: ``prctl``), so that
``top -H``, ``/proc/<pid>/task/*/comm`` and profilers tell the service's threads apart (the
ingest benchmark splits the server's CPU by them)."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import threading

_PR_SET_NAME = 15
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True) if sys.platform == "linux" else None


def name_os_thread(name: str | None = None) -> None:
    """Names the calling OS thread ``name`` (default: its Python name), cut to the 15 bytes
    Linux keeps. Elsewhere, or if the call fails, nothing happens: the name is a label only."""
    if _libc is None:
        return
    raw = (name or threading.current_thread().name).encode(errors="replace")[:15]
    _libc.prctl(_PR_SET_NAME, ctypes.c_char_p(raw), 0, 0, 0)
