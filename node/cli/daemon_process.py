"""The process an `orc-node start` daemon runs in: a fresh interpreter, free of the command line's libraries.

`orc-node start` parses its flags with typer and takes the home's lock, then `hand_over` replaces
that process (`os.execv`: the same pid, the lock's descriptor kept open) with
`python -m orc.node.cli.daemon_process HANDOVER`, which runs the daemon until SIGTERM or SIGINT.
typer brings pydantic and its own copy of click; a daemon that kept them would carry about
10 MiB it never uses again (docs/benchmarks.md, "Idle daemon footprint"). So this module, and
what it imports before the daemon runs, import no typer (tests/node/cli/test_daemon_process.py).

HANDOVER is one JSON object: the home's three folders, the descriptor of its lock, `--debug`, and
the flags of `orc-node start` (`DaemonOptions`' fields). It is the command line the user typed,
parsed: a `--join` token in it is exactly as visible as it was in that command line. Exit codes
are `orc-node start`'s (`errors.exit_code_for`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, NoReturn

from orc.node.home import DaemonLock, Home

OPTION_FIELDS = ("listen", "interface", "join", "name", "peers", "models", "mdns", "tags", "threads", "api", "no_api")
LIST_FIELDS = ("peers", "models", "tags")  # tuples in DaemonOptions, lists in JSON


def hand_over(home: Home, lock: DaemonLock, options: dict[str, Any], debug: bool) -> NoReturn:
    """Replace this process by the daemon's own (this module's `main`), keeping its pid and `lock`.

    `options` holds `DaemonOptions`' fields. The interpreter's flags (`-X importtime`, `-W`, ...)
    carry over; so does the environment. Raises OSError if the interpreter cannot be exec'd (the
    lock is then still held by this process).
    """
    assert set(options) == set(OPTION_FIELDS), sorted(options)
    handover = {"config_dir": str(home.config_dir), "data_dir": str(home.data_dir), "state_dir": str(home.state_dir),
                "lock_fd": lock.keep_across_exec(), "debug": debug, "options": options}
    # The interpreter's own flags, as multiprocessing passes them to its children.
    flags = subprocess._args_from_interpreter_flags()  # noqa: SLF001 - stable since Python 3.2
    for stream in (sys.stdout, sys.stderr):
        stream.flush()  # what the command printed must not be lost with its buffers
    os.execv(sys.executable, [sys.executable, *flags, "-m", __name__, json.dumps(handover)])


def configure_logging(debug: bool) -> None:
    """The daemon logs to stderr: INFO (DEBUG with `--debug`), its libraries only from WARNING."""
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    for noisy in ("grpc", "zeroconf", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run(home: Home, lock: DaemonLock, options: dict[str, Any]) -> None:
    """Run the daemon over `home`, holding `lock`, until SIGTERM or SIGINT; releases the lock."""
    try:
        from orc.node.daemon.root import Daemon, DaemonOptions

        values = {name: tuple(options[name]) if name in LIST_FIELDS else options[name] for name in OPTION_FIELDS}
        asyncio.run(_serve(Daemon(home, DaemonOptions(**values), lock=lock)))
    finally:
        lock.release()


async def _serve(daemon: Any) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await daemon.run(stop)


def main(argv: list[str]) -> int:
    """The daemon's process, from `hand_over`'s HANDOVER; its exit code."""
    from orc.node.cli.errors import error_exit
    from orc.node.cli.terminal import for_stream

    if len(argv) != 1:
        sys.stderr.write("orc: error: this is the daemon's process; start it with `orc-node start`\n")
        return 2
    handover = json.loads(argv[0])
    debug = bool(handover["debug"])
    configure_logging(debug)
    try:
        home = Home(Path(handover["config_dir"]), Path(handover["data_dir"]), Path(handover["state_dir"]))
        run(home, DaemonLock.inherit(home, int(handover["lock_fd"])), handover["options"])
    except KeyboardInterrupt:
        sys.stderr.write("orc: interrupted\n")
        return 130
    except Exception as error:  # noqa: BLE001 - the process boundary, as `errors.guarded` for commands
        code, line = error_exit(error, debug)
        sys.stderr.write(for_stream(line, sys.stderr) + "\n")
        return code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
