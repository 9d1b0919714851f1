"""How nodes and peers look on the command line: `orc peers`, `orc-node status` (text; the JSON is `orc.node.protocol.json_views`)."""

from __future__ import annotations

import time

from orc.node.cli.phrasing import ago
from orc.node.protocol.description import ModelOffer
from orc.node.protocol.messages import PeerView


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
