"""`orc-node start` hands over to a fresh interpreter: the daemon keeps its pid and its lock, and
imports none of the command line's libraries nor any inference runtime.

One real daemon on loopback (no mDNS) serving only a catalog entry whose file is not a model (its
load fails before any model library is imported), started under `python -X importtime`: the
modules the daemon's own interpreter imported, from its start to its stop, are read from that log.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

# What the daemon's process must not import: the command line's parser and what it brings
# (about 10 MiB of an idle daemon, docs/benchmarks.md), and the inference runtimes, which run in
# runner processes. click is not in the list: uvicorn, which serves the HTTP API, imports it
# (about 1 MiB in the daemon, measured).
NOT_IN_THE_DAEMON = ("typer", "pydantic", "pydantic_core", "rich", "shellingham",
                     "llama_cpp", "mlx", "mlx_lm", "numpy")
PLACEHOLDER = "not-a-model"
IMPORTTIME_HEADER = "import time: self [us] | cumulative | imported package"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _orc_node(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orc.node.cli.orc_node", *args], capture_output=True, text=True,
                          env={**os.environ, "ORC_HOME": str(home)}, timeout=120)


def _serve_only_a_placeholder(home: Path, tmp_path: Path) -> None:
    from orc.node.home import Home
    from orc.node.models.catalog import Catalog

    placeholder = tmp_path / "placeholder.gguf"
    placeholder.write_bytes(b"GGUF" + bytes(28))  # passes the catalog's check ...
    Catalog(Home.locate(home).models_dir).add(placeholder, PLACEHOLDER)
    placeholder.write_bytes(b"not a model, on purpose\n")  # ... then fails the runtime's, before any import


def imported_modules(log: str) -> set[str]:
    """The modules a `-X importtime` log shows the last interpreter that wrote to it importing."""
    last = log.rsplit(IMPORTTIME_HEADER, 1)[-1]
    return {match.group(1) for match in re.finditer(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)$", last, re.M)}


def test_imported_modules_reads_only_the_last_interpreter() -> None:
    log = (f"{IMPORTTIME_HEADER}\nimport time:       100 |        100 | typer\n"
           f"a log line\n{IMPORTTIME_HEADER}\nimport time:       50 |        70 |   grpc._cython\n"
           "import time:        20 |        90 | grpc\n")
    assert imported_modules(log) == {"grpc._cython", "grpc"}


def test_the_daemon_keeps_its_pid_and_lock_and_imports_no_cli_or_runtime(home: Path, tmp_path: Path) -> None:
    assert _orc_node(home, "init", "--name", "lean").returncode == 0
    _serve_only_a_placeholder(home, tmp_path)
    log_path = tmp_path / "daemon.log"
    with log_path.open("w") as log:
        daemon = subprocess.Popen([sys.executable, "-X", "importtime", "-m", "orc.node.cli.orc_node", "start",
                                   "--no-mdns", "--listen", f"127.0.0.1:{_free_port()}", "--api", f"127.0.0.1:{_free_port()}",
                                   "--model", PLACEHOLDER],
                                  stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "ORC_HOME": str(home)})
    try:
        deadline = time.monotonic() + 60
        while True:
            assert daemon.poll() is None, log_path.read_text()[-3000:]
            status = _orc_node(home, "status", "--json")
            if status.returncode == 0 and json.loads(status.stdout)["mode"] == "daemon":
                break
            assert time.monotonic() < deadline, "the daemon did not answer:\n" + log_path.read_text()[-3000:]
            time.sleep(0.3)
        # The process that answers is the one started, now running the daemon's own module.
        command_line = Path(f"/proc/{daemon.pid}/cmdline").read_bytes().split(b"\0")
        assert b"orc.node.cli.daemon_process" in command_line
        lock = next(home.rglob("orc-node.lock"))
        assert lock.read_text().strip() == str(daemon.pid)
        # The placeholder's load fails in its runner, after the daemon answers: wait for it.
        while "could not be loaded" not in log_path.read_text():
            assert time.monotonic() < deadline + 60, "the placeholder never failed:\n" + log_path.read_text()[-3000:]
            time.sleep(0.2)
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            code = daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait(timeout=10)
            raise
    text = log_path.read_text()
    assert code == 0, text[-3000:]
    assert "could not be loaded" in text  # the placeholder failed as intended: no runtime was needed
    assert text.count(IMPORTTIME_HEADER) == 2  # the command line's interpreter, then the daemon's
    modules = imported_modules(text)
    assert "orc.node.daemon.root" in modules and "grpc" in modules
    carried = sorted(name for name in modules if name.split(".")[0] in NOT_IN_THE_DAEMON)
    assert carried == [], f"the daemon's process imported {carried}"
    assert lock.read_text() == ""  # released on the way out


def test_a_failing_daemon_exits_with_its_code_and_one_line(home: Path) -> None:
    assert _orc_node(home, "init").returncode == 0
    (home / "config.yaml").write_text("discovery: [not, a, mapping]\n")
    done = _orc_node(home, "start", "--no-mdns", "--listen", f"127.0.0.1:{_free_port()}")
    assert done.returncode == 2, done.stderr
    assert "orc: error:" in done.stderr and "Traceback" not in done.stderr


def test_the_daemons_process_is_not_started_by_hand(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "orc.node.cli.daemon_process"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and "orc-node start" in done.stderr
