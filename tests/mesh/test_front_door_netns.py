"""What strangers and revoked members can do to a node's port, with real daemons in namespaces.

    attic     creates the mesh; started with the usual soft limit of 1024 open files (and a hard
              limit of up to 65536: what this process may grant), tagged `attic` so the agents
              below must run on it
    laptop    a member: it runs the ensembles, and is revoked at the end
    stranger  a device on the LAN that is no member: it holds 1,100 idle connections

The tests run in file order on one mesh; the revocation comes last.
"""

from __future__ import annotations

import json
import re
import resource
import subprocess
from pathlib import Path

import netns
import pytest
from nodes import Node, intruder, python, wait_for

SMOL = "smollm2-135m-instruct"
STRANGER_CONNECTIONS = 1100
SOFT_LIMIT = 1024
# Without CAP_SYS_RESOURCE a hard limit can only be lowered: take ours, up to 65536.
HARD_LIMIT = min(65536, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
INTRUDER = str(Path(__file__).with_name("intruder.py"))

pytestmark = pytest.mark.slow

ENSEMBLE = f"""\
name: through-attic
agents:
""" + "".join(f"""\
  - name: agent{index}
    model: {SMOL}
    max_tokens: 4
    temperature: 0
    placement: {{require_tags: [attic]}}
""" for index in range(3))


@pytest.fixture(scope="module")
def lan(tmp_path_factory):
    netns.require_netns()
    if HARD_LIMIT < 4 * SOFT_LIMIT:
        pytest.skip(f"the hard open-file limit here ({HARD_LIMIT}) leaves nothing to raise")
    mesh = netns.NamespaceLan.create(3)
    root = tmp_path_factory.mktemp("door")
    nodes = {}
    for index, name in enumerate(("attic", "laptop", "stranger")):
        home = root / name
        home.mkdir()
        nodes[name] = Node(mesh[index], home, name)
    a, b = nodes["attic"], nodes["laptop"]
    try:
        assert a.orc_node("init", "--name", "attic").returncode == 0
        a.start("--model", SMOL, "--tag", "attic", "--threads", "1",
                wrapper=("prlimit", f"--nofile={SOFT_LIMIT}:{HARD_LIMIT}", "--"))
        a.wait_ready()
        b.start("--join", a.invite(), "--name", "laptop", "--model", SMOL, "--threads", "1")
        b.wait_ready()
        a_id, b_id = a.status()["node_id"], b.status()["node_id"]
        wait_for(lambda: b_id in a.live_peers() and a_id in b.live_peers(), 30, "attic and laptop to link")

        def warm():
            return all(m["loaded"] for m in b.live_peers()[a_id]["models"])

        wait_for(warm, 120, "attic's model to be loaded and measured")
        yield {"nodes": nodes, "root": root, "ids": {"attic": a_id, "laptop": b_id}}
    finally:
        for node in nodes.values():
            if node.process is not None and node.process.poll() is None:
                node.stop()
        mesh.close()


def test_the_daemon_raised_its_open_file_limit(lan):
    a = lan["nodes"]["attic"]
    limits = Path(f"/proc/{a.process.pid}/limits").read_text()
    soft, hard = re.search(r"Max open files\s+(\d+)\s+(\d+)", limits).groups()
    assert (int(soft), int(hard)) == (HARD_LIMIT, HARD_LIMIT)
    assert f"open-file limit raised from {SOFT_LIMIT} to {HARD_LIMIT}" in a.log_text()


def test_the_member_recorded_who_admitted_it(lan):
    b = lan["nodes"]["laptop"]
    issuer = json.loads((b.home / "identity" / "issuer.json").read_text())
    assert issuer["node_id"] == lan["ids"]["attic"] or issuer["address"] == f"{lan['nodes']['attic'].ns.ip}:7733"


def test_members_run_agents_through_a_node_that_strangers_hold_1100_idle_connections_to(lan):
    a, b, d = (lan["nodes"][n] for n in ("attic", "laptop", "stranger"))
    a_id, b_id = lan["ids"]["attic"], lan["ids"]["laptop"]
    ensemble = b.home / "through-attic.yaml"
    ensemble.write_text(ENSEMBLE)
    # The stranger opens its connections again as soon as they are closed, all along.
    stranger = d.ns.popen([python(), INTRUDER, "idle", a.ns.ip, "7733", str(STRANGER_CONNECTIONS), "--refill",
                           "--seconds", "150"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        opened = json.loads(stranger.stdout.readline())
        assert opened["opened"] + opened["refused"] + opened["skipped"] == STRANGER_CONNECTIONS
        assert opened["opened"] > 100  # the kernel accepted them: the daemon had to deal with each
        member = b.home / "identity"
        credentials = ("--ca", str(member / "ca.crt"), "--key", str(member / "node.key"),
                       "--cert", str(member / "node.crt"))
        # A member's new connection is accepted and served while the stranger holds its own.
        assert intruder(b.ns, "call", f"{a.ns.ip}:7733", a_id, *credentials) == [{"ok": True, "node_id": a_id}]

        done = b.orc("run", str(ensemble), "Say yes.", "--json", timeout=120)
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        assert {r["node_id"] for r in result["results"].values()} == {a_id}
        assert b_id in a.live_peers()  # `orc peers` answers on the node held by the stranger
        lines = [json.loads(line) for line in (a.home / "executions.jsonl").read_text().splitlines()]
        served = [line for line in lines if line["run_id"] == result["run_id"]]
        assert sorted(line["agent"] for line in served) == ["agent0", "agent1", "agent2"]
        assert all(line["caller"] == b_id and line["outcome"] == "completed" for line in served)
        assert intruder(b.ns, "call", f"{a.ns.ip}:7733", a_id, *credentials) == [{"ok": True, "node_id": a_id}]

        def held() -> int:
            stranger.stdin.write("?\n")
            stranger.stdin.flush()
            return json.loads(stranger.stdout.readline())["open"]

        # Still refilling, and capped: the connections that have not authenticated, per address.
        wait_for(lambda: held() <= 16, 30, "attic to close the stranger's connections past its cap")
    finally:
        stranger.stdin.close()
        stranger.wait(timeout=30)
    assert a.process.poll() is None
    crowding = [line for line in a.log_text().splitlines() if f"mesh: {d.ns.ip} has 16 connections" in line]
    assert 1 <= len(crowding) <= 3, crowding  # sampled: one line a minute per address, not thousands


def test_a_second_daemon_on_the_same_port_exits_3_with_one_clear_line(lan):
    a = lan["nodes"]["attic"]
    second = Node(a.ns, lan["root"] / "second", "second")
    second.home.mkdir()
    assert second.orc_node("init", "--name", "second").returncode == 0
    done = second.orc_node("start", "--no-mdns", "--model", SMOL, timeout=120)
    assert done.returncode == 3, done.stderr
    assert ("orc: error: port 7733 on 0.0.0.0 is in use (another orc-node?); stop it or choose another with "
            "--listen HOST:PORT") in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert a.process.poll() is None and lan["ids"]["laptop"] in a.live_peers()


def test_a_revoked_node_loses_every_connection_it_holds(lan):
    a, b = lan["nodes"]["attic"], lan["nodes"]["laptop"]
    a_id, b_id = lan["ids"]["attic"], lan["ids"]["laptop"]
    member = b.home / "identity"
    holder = b.ns.popen([python(), INTRUDER, "many", f"{a.ns.ip}:7733", a_id, "20", "--ca", str(member / "ca.crt"),
                         "--key", str(member / "node.key"), "--cert", str(member / "node.crt")],
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def connected() -> int:
        holder.stdin.write("?\n")
        holder.stdin.flush()
        return json.loads(holder.stdout.readline())["connected"]

    try:
        ready = json.loads(holder.stdout.readline())
        assert ready["ready"] is True, ready
        assert connected() == 20
        done = a.orc_node("revoke", b_id, "--reason", "laptop stolen")
        assert done.returncode == 0, done.stderr
        wait_for(lambda: connected() == 0, 15, "attic to close the revoked node's connections")
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert a.process.poll() is None
    # The revoked daemon keeps calling back; the log says so once, not once per call.
    refused = [line for line in a.log_text().splitlines() if "refused" in line and b_id in line]
    assert len(refused) <= 3, refused
