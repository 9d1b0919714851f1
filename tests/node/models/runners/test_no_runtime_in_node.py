"""The node's own process imports neither llama_cpp nor mlx: its runners do.

Checked twice: in a fresh interpreter that imports both composition roots and builds their
runtimes and estimates (sys.modules), and on a real `orc-node start` that served a generation
(the libraries mapped into the daemon's memory, /proc/PID/maps, against its runner's)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import child_pids, free_port_pair

from orc.node.models.catalog import DEFAULT_MODEL_ID

NO_MODEL_LIBRARY = """
import sys
from pathlib import Path
from orc.node.home import Home
from orc.node.daemon.root import Daemon, DaemonOptions
from orc.node.api import Orc
import orc.node.cli.orc, orc.node.cli.orc_node, orc.node.worker.service, orc.node.coordinator.placer

home = Home.locate(sys.argv[1])
home.prepare()
daemon_runtimes = Daemon(home, DaemonOptions(mdns=False))._runtimes()
orc = Orc(home)
entry = orc.catalog.prepare("{model}")
for runtimes in (daemon_runtimes, orc.runtimes()):
    for runtime in runtimes.values():
        runtime.memory_estimate(entry), runtime.context_tokens(entry), runtime.capacity(entry)
        runtime.unavailable_reason(entry)
print(sorted(runtimes))
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("llama_cpp", "mlx", "mlx_lm"))
print(loaded)
"""


def test_the_roots_build_runtimes_and_estimate_without_importing_a_model_library(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", NO_MODEL_LIBRARY.format(model=DEFAULT_MODEL_ID), str(tmp_path / "h")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    names, loaded = done.stdout.strip().splitlines()
    assert "llama_cpp" in names
    assert loaded == "[]"


def maps(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.slow
def test_a_serving_daemon_maps_no_model_library_and_its_runner_maps_libllama(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "ORC_HOME": str(home)}

    def cli(module: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", f"orc.node.cli.{module}", *args], capture_output=True, text=True,
                              env=env, timeout=300)

    assert cli("orc_node", "init", "--name", "solo").returncode == 0
    log = (home / "daemon.log").open("w")
    daemon = subprocess.Popen([sys.executable, "-m", "orc.node.cli.orc_node", "start", "--no-mdns", "--no-api", "--threads", "2",
                               "--model", DEFAULT_MODEL_ID, "--listen", f"127.0.0.1:{free_port_pair()}"],
                              env=env, stdout=log, stderr=subprocess.STDOUT)
    runners: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while True:
            status = cli("orc_node", "status", "--json")
            if status.returncode == 0 and json.loads(status.stdout).get("mode") == "daemon":
                break
            assert daemon.poll() is None and time.monotonic() < deadline, (home / "daemon.log").read_text()
            time.sleep(0.3)
        (tmp_path / "one.yaml").write_text(f"name: one\nagents:\n  - name: answer\n    model: {DEFAULT_MODEL_ID}\n"
                                           "    max_tokens: 8\n    temperature: 0\n")
        ran = cli("orc", "run", str(tmp_path / "one.yaml"), "Hello.", "--json")
        assert ran.returncode == 0, ran.stderr
        assert json.loads(ran.stdout)["results"]["answer"]["node_id"] != "local"  # the daemon's runner generated it
        runners = child_pids(daemon.pid)
        assert runners, "the daemon has no runner process"
        daemon_maps = maps(daemon.pid)
        assert "libllama" not in daemon_maps and "libggml" not in daemon_maps
        assert "libmlx" not in daemon_maps and "/mlx/" not in daemon_maps
        assert any("libllama" in maps(pid) for pid in runners)
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(60)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait(30)
        log.close()
    assert daemon.returncode == 0, (home / "daemon.log").read_text()
    # The daemon stopped its runners on the way out.
    assert [pid for pid in runners if Path(f"/proc/{pid}").exists()] == []
