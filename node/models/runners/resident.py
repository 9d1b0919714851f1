"""How much memory a process holds now (its resident set), for a runner's `Loaded` and `Stats`."""

from __future__ import annotations

import os
import sys

__all__ = ["resident_bytes"]


def resident_bytes(pid: int | None = None) -> int:
    """Resident bytes of process `pid` (default: this one); 0 when the system does not say.

    Linux reads /proc/PID/statm; elsewhere only this process's peak is known (getrusage).
    """
    try:
        with open(f"/proc/{pid or 'self'}/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    if pid is not None:
        return 0
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux
