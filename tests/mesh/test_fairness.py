"""A hoarding member against real daemons in network namespaces.

    hub       serves smollm2, tagged `hub`: the node being hoarded (it created the mesh)
    pi        serves smollm2: coordinates a run whose agents require the `hub` tag
    hoarder   a member (joined with an invitation) with no daemon: a script takes Offer leases
              on hub in a loop and never executes them

The run completes through hub while the hoarder is refused with the fair-share reason, and hub
logs the leases it let expire.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import netns
import pytest
from nodes import Node, python, stop_all, wait_for

SMOL = "smollm2-135m-instruct"
HOARD_SECONDS = 25.0  # the hoarder stops by itself after this, and is killed at the end anyway

pytestmark = pytest.mark.slow

THROUGH_HUB = "name: through-hub\nagents:\n" + "".join(
    f"  - name: a{i}\n    model: {SMOL}\n    max_tokens: 8\n    temperature: 0\n"
    f"    placement: {{require_tags: [hub]}}\n" for i in range(3))


@pytest.fixture
def lan(tmp_path):
    netns.require_netns()
    mesh = netns.NamespaceLan.create(3)
    nodes = {}
    for index, name in enumerate(("hub", "pi", "hoarder")):
        home = tmp_path / name
        home.mkdir()
        nodes[name] = Node(mesh[index], home, name)
    hub, pi, hoarder = nodes["hub"], nodes["pi"], nodes["hoarder"]
    try:
        done = hub.orc_node("init", "--name", "hub")
        assert done.returncode == 0, done.stderr
        hub.start("--model", SMOL, "--tag", "hub", "--threads", "1")
        hub.wait_ready()
        pi.start("--join", hub.invite(), "--name", "pi", "--model", SMOL, "--threads", "1")
        pi.wait_ready()
        joined = hoarder.orc_node("join", hub.invite(), "--peer", f"{hub.ns.ip}:7733", "--no-mdns", "--timeout", "8")
        assert joined.returncode == 0, joined.stderr
        ids = {n: nodes[n].status()["node_id"] for n in ("hub", "pi")}

        def warm():
            live = pi.live_peers()
            return ids["hub"] in live and all(m["loaded"] and m["decode_tokens_per_s"]
                                              for m in live[ids["hub"]]["models"])

        wait_for(warm, 240, "pi to see hub with its model warm")
        [model] = pi.live_peers()[ids["hub"]]["models"]
        yield {"nodes": nodes, "ids": ids, "root": tmp_path, "sha256": model["sha256"]}
    finally:
        stop_all(nodes.values())
        mesh.close()


def test_a_hoarding_member_gets_its_share_and_the_run_completes(lan):
    nodes, ids, root = lan["nodes"], lan["ids"], lan["root"]
    hub, pi, hoarder = nodes["hub"], nodes["pi"], nodes["hoarder"]
    member = hoarder.home / "identity"
    script = Path(__file__).with_name("intruder.py")
    hoarding = hoarder.ns.popen(
        [python(), str(script), "hoard", f"{hub.ns.ip}:7733", ids["hub"], "--ca", str(member / "ca.crt"),
         "--key", str(member / "node.key"), "--cert", str(member / "node.crt"), "--model", SMOL,
         "--sha256", lan["sha256"], "--seconds", str(HOARD_SECONDS)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)  # it holds every place of hub's smollm2 lane before the run asks
        work = root / "work"
        work.mkdir()
        (work / "through-hub.yaml").write_text(THROUGH_HUB)
        done = pi.ns.run([python(), "-m", "orc.node.cli.orc", "run", str(work / "through-hub.yaml"), "Name a colour.",
                          "--json"], env=pi.env, timeout=120, cwd=work)
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        assert result["status"] == "completed"
        assert {r["node_id"] for r in result["results"].values()} == {ids["hub"]}
        out, err = hoarding.communicate(timeout=HOARD_SECONDS + 30)
    finally:
        if hoarding.poll() is None:
            hoarding.kill()
            hoarding.wait(timeout=10)
    assert "Traceback" not in err, err
    [report] = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert report["accepted"] > 0 and report["refused"] > 0, report
    assert any("of your leases here expired unused" in reason for reason in report["reasons"]), report
    records = [json.loads(line) for line in (hub.home / "executions.jsonl").read_text().splitlines() if line.strip()]
    unused = [r for r in records if r["outcome"] == "lease_expired_unused"]
    assert unused and {r["caller"] for r in unused} != {ids["pi"]}  # the hoarder's, not the run's
    assert "leases expired unused" in hub.log_text()
