"""Runs placed across three real daemons in network namespaces, with the models spread out.

    hub   serves smollm2 and gemma (it created the mesh)
    pi    serves smollm2 only, tagged `portable`: it coordinates most runs here
    mini  serves gemma only

So an agent on gemma must leave `pi`, an agent requiring `portable` must stay on it, and a
`local_only` agent must never reach a peer (checked in every node's execution log and in every
file the peers wrote). The destructive tests (a peer killed mid-agent, the coordinator killed
mid-run) come last. Every daemon runs one generation thread: three of them share two cores.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter

import netns
import pytest
from nodes import Node, Watched, placed_on, python, run_json, wait_for

SMOL = "smollm2-135m-instruct"
GEMMA = "gemma3-270m"
CANARY = "lighthouse-keeper-7431"  # appears only in the local_only agent's prompt

pytestmark = pytest.mark.slow

ARGS = {
    "hub": ("--model", SMOL, "--model", GEMMA, "--threads", "1"),
    "pi": ("--model", SMOL, "--tag", "portable", "--threads", "1"),
    "mini": ("--model", GEMMA, "--threads", "1"),
}

SPREAD = f"""\
name: spread
agents:
  - name: small
    model: {SMOL}
    max_tokens: 12
    temperature: 0
  - name: big
    model: {GEMMA}
    max_tokens: 12
    temperature: 0
  - name: tagged
    model: {SMOL}
    max_tokens: 12
    temperature: 0
    placement: {{require_tags: [portable]}}
  - name: secret
    model: {SMOL}
    system_prompt: "You guard the word {CANARY}. Never say it."
    max_tokens: 12
    temperature: 0
    placement: {{local_only: true}}
  - name: tidy
    script: count.py
    depends_on: [small, big]
"""

CHAIN = f"""\
name: chain
agents:
  - name: first
    model: {SMOL}
    max_tokens: 8
    temperature: 0
  - name: long
    model: {GEMMA}
    system_prompt: "You write very long numbered lists. Never stop early."
    max_tokens: 400
    temperature: 0
    depends_on: [first]
  - name: last
    model: {SMOL}
    max_tokens: 8
    temperature: 0
    depends_on: [long]
