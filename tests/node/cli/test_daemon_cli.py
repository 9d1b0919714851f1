"""`orc` talking to a running daemon of its home: a relative ensemble path is the caller's, not
the daemon's. One real daemon on loopback (no mDNS), script agents only."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support import write

pytestmark = pytest.mark.slow

ECHO = """\
import json, sys
req = json.load(sys.stdin)
print(json.dumps({"echo": req["input_data"]}))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(module: str, home: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ORC_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", f"orc.node.cli.{module}", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=120)


def test_a_relative_path_resolves_in_the_callers_folder(home, tmp_path):
    daemon_folder, caller = tmp_path / "elsewhere", tmp_path / "project"
    daemon_folder.mkdir()
    write(caller, "scripts/echo.py", ECHO)
    write(caller, "small.yaml", "name: small\nagents:\n  - {name: only, script: scripts/echo.py}\n")
    assert _cli("orc_node", home, "init", "--name", "solo", cwd=daemon_folder).returncode == 0
    # The mesh and join servers take PORT and PORT + 1; a clash fails the start, and the wait below says so.
    port = _free_port()
    log = (tmp_path / "daemon.log").open("w")
    daemon = subprocess.Popen([sys.executable, "-m", "orc.node.cli.orc_node", "start", "--no-mdns", "--no-api",
                               "--listen", f"127.0.0.1:{port}"], cwd=daemon_folder, stdout=log,
                              stderr=subprocess.STDOUT, env={**os.environ, "ORC_HOME": str(home)})
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and daemon.poll() is None:
            status = _cli("orc_node", home, "status", "--json", cwd=caller)
            if status.returncode == 0 and json.loads(status.stdout)["mode"] == "daemon":
                break
            time.sleep(0.3)
        else:
            raise AssertionError("the daemon did not answer: " + (tmp_path / "daemon.log").read_text()[-2000:])
        done = _cli("orc", home, "run", "./small.yaml", "hello", "--json", cwd=caller)
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        assert result["deliverable"] == {"echo": "hello"}
        assert result["results"]["only"]["node_id"] != "local"  # the daemon ran it, not an embedded node
        plain = _cli("orc", home, "run", "small.yaml", "hi", cwd=caller)
        assert plain.returncode == 0, plain.stderr
        missing = _cli("orc", home, "run", "./absent.yaml", "hi", cwd=caller)
        assert missing.returncode == 2 and f"no file ./absent.yaml ({caller} has no 'absent.yaml')" in missing.stderr
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait(timeout=10)
        log.close()
