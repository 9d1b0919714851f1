"""The mesh as the dashboard shows it (`GET /api/mesh`, the `mesh` event): this node first, then
its peers by name, each in the shape of `orc peers --json` cut to what the page draws."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orc.node.protocol.description import NodeDescription
from orc.node.protocol.json_views import description_json
from orc.node.protocol.messages import PeerView

Json = dict[str, Any]

_MODEL_FIELDS = ("id", "runtime", "loaded", "size_bytes", "prefill_tokens_per_s", "decode_tokens_per_s", "capacity",
                 "unavailable")


@dataclass(frozen=True)
class MeshSnapshot:
    """This node's description (None while it starts) and every peer it knows, at one moment."""

    own: NodeDescription | None
    peers: tuple[PeerView, ...]

    def node_name(self, node_id: str) -> str | None:
        """The name node `node_id` gives itself, if this node knows it."""
        if self.own is not None and self.own.node_id == node_id:
            return self.own.name
        return next((p.description.name for p in self.peers
                     if p.description is not None and p.description.node_id == node_id), None)


def mesh_json(mesh: MeshSnapshot) -> Json:
    """{"self": this node's id, "nodes": [this node, then the peers sorted by name]}."""
    nodes = []
    if mesh.own is not None:
        own = mesh.own
        nodes.append({**_described(own), "node_id": own.node_id, "name": own.name, "self": True, "state": "self",
                      "address": own.addresses[0] if own.addresses else None, "last_seen": None})
    peers = []
    for peer in mesh.peers:
        described = _described(peer.description) if peer.description is not None else {
            "hardware": None, "models": [], "load": None, "tags": []}
        name = peer.description.name if peer.description is not None else peer.address
        peers.append({**described, "node_id": peer.id, "name": name, "self": False, "state": peer.state,
                      "address": peer.address or None, "last_seen": peer.last_seen})
    nodes += sorted(peers, key=lambda n: (n["name"], n["node_id"] or ""))
    return {"self": mesh.own.node_id if mesh.own is not None else None, "nodes": nodes}


def _described(description: NodeDescription) -> Json:
    full = description_json(description)
    return {"hardware": full["hardware"], "models": [{k: m[k] for k in _MODEL_FIELDS} for m in full["models"]],
            "load": full["load"], "tags": full["tags"]}
