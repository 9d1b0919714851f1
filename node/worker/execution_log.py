"""The execution log: one JSON line for every execution this node served, for any caller, and
one for every lease a caller took here and never used (`outcome: lease_expired_unused`).

It is how the owner of a device sees exactly what peers asked it to run: who (the caller's node
id), for which run and agent, on which model, how it ended and how long it took. It records the
size of the prompt, never its text: the log must not become a copy of everyone's data.

Each line carries `at` (unix seconds) and `date`, the same instant as an ISO 8601 UTC date-time
for people reading the file.

Writing never raises into the caller (an execution must not fail because the disk is full); a
failure is logged once and the line dropped. The file is created 0600, in a folder that must
already exist, and rotated to `<path>.1` (one older generation kept) before it would pass
`max_bytes`, so a busy node's log stays bounded. A symbolic link planted at either name is
never followed: the write is refused (and logged) instead.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from orc.node.home import UnsafeFile, open_private

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 4 * 2**20


@dataclass(frozen=True)
class ExecutionRecord:
    """One served execution, as the log keeps it."""

    at: float  # unix seconds when the request arrived
    caller: str  # node id of the node that asked (this node's own id for its own work)
    run_id: str
    agent: str
    model: str  # "id@runtime" when this node serves it, else the id the caller asked for
    execution_id: str
    prompt_chars: int  # characters of all messages together; the text itself is never logged
    outcome: str  # "completed" | "failed:<code>" | "cancelled" | "refused"
    seconds: float  # from arrival to the end, queueing included
    queued_s: float | None = None  # waiting for a slot before generating; None if it never started


@dataclass(frozen=True)
class UnusedLeaseRecord:
    """A lease this node granted that expired without an execution quoting it: a place held for
    nothing. Repeated ones from one caller are what hoarding looks like in the log."""

    at: float  # unix seconds when the lease was granted
    caller: str  # node id of the node that took the lease
    run_id: str  # the run and agent its Offer named
    agent: str
    model: str  # "id@runtime"
    lease_id: str
    seconds: float  # how long it held the place
    outcome: str = "lease_expired_unused"


AuditRecord = ExecutionRecord | UnusedLeaseRecord


class ExecutionLog:
    """Appends `ExecutionRecord`s (and `UnusedLeaseRecord`s) as JSON lines to `path`, rotating at `max_bytes`."""

    def __init__(self, path: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._failing = False  # a failure was logged; stay quiet until a write succeeds again

    def append(self, record: AuditRecord) -> None:
        """Write one line for `record`; never raises (a failure is logged once and dropped)."""
        line = (json.dumps(_fields(record), sort_keys=True) + "\n").encode()
        try:
            self._rotate_for(len(line))
            fd = open_private(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            try:
                if hasattr(os, "fchmod"):
                    os.fchmod(fd, 0o600)  # also when an older file was made with looser modes
                os.write(fd, line)
            finally:
                os.close(fd)
        except OSError as error:
            if not self._failing:
                log.warning("cannot write the execution log %s (%s); executions go unlogged until it works",
                            self.path, error)
            self._failing = True
            return
        if self._failing:
            log.info("the execution log %s is written again", self.path)
        self._failing = False

    def _rotate_for(self, incoming: int) -> None:
        """Move the file to `.1` (replacing the older generation) if `incoming` bytes would pass the limit."""
        try:
            status = os.lstat(self.path)  # the link itself, never what a planted link points to
        except FileNotFoundError:
            return
        if not stat.S_ISREG(status.st_mode):
            raise UnsafeFile(f"{self.path} is not a regular file (a symbolic link?); orc does not follow links "
                             "in its home: remove it")
        if status.st_size and status.st_size + incoming > self.max_bytes:
            os.replace(self.path, self.path.with_suffix(".1"))  # rename moves names, following no link


def _fields(record: ExecutionRecord) -> dict[str, Any]:
    """The record as one JSON object: its fields, plus `date`, its `at` in ISO 8601 UTC."""
    fields = asdict(record)
    fields["date"] = utc_date(record.at)
    return fields


def utc_date(unix: float) -> str:
    """`unix` seconds as an ISO 8601 UTC date-time to the millisecond, e.g. 2025-05-01T09:30:00.250Z."""
    return datetime.fromtimestamp(unix, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def read(path: Path) -> list[dict[str, Any]]:
    """The records in a log file, oldest first, as dicts; damaged lines are skipped, a missing file is empty."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    records = []
    for raw in data.splitlines():
        try:
            record = json.loads(raw.decode())
        except (UnicodeDecodeError, ValueError):
            continue  # a torn last line after a crash, or junk: the others are still good
        if isinstance(record, dict):
            records.append(record)
    return records
