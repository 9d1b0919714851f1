"""A model's runner killed by SIGSEGV mid-generation on one node of a two-node mesh.

    a   created the mesh, serves smollm2, coordinates the run
    b   serves smollm2, tagged `worker`: the agent prefers it

The run must complete (the agent moved to `a`), `b`'s daemon must keep its pid and keep
serving, and the model must come back on `b` (its runner restarted with the safe settings),
so a second agent that requires `b` completes there.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import netns
import pytest
from nodes import Node, Watched, placed_on, python, wait_for

SMOL = "smollm2-135m-instruct"
pytestmark = pytest.mark.slow

LONG = f"""\
name: long
agents:
  - name: long
    model: {SMOL}
    system_prompt: "You write very long numbered lists. Never stop early."
    max_tokens: 400
    temperature: 0
    placement: {{prefer_tags: [worker]}}
"""

ON_B = f"""\
name: on-b
agents:
  - name: short
    model: {SMOL}
    max_tokens: 8
    temperature: 0
    placement: {{require_tags: [worker]}}
"""


def runner_pids(daemon_pid: int) -> list[int]:
    """The runner processes that are children of `daemon_pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == daemon_pid and "runners" in cmdline:
            found.append(int(entry.name))
    return found


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.fixture(scope="module")
def lan(tmp_path_factory):
    netns.require_netns()
    mesh = netns.NamespaceLan.create(2)
    root = tmp_path_factory.mktemp("runner-crash")
    os.chmod(root, 0o755)
    a = Node(mesh[0], root / "a", "a")
    b = Node(mesh[1], root / "b", "b")
    for node in (a, b):
        node.home.mkdir()
    work = root / "work"
    work.mkdir()
    (work / "long.yaml").write_text(LONG)
    (work / "on-b.yaml").write_text(ON_B)
    try:
        done = a.orc_node("init", "--name", "a")
        assert done.returncode == 0, done.stderr
        a.start("--model", SMOL, "--threads", "1")
        a.wait_ready()
        b.start("--join", a.invite(), "--name", "b", "--model", SMOL, "--tag", "worker", "--threads", "1")
        b.wait_ready()
        wait_for(lambda: model_on_b(a, usable=True), 240, "a to see b with smollm2 warm")
        yield {"a": a, "b": b, "work": work}
    finally:
        for node in (a, b):
            if node.process is not None and node.process.poll() is None:
                node.process.send_signal(signal.SIGTERM)
        for node in (a, b):
            if node.process is not None:
                try:
                    node.process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    node.process.kill()
        mesh.close()


def model_on_b(a: Node, *, usable: bool) -> dict | None:
    """b's smollm2 as a sees it, if it is loaded, measured and available (`usable`)."""
    for peer in a.live_peers().values():
        if peer.get("name") != "b":
            continue
        for model in peer["models"]:
            if model["id"] == SMOL and (not usable or (model["loaded"] and model["decode_tokens_per_s"]
                                                       and not model.get("unavailable"))):
                return model
    return None


def test_a_runner_killed_by_sigsegv_costs_one_replacement_and_comes_back(lan):
    a, b, work = lan["a"], lan["b"], lan["work"]
    daemon_pid = b.process.pid
    before = runner_pids(daemon_pid)
    assert len(before) == 1, f"b should run one runner (smollm2), found {before}"
    runner = before[0]

    watched = Watched(a, work, "run", str(work / "long.yaml"), "List animals.", "--watch", "long")
    assert placed_on(watched, "long", {"a": "", "b": ""}) == "b"
    watched.wait_for_text("┌ long", 120)
    busy_from = cpu_seconds(runner)
    wait_for(lambda: cpu_seconds(runner) - busy_from > 0.3 or None, 60, "b's runner to be generating",
             interval=0.05)
    os.kill(runner, signal.SIGSEGV)

    code, _ = watched.finish()
    assert code == 0, watched.text()
    text = watched.text()
    assert "long moved to a (b:" in text, text
    assert "died: SIGSEGV" in text, text

    # b's daemon lived through it, with the same pid, and its log says what happened once.
    assert b.process.poll() is None
    assert b.status()["mode"] == "daemon"
    assert f"the runner of {SMOL} died: SIGSEGV" in b.log_text()

    # The model comes back on b: a new runner, the model loaded and usable again.
    wait_for(lambda: [p for p in runner_pids(daemon_pid) if p != runner] or None, 120, "b's runner to restart")
    wait_for(lambda: model_on_b(a, usable=True), 120, "a to see smollm2 usable on b again")
    done = a.ns.run([python(), "-m", "orc.node.cli.orc", "run", str(work / "on-b.yaml"), "Say hi.", "--json"],
                    env=a.env, timeout=180, cwd=work)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["results"]["short"]["status"] == "completed"
    assert result["results"]["short"]["node_id"] == b.status()["node_id"]
    assert b.process.pid == daemon_pid and b.process.poll() is None

