"""How counts, times and long text read on the command line: "1 agent", "3m ago", a date, never
a unix number, and descriptions cut between words."""

from __future__ import annotations

import time


def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    """`1 agent`, `0 agents`, `3 agents`."""
    return f"{count} {noun if count == 1 else (plural_form or noun + 's')}"


def duration(seconds: float) -> str:
    """A span of time: `0.4s`, `12.3s`, `4m 05s`, `2h 10m`, `3d 4h`."""
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h {whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d {whole % 86400 // 3600}h"


def ago(then: float, now: float) -> str:
    """When `then` was, seen from `now`: `just now`, `12s ago`, `5m ago`, `3h ago`, `2d ago`; a
    date past a week (and for a time in the future, which only a wrong clock gives)."""
    delta = now - then
    if delta < 0 or delta >= 7 * 86400:
        return date(then)
    if delta < 1:
        return "just now"
    if delta < 60:
        return f"{delta:.0f}s ago"
    if delta < 3600:
        return f"{delta // 60:.0f}m ago"
    if delta < 86400:
        return f"{delta // 3600:.0f}h ago"
    return f"{delta // 86400:.0f}d ago"


def date(at: float) -> str:
    """A moment as a local date and time: `2025-03-14 09:26:53`."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


def cut(text: str, limit: int) -> str:
    """`text` at most `limit` characters long, cut between words with "…" when it is longer."""
    if len(text) <= limit:
        return text
    head = text[: limit - 1]
    space = head.rfind(" ")
    if space >= limit // 2:  # a word longer than half the room is cut inside, not dropped whole
        head = head[:space]
    return head.rstrip(" ,;:.-") + "…"
