"""Three real daemons on a LAN of network namespaces: join, discovery, trust, liveness.

A creates the mesh; B and C join with one-time tokens; D is a device on the same LAN that is
not a member. The tests run in file order on one mesh; the destructive ones (kill, revoke)
come last.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import netns
import pytest
from nodes import Node, intruder, python, wait_for

SMOL = "smollm2-135m-instruct"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lan(tmp_path_factory):
    netns.require_netns()
    mesh = netns.NamespaceLan.create(4)
    root = tmp_path_factory.mktemp("lan")
    nodes = {}
    for index, name in enumerate(("attic-pi", "laptop", "desk", "stranger")):
        home = root / name
        home.mkdir()
        nodes[name] = Node(mesh[index], home, name)
    a, b, c = nodes["attic-pi"], nodes["laptop"], nodes["desk"]
    (c.home / "config.yaml").write_text("discovery:\n  advertise: minimal\n")
    times = {}
    try:
        done = a.orc_node("init", "--name", "attic-pi")
        assert done.returncode == 0, done.stderr
        a.start()
        a.wait_ready()
        token_b, token_c = a.invite(), a.invite()
        started = time.monotonic()
        b.start("--join", token_b, "--name", "laptop", "--model", SMOL, "--tag", "portable")
        c.start("--join", token_c, "--name", "desk", "--model", SMOL, "--interface", c.ns.ip)
        b.wait_ready()
        c.wait_ready()
        nodes_by_id = {n.status()["node_id"]: n for n in (a, b, c)}
        assert len(nodes_by_id) == 3

        def everyone_sees_everyone():
            return all(len(n.live_peers()) == 2 for n in (a, b, c))

        wait_for(everyone_sees_everyone, 30, "all three nodes to list each other")
        times["joined_and_discovered"] = time.monotonic() - started

        def every_model_warm():
            return all(m["loaded"] for n in (a, b, c) for p in n.live_peers().values() for m in p["models"])

        # Each node loads and measures its models after it starts serving (gemma is assembled first).
        wait_for(every_model_warm, 180, "every node to load and measure its models")
        yield {"mesh": mesh, "nodes": nodes, "tokens": (token_b, token_c), "times": times, "root": root}
    finally:
        for node in nodes.values():
            if node.process is not None and node.process.poll() is None:
                node.process.send_signal(signal.SIGTERM)
        for node in nodes.values():
            if node.process is not None:
                try:
                    node.process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    pass
        mesh.close()


def ids(lan) -> dict[str, str]:
    return {name: node.status()["node_id"] for name, node in lan["nodes"].items() if name != "stranger"}


# ---- joining and discovery ----

def test_every_node_lists_the_others_with_what_they_really_are(lan):
    a, b, c = (lan["nodes"][n] for n in ("attic-pi", "laptop", "desk"))
    by_name = ids(lan)
    statuses = {name: lan["nodes"][name].status() for name in by_name}
    mesh_ids = {s["mesh_id"] for s in statuses.values()}
    assert len(mesh_ids) == 1 and None not in mesh_ids
    for viewer in (a, b, c):
        live = viewer.live_peers()
        others = {by_name[n] for n in by_name if lan["nodes"][n] is not viewer}
        assert set(live) == others
        for node_id, peer in live.items():
            owner = next(lan["nodes"][n] for n in by_name if by_name[n] == node_id)
            assert peer["verified"] is True
            assert peer["name"] == owner.name
            assert peer["address"] == f"{owner.ns.ip}:7733"
            # Same machine underneath, so the hardware must match this process's view of it.
            assert peer["hardware"]["cores"] == os.cpu_count()
            assert peer["hardware"]["arch"] == os.uname().machine
            assert peer["hardware"]["ram_total_bytes"] == statuses[owner.name]["hardware"]["ram_total_bytes"]
            assert peer["last_seen"] > time.time() - 5
            models = {m["id"]: m for m in peer["models"]}
            assert SMOL in models and models[SMOL]["loaded"] is True
            assert models[SMOL]["decode_tokens_per_s"] > 0 and models[SMOL]["prefill_tokens_per_s"] > 0
            assert len(models[SMOL]["sha256"]) == 64
            if owner is a:
                assert models[SMOL]["sha256"] == statuses["laptop"]["models"][0]["sha256"]
                assert peer["certificate_authority"] is True
            else:
                # --model: a node serves only the models it was told to, though it has more.
                assert set(models) == {SMOL}
                assert peer["certificate_authority"] is False
            assert peer["tags"] == (["portable"] if owner is b else [])


def test_status_shows_this_node_its_mesh_and_its_peers(lan):
    b = lan["nodes"]["laptop"]
    status = b.status()
    assert status["mode"] == "daemon" and status["name"] == "laptop"
    assert status["listen"] == [f"{b.ns.ip}:7733"]
    assert len(status["node_id"]) == 20 and len(status["mesh_id"]) == 16
    assert {p["node_id"] for p in status["peers"]} == set(ids(lan).values()) - {status["node_id"]}
    text = b.orc_node("status")
    assert text.returncode == 0 and status["node_id"] in text.stdout and "2 live" in text.stdout
    socket = b.home / "orc-node.sock"
    assert socket.exists() and (socket.stat().st_mode & 0o777) == 0o600


def test_interface_pins_the_listen_address(lan):
    c = lan["nodes"]["desk"]
    assert c.status()["listen"] == [f"{c.ns.ip}:7733"]


def test_discovery_was_quick(lan):
    # A bound against hanging, not a speed: joining here includes two runners starting, loading
    # and measuring the model on a shared two-core machine; discovery itself is benchmarked
    # (docs/benchmarks.md, the mesh section).
    assert lan["times"]["joined_and_discovered"] < 120


def test_orc_run_goes_through_the_daemon(lan):
    a = lan["nodes"]["attic-pi"]
    ensemble = a.home / "one.yaml"
    ensemble.write_text(f"name: one\nagents:\n  - name: answer\n    model: {SMOL}\n    max_tokens: 8\n"
                        "    temperature: 0\n")
    done = a.orc("run", str(ensemble), "Say hi.", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    # The daemon placed it on a node of the mesh (every one serves the model), not "local".
    assert result["results"]["answer"]["node_id"] in set(ids(lan).values())
    assert result["results"]["answer"]["usage"]["completion_tokens"] > 0


# ---- joining is by invitation only ----

def _stranger_join(lan, token: str, home_name: str) -> subprocess.CompletedProcess[str]:
    d = lan["nodes"]["stranger"]
    a = lan["nodes"]["attic-pi"]
    home = lan["root"] / home_name
    home.mkdir(exist_ok=True)
    stranger = Node(d.ns, home, home_name)
    return stranger.orc_node("join", token, "--peer", f"{a.ns.ip}:7733", "--no-mdns", "--timeout", "8")


def _refused(lan, done: subprocess.CompletedProcess[str], home_name: str, explicitly: bool = True) -> None:
    assert done.returncode == 3 and "Traceback" not in done.stderr, done.stderr
    assert not (lan["root"] / home_name / "identity" / "node.crt").exists()
    if explicitly:
        assert "join refused" in done.stderr, done.stderr


def test_a_used_token_is_refused(lan):
    lan["nodes"]["attic-pi"].invite()  # another invitation keeps the join server open
    _refused(lan, _stranger_join(lan, lan["tokens"][0], "reuse"), "reuse")


def test_an_expired_token_is_refused(lan):
    token = lan["nodes"]["attic-pi"].invite("--ttl", "1s")
    time.sleep(2.5)
    _refused(lan, _stranger_join(lan, token, "expired"), "expired")


def test_guessing_burns_the_invitation(lan):
    a = lan["nodes"]["attic-pi"]
    token = a.invite()
    prefix, secret = token.rsplit("-", 1)
    for attempt in range(3):
        wrong = prefix + "-" + ("a" * 25 + "bcd"[attempt])
        _refused(lan, _stranger_join(lan, wrong, f"guess{attempt}"), f"guess{attempt}")
    # Every pending invitation is withdrawn: the join server closes, or refuses if still open.
    _refused(lan, _stranger_join(lan, token, "too-late"), "too-late", explicitly=False)


def test_a_fresh_token_lets_a_device_join(lan):
    token = lan["nodes"]["attic-pi"].invite()
    done = _stranger_join(lan, token, "newcomer")
    assert done.returncode == 0, done.stderr
    assert "joined mesh" in done.stdout
    key = lan["root"] / "newcomer" / "identity" / "node.key"
    assert (key.stat().st_mode & 0o777) == 0o600
    assert (key.parent.stat().st_mode & 0o777) == 0o700


# ---- strangers cannot do anything ----

def _pem_files(folder: Path, **blobs: bytes) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, data in blobs.items():
        path = folder / f"{name}.pem"
        path.write_bytes(data)
        paths[name] = str(path)
    return paths


def test_strangers_are_refused_and_members_keep_working(lan):
    from orc.node.trust.certificates import generate_key, key_to_pem
    from orc.node.trust.store import IdentityStore

    a, b, d = lan["nodes"]["attic-pi"], lan["nodes"]["laptop"], lan["nodes"]["stranger"]
    a_id = a.status()["node_id"]
    target = f"{a.ns.ip}:7733"
    ca = (a.home / "identity" / "ca.crt").read_bytes()
    authority = IdentityStore(a.home / "identity").load().authority
    outsiders = lan["root"] / "outsiders"

    # A device with its own mesh: a valid certificate, but from another CA.
    other = Node(d.ns, outsiders / "other-mesh", "other")
    other.home.mkdir(parents=True)
    assert other.orc_node("init", "--name", "other").returncode == 0
    other_id = other.home / "identity"
    attempts = {
        "plaintext": ["--plaintext"],
        "no certificate": ["--ca", _pem_files(outsiders / "ca", ca=ca)["ca"]],
        "other mesh": ["--ca", str(other_id / "ca.crt"), "--key", str(other_id / "node.key"),
                       "--cert", str(other_id / "node.crt")],
    }
    # A certificate from the right CA that expired a month ago.
    key = generate_key()
    expired = authority.issue_for_key(key.public_key(), datetime.now(timezone.utc) - timedelta(days=60),
                                      timedelta(days=1))
    files = _pem_files(outsiders / "expired", key=key_to_pem(key), cert=expired, ca=ca)
    attempts["expired"] = ["--ca", files["ca"], "--key", files["key"], "--cert", files["cert"]]
    for what, flags in attempts.items():
        [outcome] = intruder(d.ns, "call", target, a_id, *flags)
        assert outcome["ok"] is False, what
        assert outcome["code"] in ("UNAVAILABLE", "UNAUTHENTICATED", "PERMISSION_DENIED"), (what, outcome)
    # Junk on the mesh port.
    [sent] = intruder(d.ns, "junk", a.ns.ip, "7733")
    assert sent["sent"] > 0
    # Members are unaffected and the daemon still runs.
    assert a.process.poll() is None
    assert a_id in b.live_peers()
    member = b.home / "identity"
    [ok] = intruder(b.ns, "call", target, a_id, "--ca", str(member / "ca.crt"), "--key", str(member / "node.key"),
                    "--cert", str(member / "node.crt"))
    assert ok == {"ok": True, "node_id": a_id}


def test_the_target_name_pins_the_node(lan):
    a, b = lan["nodes"]["attic-pi"], lan["nodes"]["laptop"]
    b_id = b.status()["node_id"]
    member = b.home / "identity"
    # B's valid credentials, but asking A's address for node B: A's certificate does not match.
    [outcome] = intruder(b.ns, "call", f"{a.ns.ip}:7733", b_id, "--ca", str(member / "ca.crt"),
                         "--key", str(member / "node.key"), "--cert", str(member / "node.crt"))
    assert outcome["ok"] is False and outcome["code"] == "UNAVAILABLE"


def test_advertise_minimal_keeps_hardware_and_models_off_the_lan(lan):
    d = lan["nodes"]["stranger"]
    names = ids(lan)
    script = Path(__file__).with_name("mdns_peer.py")
    browser = d.ns.popen([python(), str(script), "browse"], stdout=subprocess.PIPE, text=True)
    try:
        lines = netns.JsonLines(browser)
        wanted = {names["attic-pi"], names["desk"]}
        lines.wait_for(lambda _: wanted <= {r["txt"].get("id") for r in lines.matching(lambda r: "txt" in r)}, 20)
        seen = {r["txt"]["id"]: r["txt"] for r in lines.matching(lambda r: "txt" in r)}
    finally:
        browser.terminate()
        browser.wait(timeout=10)
    full, minimal = seen[names["attic-pi"]], seen[names["desk"]]
    assert "hw" in full and "md" in full and SMOL in full["md"]
    assert "hw" not in minimal and "md" not in minimal
    assert minimal["m"] == full["m"]  # still findable by its mesh


def test_spoofed_adverts_never_become_peers(lan):
    a, b, d = lan["nodes"]["attic-pi"], lan["nodes"]["laptop"], lan["nodes"]["stranger"]
    mesh_id = a.status()["mesh_id"]
    script = Path(__file__).with_name("mdns_peer.py")
    fake_id = "q" * 20
    spoofers = [
        d.ns.popen([python(), str(script), "forge", "--mesh-id", mesh_id, "--ip", d.ns.ip],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        # A well-formed advert in our mesh's name, pointing at a port where nothing speaks orc.
        d.ns.popen([python(), str(script), "node", "--node-id", fake_id, "--mesh-id", mesh_id, "--ip", d.ns.ip],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
    ]
    [junk] = intruder(d.ns, "junk", a.ns.ip, "7733")
    try:
        wait_for(lambda: any(p["node_id"] == fake_id for p in a.peers()), 15, "A to hear the spoofed advert")
        time.sleep(3)
        spoofed = next(p for p in a.peers() if p["node_id"] == fake_id)
        assert spoofed["verified"] is False and spoofed["state"] in ("discovered", "dead")
        assert "hardware" not in spoofed  # nothing from an unverified node is shown as fact
        assert set(a.live_peers()) == set(ids(lan).values()) - {a.status()["node_id"]}
        assert a.process.poll() is None and b.process.poll() is None
    finally:
        for spoofer in spoofers:
            spoofer.terminate()
            spoofer.wait(timeout=10)


# ---- liveness ----

def test_a_killed_peer_is_marked_dead_quickly_and_comes_back(lan):
    a, b = lan["nodes"]["attic-pi"], lan["nodes"]["laptop"]
    b_id = b.status()["node_id"]
    b.stop(signal.SIGKILL)
    killed = time.monotonic()

    def dead():
        peer = next((p for p in a.peers() if p["node_id"] == b_id), None)
        return peer is not None and peer["state"] == "dead"

    wait_for(dead, 15, "A to mark the killed node dead", interval=0.1)
    noticed = time.monotonic() - killed
    assert noticed < 8, noticed  # 3 missed beats; generous for a loaded 2-core machine
    b.start()  # no --join: it is a member now, and keeps its identity
    b.wait_ready()
    assert b.status()["node_id"] == b_id
    wait_for(lambda: b_id in a.live_peers(), 30, "the restarted node to be verified again")


# ---- revocation ----

def test_revoking_a_node_cuts_it_off_everywhere(lan):
    a, b, c = (lan["nodes"][n] for n in ("attic-pi", "laptop", "desk"))
    b_id, c_id = b.status()["node_id"], c.status()["node_id"]
    member = c.home / "identity"
    script = Path(__file__).with_name("intruder.py")
    holder = c.ns.popen([python(), str(script), "hold", f"{b.ns.ip}:7733", b_id, "--ca", str(member / "ca.crt"),
                         "--key", str(member / "node.key"), "--cert", str(member / "node.crt")],
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        ready = json.loads(holder.stdout.readline())
        assert ready["ready"]["ok"] is True  # C is a member: its open connection works
        done = a.orc_node("revoke", c_id, "--reason", "laptop stolen")
        assert done.returncode == 0, done.stderr
        wait_for(lambda: c_id not in b.live_peers() and c_id not in a.live_peers(), 15,
                 "A and B to drop the revoked node")
        holder.stdin.write("again\n")
        holder.stdin.flush()
        outcomes = [json.loads(holder.stdout.readline()) for _ in range(2)]
    finally:
        holder.kill()
        holder.wait(timeout=10)
    again = next(o["again"] for o in outcomes if "again" in o)
    ended = next(o for o in outcomes if "watch_ended" in o)
    assert again["ok"] is False and again["code"] == "PERMISSION_DENIED"  # same connection, new call
    assert ended["watch_ended"] == "PERMISSION_DENIED"  # the stream it already had open was cut
    assert b.process.poll() is None and a.process.poll() is None
    assert set(b.live_peers()) == {a.status()["node_id"]}
