"""HTML pieces shared by the console's pages: the layout, tables, badges and value formats."""

from __future__ import annotations

import html
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

NAV = (("findings", "Findings"), ("monitors", "Monitors"), ("runs", "Training runs"), ("gpus", "GPUs"))


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def when(ts: float | None) -> str:
    """An epoch time as UTC text in a ``<time>`` element (the page's script shows it local)."""
    if ts is None or not isinstance(ts, int | float) or not math.isfinite(ts):
        return "-"
    text = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) + "Z"
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
    return f'<time datetime="{iso}">{text}</time>'


def num(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return "-" if v is None else str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e6):
            return f"{v:.3g}"
        return f"{v:.4g}"
    return esc(v)


def badge(text: str, cls: str | None = None) -> str:
    return f'<span class="badge {esc(cls or text)}">{esc(text)}</span>'


def labels(subject: Mapping[str, str]) -> str:
    return " ".join(f'<span class="label">{esc(k)}={esc(v)}</span>' for k, v in sorted(subject.items()))


def table(head: Sequence[str], rows: Iterable[Sequence[str]], cls: str = "") -> str:
    """A table of already-escaped cells, inside a wrapper that scrolls sideways on a phone."""
    th = "".join(f"<th>{esc(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return (
        f'<div class="scroll"><table class="{cls}"><thead><tr>{th}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


def card(title: str, body: str, cls: str = "") -> str:
    return f'<section class="card {cls}"><h2>{esc(title)}</h2>{body}</section>'


def link(path: str, text: str, **query: Any) -> str:
    q = {k: v for k, v in query.items() if v not in (None, "")}
    href = path + ("?" + urlencode(q) if q else "")
    return f'<a href="{esc(href)}">{esc(text)}</a>'


def page(title: str, body: str, *, active: str = "", logout: bool = False) -> str:
    nav = "".join(
        f'<a href="/ui/{key}"{" class=active" if key == active else ""}>{esc(name)}</a>' for key, name in NAV
    )
    out = (
        '<form method="post" action="/ui/logout" class="logout"><button>Log out</button></form>'
        if logout
        else ""
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)} · mlvigil</title>
<link rel="stylesheet" href="/ui/static/console.css">
<script src="/ui/static/console.js" defer></script>
</head><body>
<header><a class="brand" href="/ui/findings">mlvigil</a><nav>{nav}</nav>{out}</header>
<main>
<h1>{esc(title)}</h1>
{body}
</main></body></html>
"""


class BadRequest(Exception):
    """A console request that cannot be served as asked; the message says what to change."""
