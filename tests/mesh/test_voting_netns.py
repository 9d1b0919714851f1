"""A vote and a cascade across three real daemons in network namespaces.

    hub    serves smollm2 (it created the mesh; it coordinates the runs here)
    left   serves gemma only
    right  serves smollm2 only

A vote over both models must then use at least two nodes; its `--json` result carries the vote,
and a cascade's the levels it tried. Outputs are kept short: three daemons share two cores.
"""

from __future__ import annotations

import os
import signal
import subprocess

import netns
import pytest
from nodes import Node, run_json, wait_for

SMOL = "smollm2-135m-instruct"
GEMMA = "gemma3-270m"

pytestmark = pytest.mark.slow

ARGS = {
    "hub": ("--model", SMOL, "--threads", "1"),
    "left": ("--model", GEMMA, "--threads", "1"),
    "right": ("--model", SMOL, "--threads", "1"),
}

VOTE = f"""\
name: poll
agents:
  - name: answer
    model: {SMOL}
    system_prompt: "Answer yes or no, then explain. Start with 'Answer: yes' or 'Answer: no'."
    max_tokens: 12
    vote:
      samples: 6
      extract: '(?i)\\b(yes|no)\\b'
      temperature: 0.8
      models: [{SMOL}, {GEMMA}]
  - name: route
    system_prompt: "Is this text positive or negative? One word."
    max_tokens: 6
    cascade:
      - model: {SMOL}
        vote: {{samples: 3, extract: '(?i)(positive|negative)'}}
        accept_if: '${{agreement}} > 1'
      - model: {GEMMA}
"""


@pytest.fixture(scope="module")
def lan(tmp_path_factory):
    netns.require_netns()
    mesh = netns.NamespaceLan.create(3)
    root = tmp_path_factory.mktemp("voting")
    nodes = {}
    for index, name in enumerate(("hub", "left", "right")):
        home = root / name
        home.mkdir()
        nodes[name] = Node(mesh[index], home, name)
    hub = nodes["hub"]
    work = root / "work"
    work.mkdir()
    os.chmod(root, 0o755)
    try:
        done = hub.orc_node("init", "--name", "hub")
        assert done.returncode == 0, done.stderr
        hub.start(*ARGS["hub"])
        hub.wait_ready()
        for name in ("left", "right"):
            nodes[name].start("--join", hub.invite(), "--name", name, *ARGS[name])
        for name in ("left", "right"):
            nodes[name].wait_ready()
        (work / "poll.yaml").write_text(VOTE)
        ids = {n.name: n.status()["node_id"] for n in nodes.values()}

        def warm() -> bool:
            for viewer in nodes.values():
                live = viewer.live_peers()
                if len(live) != 2 or not all(m["loaded"] for p in live.values() for m in p["models"]):
                    return False
            return True

        wait_for(warm, 240, "every node to see the others with their models loaded")
        yield {"nodes": nodes, "ids": ids, "work": work}
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


def test_a_vote_spreads_its_samples_over_the_mesh_and_a_cascade_says_what_it_tried(lan):
    hub, ids, work = lan["nodes"]["hub"], lan["ids"], lan["work"]
    data = run_json(hub, work, "run", str(work / "poll.yaml"), "Is the sea salty?", "--json")
    names = {node_id: name for name, node_id in ids.items()}

    answer = data["results"]["answer"]
    assert answer["status"] == "completed", answer["error"]
    vote = answer["vote"]
    assert vote["samples"] == 6 and sum(vote["ballots"].values()) + vote["abstained"] == 6
    assert vote["agreement"] == round(vote["ballots"][vote["winner"]] / 6, 4)
    assert vote["models"] == [SMOL, GEMMA] and vote["by"] == "majority"
    used = {names[n] for n in answer["nodes"]}
    assert "left" in used and used & {"hub", "right"}, used  # gemma's samples can only go left
    assert answer["node_id"] in answer["nodes"]
    assert answer["usage"]["completion_tokens"] > 0

    route = data["results"]["route"]
    assert route["status"] == "completed", route["error"]
    cascade = route["cascade"]
    assert (cascade["level"], cascade["tried"]) == (1, 2)  # an agreement never exceeds 1
    assert [level["model"] for level in cascade["levels"]] == [SMOL, GEMMA]
    assert cascade["levels"][0]["accepted"] is False and 0 <= cascade["levels"][0]["agreement"] <= 1
    assert names[route["node_id"]] == "left"  # gemma's level gave the output
