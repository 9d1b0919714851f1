"""A lying member against real daemons in network namespaces.

    hub    serves smollm2 and holds the CA: coordinates the first run
    pi     serves smollm2: coordinates the second run
    liar   a member (joined with an invitation, real mTLS, found by mDNS) running `liar.py`: the
           real daemon with a node service that loads nothing, claims speeds it does not have,
           accepts every Offer, and answers an Execute at once with a made-up result

First the liar claims absurd speeds and answers every Offer with 0 ms: hub's run completes on
honest nodes, the liar is asked once and never sent a prompt, and `orc plan` on hub shows it
distrusted. Then it comes back claiming speeds a few times pi's own, with estimates to match,
which nothing can tell from the truth: pi sends it an agent, refuses its made-up result (more
tokens than max_tokens), runs the agent on an honest node, and distrusts it too.
"""

from __future__ import annotations

import json
from pathlib import Path

import netns
import pytest
from nodes import Node, nodes_on, python, stop_all, wait_for

SMOL = "smollm2-135m-instruct"
LIAR = Path(__file__).with_name("liar.py")
MADE_UP = "LIAR-MADE-UP-ANSWER"  # the start of every text liar.py returns
MAX_TOKENS = 8
# The believable liar claims this multiple of its coordinator's measured speeds: under the 16
# times the best seen that an estimate may claim, above what a real node of this machine can do.
PLAUSIBLE_FACTOR = 8.0
INPUT = "Name a colour."

pytestmark = pytest.mark.slow

ENSEMBLE = "name: colours\nagents:\n" + "".join(
    f"  - name: a{i}\n    model: {SMOL}\n    max_tokens: {MAX_TOKENS}\n    temperature: 0\n" for i in range(4))


def lying(mode: str, record: Path, *speeds: str) -> tuple[str, ...]:
    """The wrapper that makes `orc-node start` a liar (see liar.py)."""
    return (python(), str(LIAR), "--mode", mode, "--record", str(record), *speeds, "--")


@pytest.fixture(scope="module")
def lan(tmp_path_factory):
    netns.require_netns()
    mesh = netns.NamespaceLan.create(3)
    root = tmp_path_factory.mktemp("liar")
    nodes = nodes_on(mesh, root, ("hub", "pi", "liar"))
    hub, pi, liar = nodes["hub"], nodes["pi"], nodes["liar"]
    (root / "colours.yaml").write_text(ENSEMBLE)
    try:
        done = hub.orc_node("init", "--name", "hub")
        assert done.returncode == 0, done.stderr
        hub.start("--model", SMOL, "--threads", "1")
        hub.wait_ready()
        pi.start("--join", hub.invite(), "--name", "pi", "--model", SMOL, "--threads", "1")
        liar.start("--join", hub.invite(), "--name", "liar", "--model", SMOL, "--threads", "1",
                   wrapper=lying("zero", root / "zero.jsonl"))
        pi.wait_ready()
        liar.wait_ready()
        ids = {name: node.status()["node_id"] for name, node in nodes.items()}

        def warm():
            for viewer in (hub, pi):
                live = viewer.live_peers()
                others = [ids[n] for n in nodes if nodes[n] is not viewer]
                if not all(i in live and all(m["loaded"] and m["decode_tokens_per_s"] for m in live[i]["models"])
                           for i in others):
                    return False
            return True

        wait_for(warm, 240, "hub and pi to see each other and the liar, every model warm")
        yield {"nodes": nodes, "ids": ids, "root": root}
    finally:
        stop_all(nodes.values())
        mesh.close()


def run(coordinator: Node, root: Path) -> dict:
    done = coordinator.orc("run", str(root / "colours.yaml"), INPUT, "--json", timeout=240)
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr}\n{done.stdout}"
    result = json.loads(done.stdout)
    assert result["status"] == "completed", result
    return result


