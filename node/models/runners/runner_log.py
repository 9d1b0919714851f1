"""A runner's log records, carried over its stderr to the node, which logs them as its own.

The runner writes each record as one line, `ORC-LOG <level number> <logger name> <message>`,
with the message's newlines escaped. The node reads the lines (`parse_log_line`), and anything
else a runner writes to stderr (a native library printing, a crash report) is logged by the
node as a warning naming the runner's model.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

__all__ = ["MAX_LOG_LINE_CHARS", "LogLine", "RunnerLogHandler", "parse_log_line"]

PREFIX = "ORC-LOG "
# Characters of one line relayed to the node's log; longer lines are cut (a runaway native
# print must not fill the daemon's log or memory with one line).
MAX_LOG_LINE_CHARS = 8192
# The loggers a runner's records may name: orc's own (llama.cpp's log is `orc.llama_cpp`).
_LOGGER_NAME = re.compile(r"^orc(\.[A-Za-z0-9_]+){0,8}$")


@dataclass(frozen=True)
class LogLine:
    """One record from a runner: which orc logger, at which level (at most WARNING), saying what."""

    logger: str
    level: int
    message: str


def parse_log_line(line: str) -> LogLine | None:
    """The record a runner's stderr line carries, or None for any other line."""
    if not line.startswith(PREFIX):
        return None
    parts = line[len(PREFIX):].split(" ", 2)
    if len(parts) != 3 or not parts[0].isdigit() or not _LOGGER_NAME.match(parts[1]):
        return None
    # A runner's error is still only a warning of the node's: the node itself is fine.
    level = min(int(parts[0]), logging.WARNING)
    return LogLine(parts[1], level, parts[2].replace("\\n", "\n")[:MAX_LOG_LINE_CHARS])


class RunnerLogHandler(logging.Handler):
    """Writes records as `ORC-LOG` lines to a stream (the runner's stderr)."""

    def __init__(self, stream: object) -> None:
        super().__init__()
        self._stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + logging.Formatter().formatException(record.exc_info)
            text = message.replace("\n", "\\n")  # one record, one line
            self._stream.write(f"{PREFIX}{record.levelno} {record.name} {text}\n")  # type: ignore[attr-defined]
            self._stream.flush()  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - logging must never raise into the runner
            self.handleError(record)
