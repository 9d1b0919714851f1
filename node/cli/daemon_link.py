"""Finding this home's daemon from a command line, also while the daemon is starting.

A daemon holds the home's lock (`orc.node.home.DaemonLock`) from its first moment, and opens
its control socket right after. A command that finds the lock held but no socket yet waits
for the socket (bounded, saying so after a second) instead of concluding that no daemon runs:
that would run in-process, or change files under the daemon's feet.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from typing import Any

from orc.node.home import Home, daemon_holds

STARTUP_PATIENCE = 30.0  # seconds to wait for a daemon holding the lock to open its control socket
SAY_AFTER = 1.0  # seconds of waiting before the command tells the user why nothing happens
POLL_INTERVAL = 0.1


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def find_daemon(home: Home, *, patience: float = STARTUP_PATIENCE, say: Callable[[str], None] = _say,
                clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> Any:
    """A ControlClient of this home's daemon, or None when no daemon runs or starts for it.

    Raises DaemonNotRunning if a daemon holds the lock but opens no socket within `patience` s.
    """
    from orc.node.rpc.client import ControlClient, daemon_answers
    from orc.node.protocol.errors import DaemonNotRunning

    path = home.control_socket
    began = clock()
    said = False
    while True:
        if path.exists() and asyncio.run(daemon_answers(str(path))):
            return ControlClient(str(path))
        if not daemon_holds(home):
            return None  # no daemon (a socket left there is a dead daemon's)
        waited = clock() - began
        if waited >= patience:
            raise DaemonNotRunning(f"the orc-node daemon of this home holds its lock but did not open its control "
                                   f"socket {path} within {patience:.0f} s; see its log")
        if not said and waited >= SAY_AFTER:
            say("waiting for the orc-node daemon to start…")
            said = True
        sleep(POLL_INTERVAL)
