"""llama.cpp's and ggml's own log, routed to Python logging at DEBUG.

llama.cpp reports what it does (model metadata, buffer sizes, warnings such as the full-size
SWA cache of Gemma 3) through one log callback, which also receives ggml's messages
(`llama_log_set` passes it on to `ggml_log_set`). Left alone, it writes them to stderr;
llama-cpp-python installs its own callback, which still prints errors (and with `verbose=True`
everything) to stderr. orc's output has no room for either, so `route_llama_logs` replaces
that callback, once per process, with one that turns every line into a record of the
`orc.llama_cpp` logger at DEBUG: `orc --debug` and `orc-node start --debug` show them, nothing
else does.

While a model loads, llama-cpp-python (quiet, `verbose=False`) points the process's stderr at
/dev/null, where a log handler writing to stderr would lose them; `held()` keeps the lines
that arrive meanwhile and logs them when the load is done.

The callback runs on whichever thread llama.cpp logs from and must never raise: an exception
cannot cross back into C, and ctypes would print it to stderr.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["LOGGER_NAME", "LineAssembler", "held", "route_llama_logs"]

LOGGER_NAME = "orc.llama_cpp"
log = logging.getLogger(LOGGER_NAME)

# enum ggml_log_level: NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, and CONT 5, which continues
# the previous message (progress dots). llama-cpp-python's own callback still reads the older
# order (INFO 1 ... ERROR 3), so it takes warnings for errors and prints them.
_LEVEL_NAMES = {3: "warning: ", 4: "error: "}
_CONT = 5
# A line longer than this is logged in pieces: llama.cpp's lines are short, and a runaway one
# must not grow a buffer without bound.
MAX_LINE_CHARS = 4096
# Lines kept while a load holds them; a SmolLM2 load writes about 2,000. Beyond this, lines are
# counted, not kept, so a pathological model file cannot fill memory with log lines.
MAX_HELD_LINES = 20_000


class LineAssembler:
    """Joins llama.cpp's log fragments into whole lines, each with the level of its first
    fragment. Not thread-safe on its own; `route_llama_logs` serialises calls."""

    def __init__(self) -> None:
        self._partial = ""
        self._prefix = ""

    def feed(self, level: int, text: str) -> list[str]:
        """The lines `text` completes (without their newline), prefixed with "warning: " or
        "error: " for those levels. A new message ends an unfinished one."""
        lines = []
        if level != _CONT:
            if self._partial:
                lines.append(self._prefix + self._partial)
                self._partial = ""
            self._prefix = _LEVEL_NAMES.get(level, "")
        pieces = (self._partial + text).split("\n")
        self._partial = pieces.pop()
        lines += [self._prefix + piece for piece in pieces]
        while len(self._partial) > MAX_LINE_CHARS:
            lines.append(self._prefix + self._partial[:MAX_LINE_CHARS])
            self._partial = self._partial[MAX_LINE_CHARS:]
        return [line for line in lines if line.strip()]


class _Router:
    """The process's one llama.cpp log callback and the state it needs."""

    def __init__(self, logger: logging.Logger = log) -> None:
        self._log = logger
        self._lock = threading.Lock()
        self._lines = LineAssembler()
        self._holders = 0
        self._held: list[str] = []
        self._dropped = 0
        self.installed = False
        # ctypes calls back into this object for as long as llama.cpp lives, so the function
        # pointer is kept here, alive with the module.
        self.c_callback: Any = None

    def receive(self, level: int, text: bytes | None, _user_data: object = None) -> None:
        """The callback's body: never raises."""
        try:
            if text is None or not self._log.isEnabledFor(logging.DEBUG):
                return
            with self._lock:
                lines = self._lines.feed(level, text.decode("utf-8", errors="replace"))
                if self._holders:
                    room = max(0, MAX_HELD_LINES - len(self._held))
                    self._held.extend(lines[:room])
                    self._dropped += len(lines) - len(lines[:room])
                    return
            for line in lines:
                self._log.debug("%s", line)
        except BaseException:  # noqa: BLE001 - nothing may propagate into C
            pass

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        with self._lock:
            self._holders += 1
        try:
            yield
        finally:
            with self._lock:
                self._holders -= 1
                if self._holders:
                    lines, dropped = [], 0
                else:
                    lines, dropped, self._held, self._dropped = self._held, self._dropped, [], 0
            for line in lines:
                self._log.debug("%s", line)
            if dropped:
                self._log.debug("(%d more lines of llama.cpp's log were dropped)", dropped)


_router = _Router()


def route_llama_logs(llama_cpp: Any) -> None:
    """Send llama.cpp's and ggml's log to the `orc.llama_cpp` logger from now on (idempotent).

    `llama_cpp` is the imported llama-cpp-python package; call this after importing it, since
    importing it installs its own callback.
    """
    with _router._lock:
        if _router.installed:
            return
        _router.c_callback = llama_cpp.llama_log_callback(_router.receive)
        llama_cpp.llama_log_set(_router.c_callback, ctypes.c_void_p(0))
        _router.installed = True


def held() -> contextlib.AbstractContextManager[None]:
    """Keep llama.cpp's log lines while the block runs (a load with stderr pointed at
    /dev/null) and log them after it; nested and concurrent holds release at the last exit."""
    return _router.held()
