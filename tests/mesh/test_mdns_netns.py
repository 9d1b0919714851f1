"""Real mDNS between network namespaces: orc nodes find each other and nothing else.

Five namespaces on one bridge: node A (full advert), node B (minimal advert, bound to its one
interface), node C (another mesh), a forger announcing services an orc node must ignore, and a
plain python-zeroconf browser that records the raw TXT records on the wire.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import netns
from cryptography.hazmat.primitives.asymmetric import ec

from orc.node.trust.ids import mesh_id_for, node_id_for

PEER = str(Path(__file__).with_name("mdns_peer.py"))
FOUND_WITHIN = 10.0  # seconds; discovery normally takes one to two


def new_id():
    return node_id_for(ec.generate_private_key(ec.SECP256R1()).public_key())


def new_mesh():
    return mesh_id_for(ec.generate_private_key(ec.SECP256R1()).public_key())


def start(ns: netns.Namespace, logs: Path, label: str, *args: str) -> tuple[subprocess.Popen, netns.JsonLines]:
    process = ns.popen([netns.python(), PEER, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                       stderr=(logs / f"{label}.log").open("w"), text=True)
    return process, netns.JsonLines(process)


def hint_from(node_id: str):
    return lambda record: "hint" in record and record["hint"]["node_id"] == node_id


def txt_of(node_id: str, **wanted: str):
    def match(record: dict) -> bool:
        if "txt" not in record or record["txt"].get("id") != node_id:
            return False
        return all(record["txt"].get(k) == v for k, v in wanted.items())
    return match


def test_nodes_of_one_mesh_find_each_other_and_nothing_else(netns_mesh, tmp_path: Path) -> None:
    mesh = netns_mesh(5)
    a, b, c = new_id(), new_id(), new_id()
    ours, theirs = new_mesh(), new_mesh()

    browser, seen = start(mesh[3], tmp_path, "browser", "browse")
    seen.wait_for(lambda r: r.get("started") == "browser", 20)
    forger, forged = start(mesh[4], tmp_path, "forger", "forge", "--mesh-id", ours, "--ip", mesh[4].ip)
    forged.wait_for(lambda r: r.get("started") == "forger", 20)

    began = time.monotonic()
    node_a, out_a = start(mesh[0], tmp_path, "a", "node", "--node-id", a, "--mesh-id", ours, "--ip", mesh[0].ip)
    node_b, out_b = start(mesh[1], tmp_path, "b", "node", "--node-id", b, "--mesh-id", ours, "--ip", mesh[1].ip,
                          "--port", "7800", "--minimal", "--bind")
    node_c, out_c = start(mesh[2], tmp_path, "c", "node", "--node-id", c, "--mesh-id", theirs, "--ip", mesh[2].ip)

    # Each node of the mesh discovers the other within a few seconds, at the advertised address.
    b_seen_by_a = out_a.wait_for(hint_from(b), FOUND_WITHIN + 10)["hint"]
    a_seen_by_b = out_b.wait_for(hint_from(a), FOUND_WITHIN + 10)["hint"]
    assert time.monotonic() - began < FOUND_WITHIN + 5  # the processes need a moment to start too
    assert b_seen_by_a["address"] == f"{mesh[1].ip}:7800" and b_seen_by_a["source"] == "mdns"
    assert a_seen_by_b["address"] == f"{mesh[0].ip}:7733"
    assert a_seen_by_b["advert"]["mesh_id"] == ours and a_seen_by_b["advert"]["revocation_seq"] == 3
    assert a_seen_by_b["advert"]["models"] == ["smollm2-135m-instruct"]  # loaded models only
    assert a_seen_by_b["advert"]["hardware"]["cores"] >= 1
    assert b_seen_by_a["advert"]["hardware"] is None and b_seen_by_a["advert"]["models"] is None

    # What is on the wire: B's minimal record has no hardware or model keys; A's full one has both.
    raw_b = seen.wait_for(txt_of(b), 20)
    raw_a = seen.wait_for(txt_of(a), 20)
    assert set(raw_b["txt"]) == {"v", "id", "m", "rs", "cv"}
    assert {"hw", "md"} <= set(raw_a["txt"])
    assert raw_a["name"] == f"{a}._orc._tcp.local."  # the instance name is the node id, nothing else
    assert raw_a["addresses"] == [mesh[0].ip]
    seen.wait_for(txt_of(c), 20)  # C is really on the LAN ...

    # ... and A and B saw C and every forged service, and dropped them.
    for out in (out_a, out_b):
        out.wait_for(lambda r: all(r.get("dropped", {}).get(reason, 0) >= 1 for reason in (
            "other mesh", "malformed TXT", "TXT names another node", "not a node id")), 20)
    for out in (out_a, out_b, out_c):
        reported = {r["hint"]["node_id"] for r in out.matching(lambda r: "hint" in r)}
        assert reported <= {a, b}
        assert c not in reported and not reported & {"f" * 20, "g" * 20, "h" * 20, "k" * 20}
    assert not out_c.matching(lambda r: "hint" in r)  # C is alone in its mesh

    # A re-announces a changed record; B hears it.
    node_a.stdin.write("catalog 7\n")
    node_a.stdin.flush()
    out_b.wait_for(lambda r: hint_from(a)(r) and r["hint"]["advert"]["catalog_version"] == 7, 10)
    seen.wait_for(txt_of(a, cv="7"), 10)

    # Stopping A withdraws its service at once (goodbye packets), not after the records' TTL.
    node_a.terminate()
    assert node_a.wait(10) == 0
    assert out_a.matching(lambda r: r.get("stopped"))
    seen.wait_for(lambda r: r.get("removed") == f"{a}._orc._tcp.local.", 5)
