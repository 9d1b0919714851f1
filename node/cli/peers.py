"""How nodes and peers look on the command line: `orc peers`, `orc-node status` (text and JSON)."""

from __future__ import annotations

import time
from typing import Any

from orc.node.cli.phrasing import ago
from orc.node.protocol.description import ModelOffer, NodeDescription
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


def _model_note(model: ModelOffer) -> str:
    """" (130 x4)": decode tokens/s alone and the slots; "(unavailable)", "(on disk)"."""
    if model.unavailable:
        return " (unavailable)"
    if not model.loaded:
        return " (on disk)"
    slots = f" x{model.capacity}" if model.capacity > 1 else ""
    return f" ({model.decode_tokens_per_s:.0f}{slots})" if model.decode_tokens_per_s else slots


def peers_table(peers: tuple[PeerView, ...], now: float | None = None) -> list[str]:
    """`orc peers` as aligned text lines."""
    now = time.time() if now is None else now
    rows = [("NODE", "NAME", "ADDRESS", "STATE", "HARDWARE", "MODELS (tok/s)", "LOAD", "SEEN")]
    for peer in peers:
        d = peer.description
        state = peer.state + ("" if peer.verified else " (unverified)")
        seen = "never" if peer.last_seen is None else ago(min(peer.last_seen, now), now)
        if d is None:
            rows.append((peer.id or "?", "", peer.address, state, "", "", "", seen))
            continue
        hw = d.hardware
        ram = f"{hw.ram_total_bytes / (1 << 30):.0f}G" if hw.ram_total_bytes else "?"
        hardware = f"{hw.arch} {hw.cores}c {ram} {hw.accelerator}"
        models = ", ".join(m.id + _model_note(m) for m in d.models) or "-"
        load = f"{d.load.active_generations} running"
        rows.append((d.node_id, d.name, peer.address, state, hardware, models, load, seen))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join(cell.ljust(widths[i]) if i < len(widths) else cell for i, cell in enumerate(row)).rstrip()
            for row in rows]
