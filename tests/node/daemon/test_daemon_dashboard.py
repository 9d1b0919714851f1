"""The dashboard's wiring in a real daemon: `orc run` through the control socket passes through the
daemon's run hub (the page sees it, and can cancel and resume it), the mesh is the running node,
and the page's own runs stop with the daemon."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from support import free_port_pair

SMOL = "smollm2-135m-instruct"

pytestmark = pytest.mark.slow

GATED = f"""name: gated
agents:
  - name: wait
    script: gate.py
    timeout_seconds: 120
  - name: say
    depends_on: [wait]
    model: {SMOL}
    temperature: 0
    max_tokens: 4
"""
GATE_SCRIPT = """import json, os, sys, time
path = json.load(sys.stdin)["input_data"]
while not os.path.exists(path):
    time.sleep(0.05)
print(json.dumps({"opened": True}))
"""


def env(home: Path) -> dict[str, str]:
    return {**os.environ, "ORC_HOME": str(home)}


def cli(home: Path, module: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", f"orc.node.cli.{module}", *args], capture_output=True, text=True,
                          env=env(home), timeout=300)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.6)  # within the key's rate (120 a minute)
    raise AssertionError(f"timed out waiting for {what}")


def test_runs_of_the_control_socket_and_of_the_page_meet_in_the_daemons_hub(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    assert cli(home, "orc_node", "init", "--name", "alpha").returncode == 0
    key = cli(home, "orc_node", "api-key", "create", "--name", "page").stdout.strip()
    (tmp_path / "gated.yaml").write_text(GATED)
    (tmp_path / "gate.py").write_text(GATE_SCRIPT)
    api = f"http://127.0.0.1:{free_port()}"
    log = (home / "daemon.log").open("w")
    daemon = subprocess.Popen([sys.executable, "-m", "orc.node.cli.orc_node", "start", "--no-mdns", "--model", SMOL,
                               "--listen", f"127.0.0.1:{free_port_pair()}", "--api", api.removeprefix("http://")],
                              env=env(home), stdout=log, stderr=subprocess.STDOUT)
    http = httpx.Client(base_url=api, headers={"Authorization": f"Bearer {key}"}, timeout=60)
    orc_run = None
    try:
        def up() -> bool:
            try:
                return http.get("/api/mesh").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, 90, "the daemon's API")
        mesh = http.get("/api/mesh").json()
        assert mesh["nodes"][0]["name"] == "alpha" and mesh["nodes"][0]["state"] == "self"
        assert mesh["self"] == mesh["nodes"][0]["node_id"]
        assert any(m["id"] == SMOL for m in mesh["nodes"][0]["models"])

        # `orc run` through the control socket, seen by the page, cancelled from it.
        gate = tmp_path / "gate-open"
        orc_run = subprocess.Popen([sys.executable, "-m", "orc.node.cli.orc", "run", str(tmp_path / "gated.yaml"),
                                    str(gate), "--json"], env=env(home), cwd=tmp_path, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        listed = wait_for(lambda: [r for r in http.get("/api/runs").json()["runs"] if r["active"]], 60,
                          "the CLI's run in the hub")
        run_id = listed[0]["run_id"]
        wait_for(lambda: http.get(f"/api/runs/{run_id}").json()["agents"]["wait"]["status"] == "running", 60,
                 "its script to start")
        assert http.post(f"/api/runs/{run_id}/cancel").status_code == 200
        _, stderr = orc_run.communicate(timeout=60)
        assert orc_run.returncode != 0 and "cancelled" in stderr
        run = wait_for(lambda: (r := http.get(f"/api/runs/{run_id}").json())["status"] == "interrupted" and r, 30,
                       "the run to read as interrupted")
        assert run["events"][0]["type"] == "run_began"  # type: ignore[index]

        # The page resumes it; the daemon owns it now.
        assert http.post(f"/api/runs/{run_id}/resume").status_code == 201
        gate.write_text("open")
        done = wait_for(lambda: (r := http.get(f"/api/runs/{run_id}").json())["status"] == "completed" and r, 120,
                        "the resumed run to complete")
        assert done["agents"]["say"]["status"] == "completed"  # type: ignore[index]
        shown = cli(home, "orc", "runs", "show", run_id, "--json")
        assert json.loads(shown.stdout)["status"] == "completed"

        # A run the page started stops with the daemon; its journal says interrupted.
        started = http.post("/api/runs", json={"ensemble": "gated", "input": str(tmp_path / "never")})
        assert started.status_code == 404  # the daemon's ensembles are its home's, not this folder's
        (home / "ensembles").mkdir(exist_ok=True)
        (home / "ensembles" / "gated.yaml").write_text(GATED)
        (home / "ensembles" / "gate.py").write_text(GATE_SCRIPT)
        started = http.post("/api/runs", json={"ensemble": "gated", "input": str(tmp_path / "never")})
        assert started.status_code == 201
        page_run = started.json()["run_id"]
        wait_for(lambda: http.get(f"/api/runs/{page_run}").json()["agents"]["wait"]["status"] == "running", 60,
                 "the page's run to start")
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
        after = cli(home, "orc", "runs", "show", page_run, "--json")
        assert json.loads(after.stdout)["status"] == "interrupted"
    finally:
        http.close()
        for process in (orc_run, daemon):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
