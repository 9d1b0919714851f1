"""Whether a journaled run is running: a run in progress holds a shared lock on its journal.

Used by every coordinator of runs in this home (the embedded `Orc`, the daemon's run hub) and by
whoever shows runs, so a run still going somewhere is never called interrupted, nor resumed twice.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

# A run in progress holds a shared lock on its journal (flock, advisory); a reader that can take
# the lock exclusively knows nothing runs it. The kernel drops the lock when the holder dies,
# however it dies, so a killed run is never shown as running.
try:
    import fcntl
except ImportError:  # Windows: no flock; every unfinished run then reads as interrupted
    fcntl = None  # type: ignore[assignment]


@contextlib.contextmanager
def holding(path: Path) -> Iterator[None]:
    """Marks the journal at `path` in use while the block runs (nothing if there is no such file)."""
    if fcntl is None:
        yield
        return
    try:
        stream = open(path, "rb")  # noqa: SIM115 - held for the run, closed below
    except OSError:
        yield  # no journal (journaling off): nothing to mark
        return
    try:
        fcntl.flock(stream.fileno(), fcntl.LOCK_SH)
        yield
    finally:
        stream.close()


def journal_in_use(path: Path) -> bool:
    """Whether a live process is running the run of the journal at `path`."""
    if fcntl is None:
        return False
    try:
        with open(path, "rb") as stream:
            try:
                fcntl.flock(stream.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            return False
    except OSError:
        return False
