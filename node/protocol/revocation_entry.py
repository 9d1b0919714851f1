"""One revocation as it is signed, stored and sent: a frozen record whose fields are checked on
construction, and its canonical encoding.

The canonical encoding is msgpack of `["orc.revocation.v1", seq, node_id, revoked_at, reason,
prev_hash]`: what the CA signs and what the next entry's `prev_hash` covers. The log that chains
and verifies entries is trust's (`orc.node.trust.revocation`); this record lives here because it
crosses the wire (the join grant, the revocations reply).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import msgpack

from orc.node.protocol.ids import NodeId, is_node_id

_DOMAIN = "orc.revocation.v1"  # keeps these signatures from meaning anything in another protocol
MAX_REASON_CHARS = 200
# A P-256 ECDSA signature in DER is at most 72 bytes; anything longer is not one.
MAX_SIGNATURE_BYTES = 80


class MalformedRevocationEntry(ValueError):
    """A field of a revocation entry has the wrong type or size (so decoded junk cannot exist)."""


@dataclass(frozen=True)
class RevocationEntry:
    """One CA-signed revocation; its fields are checked on construction (so decoded junk cannot exist)."""

    seq: int
    node_id: NodeId
    revoked_at: float
    reason: str
    prev_hash: bytes
    signature: bytes

    def __post_init__(self) -> None:
        problem = _field_problem(self)
        if problem is not None:
            raise MalformedRevocationEntry(f"a revocation entry is malformed: {problem}")

    @property
    def signed_bytes(self) -> bytes:
        """The canonical encoding: what the CA signs and what the next entry's prev_hash covers."""
        return msgpack.packb([_DOMAIN, self.seq, self.node_id, self.revoked_at, self.reason, self.prev_hash],
                             use_bin_type=True)

    @property
    def hash(self) -> bytes:
        return hashlib.sha256(self.signed_bytes).digest()


def _field_problem(entry: RevocationEntry) -> str | None:
    # `type(...) is` rather than isinstance: True is an int to isinstance, and msgpack would
    # encode it differently, breaking the signature of an otherwise equal entry.
    if type(entry.seq) is not int or not 1 <= entry.seq < 2**63:
        return "seq must be a positive integer"
    if type(entry.node_id) is not str or not is_node_id(entry.node_id):
        return "node_id is not a node id"
    if type(entry.revoked_at) is not float or not math.isfinite(entry.revoked_at):
        return "revoked_at must be a finite float"
    if type(entry.reason) is not str or len(entry.reason) > MAX_REASON_CHARS:
        return f"reason must be text of at most {MAX_REASON_CHARS} characters"
    if type(entry.prev_hash) is not bytes or len(entry.prev_hash) != 32:
        return "prev_hash must be 32 bytes"
    if type(entry.signature) is not bytes or not 0 < len(entry.signature) <= MAX_SIGNATURE_BYTES:
        return "signature has the wrong size"
    return None