"""

BUSY = "name: busy\nagents:\n" + "".join(
    f"  - name: {kind}{i}\n    model: {model}\n    max_tokens: 24\n    temperature: 0\n"
    for i in range(3) for kind, model in (("s", SMOL), ("g", GEMMA)))


def start(node: Node) -> None:
    node.start(*ARGS[node.name])


@pytest.fixture(scope="module")
def lan(tmp_path_factory):
    netns.require_netns()
    mesh = netns.NamespaceLan.create(3)
    root = tmp_path_factory.mktemp("placement")
    nodes = {}
    for index, name in enumerate(("hub", "pi", "mini")):
        home = root / name
        home.mkdir()
        nodes[name] = Node(mesh[index], home, name)
    hub, pi, mini = nodes["hub"], nodes["pi"], nodes["mini"]
    work = root / "work"
    work.mkdir()
    os.chmod(root, 0o755)
    try:
        done = hub.orc_node("init", "--name", "hub")
        assert done.returncode == 0, done.stderr
        start(hub)
        hub.wait_ready()
        for node in (pi, mini):
            node.start("--join", hub.invite(), "--name", node.name, *ARGS[node.name])
        for node in (pi, mini):
            node.wait_ready()
        for name, text in (("spread", SPREAD), ("chain", CHAIN), ("busy", BUSY)):
            (work / f"{name}.yaml").write_text(text)
        (work / "count.py").write_text(
            "import json, sys\n"
            "request = json.load(sys.stdin)\n"
            "outputs = [d['output'] for d in request['dependencies'].values() if d['status'] == 'completed']\n"
            "json.dump({'words': sum(len(str(o).split()) for o in outputs)}, sys.stdout)\n")
        ids = {n.name: n.status()["node_id"] for n in nodes.values()}
        wait_until_warm(nodes.values())
        yield {"nodes": nodes, "ids": ids, "work": work, "mesh": mesh}
    finally:
        for node in nodes.values():
            if node.process is not None and node.process.poll() is None:
                node.process.send_signal(signal.SIGTERM)
        for node in nodes.values():
            if node.process is not None:
                try:
                    node.process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    node.process.kill()
        mesh.close()


def wait_until_warm(nodes, timeout: float = 240) -> None:
    """Every running node sees every other running one, with every model loaded and measured."""
    running = [n for n in nodes if n.process is not None and n.process.poll() is None]

    def warm():
        for viewer in running:
            live = viewer.live_peers()
            if len(live) != len(running) - 1:
                return False
            if not all(m["loaded"] and m["decode_tokens_per_s"] for p in live.values() for m in p["models"]):
                return False
        return True

    wait_for(warm, timeout, "every node to see the others with their models warm")


def executions(node: Node) -> list[dict]:
    path = node.home / "executions.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ---- placement follows the models ----

def test_plan_shows_candidates_exclusions_and_estimates(lan):
    pi, ids, work = lan["nodes"]["pi"], lan["ids"], lan["work"]
    plan = run_json(pi, lan["work"], "plan", str(work / "spread.yaml"), "Name a colour.", "--json")
    agents = plan["agents"]
    assert plan["coordinator"] == ids["pi"]

    def rejected(agent):
        return {r["node_id"]: r["reason"] for r in agents[agent]["rejected"]}

    def candidates(agent):
        return [c["node_id"] for c in agents[agent]["candidates"]]

    assert set(candidates("big")) == {ids["hub"], ids["mini"]}
    assert rejected("big") == {ids["pi"]: "no such model"}
    assert set(candidates("small")) == {ids["hub"], ids["pi"]}
    assert rejected("small") == {ids["mini"]: "no such model"}
    assert candidates("tagged") == [ids["pi"]]
    assert rejected("tagged") == {ids["hub"]: "missing tag", ids["mini"]: "missing tag"}
    assert candidates("secret") == [ids["pi"]]
    assert rejected("secret") == {ids["hub"]: "local_only", ids["mini"]: "local_only"}
    assert agents["tidy"]["kind"] == "script" and agents["tidy"]["choice"] == ids["pi"]
    for agent in ("small", "big", "tagged", "secret"):
        assert agents[agent]["choice"] == candidates(agent)[0]
        finishes = [c["finish_s"] for c in agents[agent]["candidates"]]
        assert all(f > 0 for f in finishes)
        best = agents[agent]["candidates"][0]
        assert best["decode_s"] > 0 and best["warm"] is True
    # Nothing ran: no node logged an execution.
    assert not any(executions(node) for node in lan["nodes"].values())
    text = pi.ns.run([python(), "-m", "orc.node.cli.orc", "plan", str(work / "spread.yaml"), "Name a colour."], env=pi.env,
                     timeout=60, cwd=lan["work"])
    assert text.returncode == 0, text.stderr
    assert "no such model" in text.stdout and "local_only" in text.stdout and "missing tag" in text.stdout


def test_what_no_node_can_run_is_refused_before_anything_runs(lan):
    pi, work = lan["nodes"]["pi"], lan["work"]
    cases = {
        "nowhere": ("model: llama-7b", "no live node has model 'llama-7b'"),
        "untagged": (f"model: {SMOL}\n    placement: {{require_tags: [gpu]}}", "no node has the tags it requires (gpu)"),
        "homeless": (f"model: {GEMMA}\n    placement: {{local_only: true}}",
                     f"it is local_only, and this node does not serve model '{GEMMA}'"),
    }
    before = [executions(node) for node in lan["nodes"].values()]
    for name, (body, message) in cases.items():
        path = work / f"{name}.yaml"
        path.write_text(f"name: {name}\nagents:\n  - name: a\n    {body}\n")
        for command in ("run", "plan"):
            done = pi.ns.run([python(), "-m", "orc.node.cli.orc", command, str(path), "hi"], env=pi.env, timeout=60)
            assert done.returncode == 3, (name, command, done.stderr)
            assert message in done.stderr and "Traceback" not in done.stderr
            assert len(done.stderr.strip().splitlines()) == 1
    assert [executions(node) for node in lan["nodes"].values()] == before


def test_a_run_follows_the_models_and_keeps_local_only_at_home(lan):
    nodes, ids, work = lan["nodes"], lan["ids"], lan["work"]
    pi = nodes["pi"]
    done = pi.ns.run([python(), "-m", "orc.node.cli.orc", "run", str(work / "spread.yaml"), "Name a colour.", "--json",
                      "--explain"], env=pi.env, timeout=300, cwd=lan["work"])
    assert done.returncode == 0, done.stderr
    assert "placement for spread" in done.stderr  # --explain, even with --json
    result = json.loads(done.stdout)
    results = result["results"]
    assert result["status"] == "completed"
    assert results["big"]["node_id"] in {ids["hub"], ids["mini"]}
    assert results["small"]["node_id"] in {ids["hub"], ids["pi"]}
    assert results["tagged"]["node_id"] == ids["pi"] and results["secret"]["node_id"] == ids["pi"]
    assert results["tidy"]["node_id"] == ids["pi"]
    for name in ("small", "big", "tagged", "secret"):
        assert results[name]["attempts"] == 1 and results[name]["nodes"] == [results[name]["node_id"]]
        assert results[name]["usage"]["completion_tokens"] > 0
    run_id = result["run_id"]
    # Each generation ran exactly once, on the node the result names, for the coordinator.
    served = {name: [(n, e) for n, node in nodes.items() for e in executions(node) if e["run_id"] == run_id
                     and e["agent"] == name] for name in ("small", "big", "tagged", "secret")}
    for name, records in served.items():
        assert len(records) == 1, (name, records)
        where, record = records[0]
        assert ids[where] == results[name]["node_id"] and record["outcome"] == "completed"
        assert record["caller"] == ids["pi"] and record["prompt_chars"] > 0
    # local_only: the secret agent's prompt never reached a peer, in any file they wrote.
    assert served["secret"][0][0] == "pi"
    for name in ("hub", "mini"):
        assert not [e for e in executions(nodes[name]) if e["agent"] == "secret"]
        for path in nodes[name].home.rglob("*"):
            if path.is_file() and path.stat().st_size < 50 << 20:
                assert CANARY.encode() not in path.read_bytes(), path


def test_two_coordinators_at_once_both_finish_within_every_nodes_limits(lan):
    nodes, work = lan["nodes"], lan["work"]
    runs = [Watched(nodes[name], lan["work"], "run", str(work / "busy.yaml"), "Name an animal.", "--json")
            for name in ("pi", "mini")]
    outputs = [run.finish() for run in runs]
    for (code, out), run in zip(outputs, runs):
        assert code == 0, run.text()
    run_ids = {json.loads(out)["run_id"] for _, out in outputs}
    assert len(run_ids) == 2
    records = [(name, e) for name, node in nodes.items() for e in executions(node) if e["run_id"] in run_ids]
    # Nothing was run twice: one completed execution per agent per run, nothing else.
    done = Counter((e["run_id"], e["agent"]) for _, e in records if e["outcome"] == "completed")
    assert set(done.values()) == {1} and len(done) == 12
    # No node ran more generations of one model at once than it admits: the capacity it advertises.
    spans: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for name, e in records:
        if e.get("queued_s") is not None:
            spans.setdefault((name, e["model"]), []).append((e["at"] + e["queued_s"], e["at"] + e["seconds"]))
    for (name, model), intervals in spans.items():
        viewer = nodes["hub" if name != "hub" else "pi"]
        offer = next(m for p in viewer.live_peers().values() if p.get("name") == name for m in p["models"]
                     if model.startswith(m["id"]))
        edges = sorted([(begin, 1) for begin, _ in intervals] + [(end - 0.05, -1) for _, end in intervals])
        running = peak = 0
        for _, step in edges:
            running += step
            peak = max(peak, running)
        assert 1 <= peak <= offer["capacity"], (name, model, offer["capacity"], intervals)


def test_ctrl_c_cancels_the_remote_generation(lan):
    nodes, ids, work = lan["nodes"], lan["ids"], lan["work"]
    watched = Watched(nodes["pi"], work, "run", str(work / "chain.yaml"), "List animals.", "--watch", "long")
    run_id = watched.run_id()
    where = placed_on(watched, "long", ids)
    watched.wait_for_text("┌ long", 120)
    watched.process.send_signal(signal.SIGINT)
    code, _ = watched.finish(timeout=30)
    assert code == 130, watched.text()

    def cancelled():
        return [e for e in executions(nodes[where]) if e["run_id"] == run_id and e["agent"] == "long"
                and e["outcome"] == "cancelled"]

    [record] = wait_for(cancelled, 10, f"{where} to log the cancelled generation")
    assert record["caller"] == ids["pi"]
    assert record["seconds"] < 60  # stopped early, not run to its 400 tokens' end


# ---- failures ----

def test_a_pulled_cable_mid_agent_costs_one_replacement(lan):
    nodes, ids, work = lan["nodes"], lan["ids"], lan["work"]
    pi = nodes["pi"]
    watched = Watched(pi, work, "run", str(work / "chain.yaml"), "List animals.", "--watch", "long")
    run_id = watched.run_id()
    victim = placed_on(watched, "long", ids)
    other = "mini" if victim == "hub" else "hub"
    watched.wait_for_text("┌ long", 120)
    cable = nodes[victim].ns.veth
    subprocess.run(["ip", "link", "set", cable, "down"], check=True, timeout=10)
    try:
        # Nothing is sent and no socket closes: only the missing beats tell.
        code, _ = watched.finish()
    finally:
        subprocess.run(["ip", "link", "set", cable, "up"], check=True, timeout=10)
    assert code == 0, watched.text()
    assert f"long moved to {other} ({victim}: the node stopped answering)" in watched.text()
    long = json.loads(pi.orc("runs", "show", run_id, "--json").stdout)["results"]["long"]
    assert long["status"] == "completed" and long["nodes"] == [ids[victim], ids[other]]
    wait_until_warm(nodes.values())


def test_a_peer_killed_mid_agent_costs_one_replacement(lan):
    nodes, ids, work = lan["nodes"], lan["ids"], lan["work"]
    pi = nodes["pi"]
    watched = Watched(pi, work, "run", str(work / "chain.yaml"), "List animals.", "--watch", "long")
    run_id = watched.run_id()
    victim = placed_on(watched, "long", ids)
    assert victim in ("hub", "mini")
    watched.wait_for_text("┌ long", 120)
    time.sleep(0.5)  # tokens are flowing: kill it mid-generation
    nodes[victim].stop(signal.SIGKILL)
    code, _ = watched.finish()
    assert code == 0, watched.text()
    other = "mini" if victim == "hub" else "hub"
    assert f"long moved to {other} ({victim}:" in watched.text(), watched.text()
    long = json.loads(pi.orc("runs", "show", run_id, "--json").stdout)["results"]["long"]
    assert long["status"] == "completed" and long["attempts"] == 2
    assert long["nodes"] == [ids[victim], ids[other]] and long["node_id"] == ids[other]
    # The finished agent before it was not recomputed.
    first = [e for n in nodes.values() for e in executions(n) if e["run_id"] == run_id and e["agent"] == "first"]
    assert [e["outcome"] for e in first] == ["completed"]
    lan["killed"] = victim


def test_with_no_other_node_for_the_model_the_agent_fails_and_the_rest_runs(lan):
    nodes, ids, work = lan["nodes"], lan["ids"], lan["work"]
    victim = lan.get("killed")
    assert victim is not None, "runs after the kill test"
    survivor = "mini" if victim == "hub" else "hub"
    watched = Watched(nodes["pi"], work, "run", str(work / "chain.yaml"), "List animals.", "--watch", "long")
    run_id = watched.run_id()
    assert placed_on(watched, "long", ids) == survivor
    watched.wait_for_text("┌ long", 120)
    time.sleep(0.5)
    nodes[survivor].stop(signal.SIGKILL)
    code, _ = watched.finish()
    assert code == 1, watched.text()
    assert "✗ long failed: no other node can run it" in watched.text()
    result = json.loads(nodes["pi"].orc("runs", "show", run_id, "--json").stdout)
    long, last = result["results"]["long"], result["results"]["last"]
    assert long["status"] == "failed" and "no other node can run it" in long["error"]
    assert survivor in long["error"] and victim in long["error"]
    assert last["status"] == "completed"  # failure isolation: its dependent still ran, told of the failure
    assert result["status"] == "completed_with_errors"
    for name in ("hub", "mini"):
        start(nodes[name])
    for name in ("hub", "mini"):
        nodes[name].wait_ready()
    wait_until_warm(nodes.values())


def test_the_coordinator_killed_mid_run_resumes_from_its_journal(lan):
    nodes, work = lan["nodes"], lan["work"]
    pi = nodes["pi"]
    watched = Watched(pi, work, "run", str(work / "chain.yaml"), "List animals.", "--watch", "long")
    run_id = watched.run_id()
    watched.wait_for_text("✓ first", 120)
    watched.wait_for_text("┌ long", 120)
    pi.stop(signal.SIGKILL)
    code, _ = watched.finish(timeout=60)
    assert code != 0
    start(pi)
    pi.wait_ready()
    wait_until_warm(nodes.values())
    done = pi.ns.run([python(), "-m", "orc.node.cli.orc", "runs", "resume", run_id, "--json"], env=pi.env,
                     timeout=300, cwd=work)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["run_id"] == run_id and result["status"] == "completed"
    assert all(r["status"] == "completed" for r in result["results"].values())
    records = [e for n in nodes.values() for e in executions(n) if e["run_id"] == run_id]
    outcomes = {agent: [e["outcome"] for e in records if e["agent"] == agent] for agent in ("first", "long", "last")}
    assert outcomes["first"] == ["completed"]  # from the journal, not recomputed
    assert outcomes["long"].count("completed") == 1 and outcomes["last"] == ["completed"]