def heard(record: Path, run_id: str) -> tuple[list[dict], list[dict]]:
    """The Offers and the Executes of `run_id` that reached the liar."""
    entries = [json.loads(line) for line in record.read_text().splitlines() if line.strip()] if record.exists() else []
    mine = [e for e in entries if e["run_id"] == run_id]
    return [e for e in mine if "offer" in e], [e for e in mine if "execute" in e]


def assert_honest(result: dict, ids: dict[str, str]) -> None:
    """Every agent's result came from an honest node, with real numbers and not the liar's text."""
    honest = {ids["hub"], ids["pi"]}
    for name, agent in result["results"].items():
        assert agent["status"] == "completed", (name, agent)
        assert agent["node_id"] in honest, (name, agent)
        assert MADE_UP not in agent["output"], (name, agent)
        assert agent["usage"]["completion_tokens"] <= MAX_TOKENS, (name, agent)


def distrusted_in_plan(coordinator: Node, root: Path, liar_id: str) -> list[str]:
    """The reasons `orc plan --json` gives, per LLM agent, for leaving the liar out."""
    done = coordinator.orc("plan", str(root / "colours.yaml"), INPUT, "--json", timeout=60)
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    return [next((r["reason"] for r in agent["rejected"] if r["node_id"] == liar_id), "not rejected")
            for agent in plan["agents"].values()]


def test_a_member_lying_about_speeds_and_estimates_is_asked_once_and_never_sent_a_prompt(lan):
    nodes, ids, root = lan["nodes"], lan["ids"], lan["root"]
    hub = nodes["hub"]
    result = run(hub, root)
    assert_honest(result, ids)
    assert all(ids["liar"] not in agent["nodes"] for agent in result["results"].values()), result["results"]
    offers, executes = heard(root / "zero.jsonl", result["run_id"])
    # It looked the fastest by far, so it was asked first; its 0 ms answer got it left out of
    # every later placement, and no prompt was ever sent to it.
    assert len(offers) == 1 and offers[0]["caller"] == ids["hub"], offers
    assert executes == []
    assert distrusted_in_plan(hub, root, ids["liar"]) == ["distrusted"] * 4
    assert "distrusting liar" in hub.log_text()


def test_a_member_returning_made_up_results_has_them_refused_and_the_agent_moves(lan):
    nodes, ids, root = lan["nodes"], lan["ids"], lan["root"]
    pi, liar = nodes["pi"], nodes["liar"]
    [own] = [m for m in pi.status()["models"] if m["id"] == SMOL]
    prefill = f"{own['prefill_tokens_per_s'] * PLAUSIBLE_FACTOR:.1f}"
    decode = f"{own['decode_tokens_per_s'] * PLAUSIBLE_FACTOR:.1f}"
    liar.stop()
    record = root / "plausible.jsonl"
    liar.start("--model", SMOL, "--threads", "1",
               wrapper=lying("plausible", record, "--prefill", prefill, "--decode", decode))
    liar.wait_ready()

    def back():
        seen = pi.live_peers().get(ids["liar"])
        return seen is not None and [m["decode_tokens_per_s"] for m in seen["models"]] == [float(decode)]

    wait_for(back, 60, "pi to see the liar back with its new claims")
    result = run(pi, root)
    assert_honest(result, ids)
    _, executes = heard(record, result["run_id"])
    # Its estimates were believable and the best, so it got at least the first agent, prompt
    # and all; each result it made up was refused and that agent ran again on an honest node.
    assert executes, "the believable liar was never sent an agent"
    for execute in executes:
        assert execute["caller"] == ids["pi"]
        assert any(INPUT in text for text in execute["prompt"]), execute
        agent = result["results"][execute["execute"]]
        assert agent["nodes"][0] == ids["liar"] and agent["node_id"] != ids["liar"], agent
    assert distrusted_in_plan(pi, root, ids["liar"]) == ["distrusted"] * 4
    assert "completion tokens, more than max_tokens" in pi.log_text()
