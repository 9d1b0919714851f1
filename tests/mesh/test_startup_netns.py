"""Real daemons in network namespaces, used the way the README says, with no pause for start-up.

A creates the mesh, starts, and is asked for two invitations at once, while it is still
starting; B and C join with them at the same moment. Then: a second start on A's home, a run
sent to B while B restarts, and D failing to join with a wrong token while a plain mDNS
browser on E records everything announced on the LAN.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import netns
import pytest
from nodes import nodes_on, stop_all, wait_for

SMOL = "smollm2-135m-instruct"
BROWSER = str(Path(__file__).with_name("mdns_peer.py"))
ECHO = "import json, sys\nreq = json.load(sys.stdin)\nprint(json.dumps({'echo': req['input_data']}))\n"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lan(tmp_path_factory):
    netns.require_netns()
    mesh = netns.NamespaceLan.create(5)
    root = tmp_path_factory.mktemp("startup")
    nodes = nodes_on(mesh, root, ("attic-pi", "laptop", "desk", "visitor"))
    a, b, c = nodes["attic-pi"], nodes["laptop"], nodes["desk"]
    browser = None
    try:
        browser = mesh[4].popen([netns.python(), BROWSER, "browse"], stdout=subprocess.PIPE,
                                stderr=(root / "browser.log").open("w"), text=True)
        seen = netns.JsonLines(browser)
        seen.wait_for(lambda r: r.get("started") == "browser", 20)
        assert a.orc_node("init", "--name", "attic-pi").returncode == 0
        a.start("--model", SMOL)
        # At once, as the README's flow goes: the daemon is still starting.
        invites = [a.orc_node("invite"), a.orc_node("invite")]
        for done in invites:
            assert done.returncode == 0, done.stderr
        tokens = [done.stdout.strip() for done in invites]
        b.start("--join", tokens[0], "--name", "laptop", "--model", SMOL)
        c.start("--join", tokens[1], "--name", "desk", "--model", SMOL)
        for node in (a, b, c):
            node.wait_ready(120)
        ids = {name: nodes[name].status()["node_id"] for name in ("attic-pi", "laptop", "desk")}

        def everyone_verified():
            return all(set(n.live_peers()) == set(ids.values()) - {ids[n.name]} for n in (a, b, c))

        wait_for(everyone_verified, 60, "every node to verify the other two")
        yield {"mesh": mesh, "nodes": nodes, "invites": invites, "ids": ids, "seen": seen, "root": root}
    finally:
        stop_all(nodes.values())
        if browser is not None:
            browser.terminate()
        mesh.close()


def test_invitations_asked_for_during_start_up_work_and_both_joined_at_once(lan):
    for done in lan["invites"]:
        assert "not running" not in done.stderr, done.stderr
        assert "join server at" in done.stderr
    assert len({done.stdout for done in lan["invites"]}) == 2
    a, b, c = (lan["nodes"][n] for n in ("attic-pi", "laptop", "desk"))
    assert b.status()["mesh_id"] == c.status()["mesh_id"] == a.status()["mesh_id"]
    assert "Traceback" not in a.log_text() + b.log_text() + c.log_text()


def test_a_second_start_on_a_running_home_exits_3_with_one_line(lan):
    a = lan["nodes"]["attic-pi"]
    done = a.orc_node("start", "--model", SMOL)
    assert done.returncode == 3, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"orc: error: another orc-node daemon runs for this home (pid {a.process.pid})"]
    assert a.process.poll() is None and a.status()["mode"] == "daemon"  # the first one carries on


def test_a_run_sent_while_the_daemon_starts_goes_to_the_daemon(lan):
    b = lan["nodes"]["laptop"]
    work = lan["root"] / "work"
    work.mkdir(exist_ok=True)
    (work / "echo.py").write_text(ECHO)
    (work / "e.yaml").write_text("name: e\nagents:\n  - {name: s, script: echo.py}\n")
    assert b.stop() == 0
    b.start("--model", SMOL)
    run = b.orc("run", str(work / "e.yaml"), "hello", "--json")  # no wait: the daemon is starting
    peers = b.orc("peers", "--json", timeout=60)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["results"]["s"]["node_id"] == lan["ids"]["laptop"]  # not "local": not run in-process
    assert result["deliverable"] == {"echo": "hello"}
    assert peers.returncode == 0, peers.stderr
    b.wait_ready(120)


def test_a_failed_join_announces_nothing_and_leaves_no_peer_behind(lan):
    a, d = lan["nodes"]["attic-pi"], lan["nodes"]["visitor"]
    seen, ids = lan["seen"], lan["ids"]
    for node_id in ids.values():  # the browser hears the members ...
        seen.wait_for(lambda r, n=node_id: r.get("txt", {}).get("id") == n, 30)
    token = a.invite()  # a's join server is open and advertised
    prefix, pin, secret = token.split("-")
    wrong = f"{prefix}-{pin}-{'a' * len(secret)}"
    began = time.monotonic()
    done = d.orc_node("join", wrong, "--name", "visitor", "--timeout", "30")
    assert done.returncode == 3 and "refused" in done.stderr, done.stderr
    time.sleep(max(0.0, 3.0 - (time.monotonic() - began)))  # time for any announcement to reach the browser
    announced = {r["txt"].get("id") for r in seen.matching(lambda r: "txt" in r)}
    assert announced == set(ids.values()), announced  # ... and nothing from the visitor, ever
    for name in ("attic-pi", "laptop", "desk"):
        known = {p["node_id"] for p in lan["nodes"][name].peers()}
        assert known <= set(ids.values()), (name, known)
