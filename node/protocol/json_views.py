"""Node descriptions and peers as JSON: what `orc-node status --json` and `orc peers --json`
print, and what the HTTP face's dashboard builds its mesh from (one shape for both)."""

from __future__ import annotations

from typing import Any

from orc.node.protocol.description import NodeDescription
from orc.node.protocol.messages import PeerView


def description_json(description: NodeDescription) -> dict[str, Any]:
    hardware = description.hardware
    return {
        "node_id": description.node_id,
        "name": description.name,
        "mesh_id": description.mesh_id,
        "addresses": list(description.addresses),
        "hardware": {
            "arch": hardware.arch, "cores": hardware.cores, "ram_total_bytes": hardware.ram_total_bytes,
            "ram_available_bytes": hardware.ram_available_bytes, "accelerator": hardware.accelerator,
            "system": hardware.system,
        },
        "models": [{"id": m.id, "runtime": m.runtime, "sha256": m.sha256, "size_bytes": m.size_bytes,
                    "loaded": m.loaded, "prefill_tokens_per_s": m.prefill_tokens_per_s,
                    "decode_tokens_per_s": m.decode_tokens_per_s, "capacity": m.capacity,
                    "batch_decode_tokens_per_s": list(m.batch_decode_tokens_per_s),
                    "unavailable": m.unavailable} for m in description.models],
        "load": {"active_generations": description.load.active_generations, "queued": description.load.queued,
                 "cpu_load_1m": description.load.cpu_load_1m},
        "tags": list(description.tags),
        "certificate_authority": description.certificate_authority,
        "revocation_seq": description.revocation_seq,
        "protocol_version": description.protocol_version,
        "started_at": description.started_at,
    }


def peer_json(peer: PeerView) -> dict[str, Any]:
    described = description_json(peer.description) if peer.description is not None else {}
    return {
        **described,
        "node_id": peer.id,
        "name": described.get("name"),
        "address": peer.address,
        "state": peer.state,
        "verified": peer.verified,
        "last_seen": peer.last_seen,
        "missed_beats": peer.missed_beats,
    }
