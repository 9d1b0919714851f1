"""Two real daemons on loopback with static peers only (no mDNS, no root needed).

The multi-host behaviour (mDNS, strangers, kills, revocation) is tested in tests/mesh with
network namespaces; this covers what must work anywhere: join over `--peer`, a peer
configured on one side only linking back, `orc run` through the daemon, a clean stop.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import free_port_pair

SMOL = "smollm2-135m-instruct"

pytestmark = pytest.mark.slow


def run(home: Path, module: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ORC_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", f"orc.node.cli.{module}", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def start(home: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "ORC_HOME": str(home)}
    log = (home / "daemon.log").open("w")
    return subprocess.Popen([sys.executable, "-m", "orc.node.cli.orc_node", "start", "--no-mdns", "--no-api", "--model", SMOL,
                             *args], env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def status(home: Path) -> dict:
    done = run(home, "orc_node", "status", "--json")
    return json.loads(done.stdout) if done.returncode == 0 else {}


def live_peers(home: Path) -> set[str]:
    done = run(home, "orc", "peers", "--json")
    if done.returncode != 0:
        return set()
    return {p["node_id"] for p in json.loads(done.stdout) if p["state"] == "verified"}


def test_two_daemons_join_link_run_and_stop(tmp_path):
    a_home, b_home = tmp_path / "a", tmp_path / "b"
    a_home.mkdir()
    b_home.mkdir()
    a_port, b_port = free_port_pair(), free_port_pair()
    assert run(a_home, "orc_node", "init", "--name", "alpha").returncode == 0
    a = start(a_home, "--listen", f"127.0.0.1:{a_port}")
    b = None
    try:
        wait_for(lambda: status(a_home).get("mode") == "daemon", 60, "A to answer")
        invited = run(a_home, "orc_node", "invite")
        assert invited.returncode == 0, invited.stderr
        token = invited.stdout.strip()
        assert f"127.0.0.1:{a_port + 1}" in invited.stderr  # the join server opened next to the mesh port
        # B names A as a static peer; A is told nothing about B and must link back.
        b = start(b_home, "--listen", f"127.0.0.1:{b_port}", "--join", token, "--name", "beta",
                  "--peer", f"127.0.0.1:{a_port}")
        wait_for(lambda: status(b_home).get("mode") == "daemon", 60, "B to join and answer")
        a_id, b_id = status(a_home)["node_id"], status(b_home)["node_id"]
        assert status(a_home)["mesh_id"] == status(b_home)["mesh_id"]
        wait_for(lambda: live_peers(b_home) == {a_id}, 30, "B to verify A")
        wait_for(lambda: live_peers(a_home) == {b_id}, 30, "A to link back to B")

        ensemble = tmp_path / "one.yaml"
        ensemble.write_text(f"name: one\nagents:\n  - name: answer\n    model: {SMOL}\n    max_tokens: 8\n"
                            "    temperature: 0\n")
        done = run(b_home, "orc", "run", str(ensemble), "Say hi.", "--json")
        assert done.returncode == 0, done.stderr
        # B coordinates; placement may pick either node (both serve the model).
        answer = json.loads(done.stdout)["results"]["answer"]
        assert answer["node_id"] in {a_id, b_id} and answer["nodes"] == [answer["node_id"]]
        assert answer["attempts"] == 1
        local = run(b_home, "orc", "run", str(ensemble), "Say hi.", "--json", "--local")
        assert json.loads(local.stdout)["results"]["answer"]["node_id"] == "local"

        b.send_signal(signal.SIGTERM)
        assert b.wait(timeout=30) == 0
        assert not (b_home / "orc-node.sock").exists()
        assert "stopped" in (b_home / "daemon.log").read_text()
        # Restarting keeps the identity and needs no token.
        b = start(b_home, "--listen", f"127.0.0.1:{b_port}", "--peer", f"127.0.0.1:{a_port}")
        wait_for(lambda: status(b_home).get("node_id") == b_id and status(b_home).get("mode") == "daemon", 60,
                 "B to restart as the same node")
        wait_for(lambda: live_peers(a_home) == {b_id}, 30, "A to see B again")
    finally:
        for process in (a, b):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
