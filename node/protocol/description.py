"""What a node says about itself: the authoritative description peers fetch over mTLS `Describe`.

These frozen types are the domain side of the wire; `orc.node.rpc.wire` converts them to and
from the `orc.v1` messages, and the mDNS TXT record carries only a coarse hint derived from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from orc.node.models.hardware import Hardware
from orc.node.protocol.ids import MeshId, NodeId

PROTOCOL_VERSION = 2  # 2: agent payloads, run events and revocation entries as messages, not msgpack
DEFAULT_PORT = 7733
# The most generations of one model a node may say it runs at once (and so the most per-batch
# speeds it lists): a larger claim would only draw work to one node.
MAX_CAPACITY = 16
MAX_UNAVAILABLE_CHARS = 512  # why a model cannot run: one line a user reads


@dataclass(frozen=True)
class ModelOffer:
    """A model this node has on disk, and whether it is loaded, how fast it ran here, how many
    generations of it run at once and whether it can run at all now."""

    id: str
    runtime: str  # "llama_cpp" | "mlx"
    sha256: str
    size_bytes: int
    loaded: bool
    prefill_tokens_per_s: float | None = None  # measured on this node, never looked up
    decode_tokens_per_s: float | None = None
    capacity: int = 1  # generations run at once (its running places), decoded together where batched
    # Per-sequence decode speed with 1, 2, ... sequences together (index 0: alone), measured here;
    # at most `capacity` entries, fewer when measuring larger batches ran out of time.
    batch_decode_tokens_per_s: tuple[float, ...] = ()
    unavailable: str = ""  # why it cannot run here now; empty when it can


@dataclass(frozen=True)
class Load:
    active_generations: int = 0
    queued: int = 0
    cpu_load_1m: float | None = None  # os.getloadavg()[0] where available
    backlog_ms: int = 0  # admitted work not yet finished, by the node's own estimate


@dataclass(frozen=True)
class PeerAddress:
    """A peer this node knows, passed on to others (peer exchange); a hint, verified before use."""

    node_id: NodeId
    address: str  # "host:port"


@dataclass(frozen=True)
class NodeDescription:
    protocol_version: int
    node_id: NodeId
    name: str
    mesh_id: MeshId
    addresses: tuple[str, ...]  # "host:port" this node's mesh server listens on
    hardware: Hardware
    models: tuple[ModelOffer, ...]
    load: Load
    revocation_seq: int  # sequence number of the newest revocation-log entry this node applied
    version: int  # bumped on every change of this description, so watchers know to re-fetch
    started_at: float  # unix seconds
    tags: tuple[str, ...] = ()
    certificate_authority: bool = False  # holds the mesh CA key: can renew certificates, revoke, invite
    known_peers: tuple[PeerAddress, ...] = field(default=())
