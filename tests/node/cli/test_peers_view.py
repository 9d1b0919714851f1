"""`orc peers` shows each model's slots and any reason it cannot run, in text and in JSON."""

from __future__ import annotations

from orc.node.cli.peers import peers_table
from orc.node.models.hardware import Hardware
from orc.node.protocol.description import Load, ModelOffer, NodeDescription
from orc.node.protocol.ids import MeshId, NodeId
from orc.node.protocol.json_views import description_json
from orc.node.protocol.messages import PeerView

SHA = "0123456789abcdef" * 4
CRASHED = "its runner crashed 3 times in 10 minutes (last: SIGSEGV)"
DESCRIPTION = NodeDescription(
    protocol_version=2, node_id=NodeId("abcdefghijklmnopqrst"), name="attic", mesh_id=MeshId("abcdefghijklmnop"),
    addresses=("10.0.0.2:7733",), hardware=Hardware("x86_64", 2, 8 << 30, 4 << 30, "none", "Linux"),
    models=(ModelOffer("smollm2-135m", "llama_cpp", SHA, 145_000_000, True, 1200.0, 61.5, capacity=4,
                       batch_decode_tokens_per_s=(61.5, 52.0, 46.5)),
            ModelOffer("qwen3-0.6b", "llama_cpp", SHA, 600_000_000, False, capacity=4, unavailable=CRASHED),
            ModelOffer("gemma3-270m", "llama_cpp", SHA, 1, False)),
    load=Load(), revocation_seq=0, version=1, started_at=1.0, tags=(), known_peers=(), certificate_authority=False)


def test_json_carries_capacity_batch_speeds_and_the_reason():
    smol, qwen, gemma = description_json(DESCRIPTION)["models"]
    assert smol["capacity"] == 4 and smol["batch_decode_tokens_per_s"] == [61.5, 52.0, 46.5]
    assert smol["unavailable"] == "" and qwen["unavailable"] == CRASHED
    assert gemma["capacity"] == 1 and gemma["batch_decode_tokens_per_s"] == []


def test_the_table_shows_slots_and_unavailable_models():
    peer = PeerView(description=DESCRIPTION, state="verified", address="10.0.0.2:7733", last_seen=1.0,
                    verified=True, missed_beats=0, node_id=DESCRIPTION.node_id)
    (_, row) = peers_table((peer,), now=2.0)
    assert "smollm2-135m (62 x4), qwen3-0.6b (unavailable), gemma3-270m (on disk)" in row
