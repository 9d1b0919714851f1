"""A model's runner killed by SIGSEGV mid-generation on one node of a two-node mesh.

    a   created the mesh, serves smollm2, coordinates the run, tagged `alpha`
    b   serves smollm2, tagged `beta`

The agent goes where placement puts it (the victim); its runner there is killed mid-generation.
The run must complete (the agent moved to the other node), the victim's daemon must keep its
pid and keep serving, and the model must come back on the victim (its runner restarted with
the safe settings), so a second agent that requires the victim's tag completes there.
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
"""

TAGS = {"a": "alpha", "b": "beta"}


def on(tag: str) -> str:
    return (f"name: on-{tag}\nagents:\n  - name: short\n    model: {SMOL}\n    max_tokens: 8\n"
            f"    temperature: 0\n    placement: {{require_tags: [{tag}]}}\n")


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
    for tag in TAGS.values():
        (work / f"on-{tag}.yaml").write_text(on(tag))
    try:
        done = a.orc_node("init", "--name", "a")
        assert done.returncode == 0, done.stderr
        a.start("--model", SMOL, "--tag", "alpha", "--threads", "1")
        a.wait_ready()
        b.start("--join", a.invite(), "--name", "b", "--model", SMOL, "--tag", "beta", "--threads", "1")
        b.wait_ready()
        wait_for(lambda: usable_on(a, b), 240, "a to see b with smollm2 warm")
        wait_for(lambda: usable_on(b, a), 240, "b to see a with smollm2 warm")
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


def usable_on(viewer: Node, node: Node) -> dict | None:
    """`node`'s smollm2 as `viewer` sees it, if it is loaded, measured and available."""
    for peer in viewer.live_peers().values():
        if peer.get("name") != node.name:
            continue
        for model in peer["models"]:
            if model["id"] == SMOL and model["loaded"] and model["decode_tokens_per_s"] and not model["unavailable"]:
                return model
    return None


def test_a_runner_killed_by_sigsegv_costs_one_replacement_and_comes_back(lan):
    a, b, work = lan["a"], lan["b"], lan["work"]
    nodes = {"a": a, "b": b}
    watched = Watched(a, work, "run", str(work / "long.yaml"), "List animals.", "--watch", "long")
    name = placed_on(watched, "long", {"a": "", "b": ""})
    victim, other = nodes[name], nodes["b" if name == "a" else "a"]
    daemon_pid = victim.process.pid
    before = runner_pids(daemon_pid)
    assert len(before) == 1, f"{name} should run one runner (smollm2), found {before}"
    runner = before[0]
    watched.wait_for_text("┌ long", 120)
    busy_from = cpu_seconds(runner)
    wait_for(lambda: cpu_seconds(runner) - busy_from > 0.3 or None, 60, f"{name}'s runner to be generating",
             interval=0.05)
    os.kill(runner, signal.SIGSEGV)

    code, _ = watched.finish()
    assert code == 0, watched.text()
    text = watched.text()
    assert f"long moved to {other.name} ({name}:" in text, text
    assert "died: SIGSEGV" in text, text

    # The victim's daemon lived through it, with the same pid, and its log says what happened.
    assert victim.process.poll() is None and victim.process.pid == daemon_pid
    assert victim.status()["mode"] == "daemon"
    assert f"the runner of {SMOL} died: SIGSEGV" in victim.log_text()

    # The model comes back on the victim: a new runner, the model loaded and usable again.
    wait_for(lambda: [p for p in runner_pids(daemon_pid) if p != runner] or None, 120, f"{name}'s runner to restart")
    wait_for(lambda: usable_on(other, victim), 120, f"{other.name} to see smollm2 usable on {name} again")
    tag = TAGS[name]
    done = a.ns.run([python(), "-m", "orc.node.cli.orc", "run", str(work / f"on-{tag}.yaml"), "Say hi.", "--json"],
                    env=a.env, timeout=180, cwd=work)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["results"]["short"]["status"] == "completed"
    assert result["results"]["short"]["node_id"] == victim.status()["node_id"]
    assert victim.process.poll() is None and victim.process.pid == daemon_pid
