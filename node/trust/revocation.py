"""The mesh's revocation log: CA-signed, hash-chained entries that peers gossip (a pure core).

Entry n carries `prev_hash` = SHA-256 of entry n-1's canonical encoding (32 zero bytes for
entry 1) and the CA's ECDSA-SHA256 signature over its own canonical encoding. The canonical
encoding is msgpack of `["orc.revocation.v1", seq, node_id, revoked_at, reason, prev_hash]`:
every field but the signature. The hash deliberately leaves the signature out: ECDSA signatures
are malleable (anyone can turn (r, s) into a different valid (r, n - s)), so hashing them would
let a member relay a tweaked copy of an entry that makes every later CA entry look broken.

The canonical encoding stays msgpack, and so does the log file (`encode_entries`): every entry
ever signed, and every log on disk, was made in it, and changing it would make them all fail to
verify. Between nodes the entries travel as `orc.v1.RevocationEntry` messages, field by field;
the canonical bytes are rebuilt from the fields on arrival, so the wire form does not touch what
is signed.

A log only grows by entries that continue it from its head; anything else is refused whole.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

import msgpack
from cryptography.hazmat.primitives.asymmetric import ec

from orc.node.trust.certificates import MeshAuthority, verify_signature
from orc.node.trust.errors import InvalidNodeId, RevocationLogInvalid, RevocationRefused
from orc.node.protocol.ids import NodeId, is_node_id
from orc.node.protocol.revocation_entry import (
    MAX_REASON_CHARS,
    MalformedRevocationEntry,
    RevocationEntry,
)

GENESIS_HASH = bytes(32)
# One message of entries from a peer: stops a member (or a bug) making us decode and verify an
# unbounded batch; a longer log is fetched in several rounds with `after(seq)`.
MAX_ENTRIES_PER_MESSAGE = 4096
# An encoded entry is under 1 KiB even with the longest reason; bounds the bytes we will parse.
_MAX_ENTRY_BYTES = 1024


@dataclass(frozen=True)
class RevocationLog:
    """The entries 1..seq, in order, each chained to the one before."""

    entries: tuple[RevocationEntry, ...] = ()

    def __post_init__(self) -> None:
        head = GENESIS_HASH
        for position, entry in enumerate(self.entries, start=1):
            if entry.seq != position or entry.prev_hash != head:
                raise RevocationLogInvalid(f"revocation entry {entry.seq} does not continue the log at {position}")
            head = entry.hash

    @classmethod
    def verified(cls, entries: Iterable[RevocationEntry], ca_public_key: ec.EllipticCurvePublicKey) -> RevocationLog:
        """A whole log received from elsewhere (a join reply, a file), every signature checked."""
        return cls().extend(entries, ca_public_key)

    @property
    def seq(self) -> int:
        return self.entries[-1].seq if self.entries else 0

    @property
    def head_hash(self) -> bytes:
        """The prev_hash the next entry must carry."""
        return self.entries[-1].hash if self.entries else GENESIS_HASH

    @cached_property
    def revoked_ids(self) -> frozenset[NodeId]:
        return frozenset(entry.node_id for entry in self.entries)

    def is_revoked(self, node_id: str) -> bool:
        return node_id in self.revoked_ids

    def after(self, seq: int) -> tuple[RevocationEntry, ...]:
        """The entries with a sequence number above `seq` (what a peer at `seq` is missing)."""
        return self.entries[max(seq, 0):]

    def append(self, authority: MeshAuthority, node_id: str, reason: str, now: float) -> RevocationLog:
        """The log with a new CA-signed entry revoking `node_id` (CA holders only)."""
        if not isinstance(node_id, str) or not is_node_id(node_id):
            shown = repr(node_id[:40]) if isinstance(node_id, str) else type(node_id).__name__
            raise InvalidNodeId(f"{shown} is not a node id: ids are 20 lowercase letters and digits, "
                                "as `orc-node peers` shows them")
        if self.is_revoked(node_id):
            raise RevocationRefused(f"node {node_id} is already revoked")
        if len(reason) > MAX_REASON_CHARS:
            raise RevocationRefused(f"the reason is {len(reason)} characters; keep it under {MAX_REASON_CHARS}")
        unsigned = dict(seq=self.seq + 1, node_id=NodeId(node_id), revoked_at=float(now), reason=reason,
                        prev_hash=self.head_hash)
        draft = RevocationEntry(**unsigned, signature=b"\0")
        entry = RevocationEntry(**unsigned, signature=authority.sign(draft.signed_bytes))
        return RevocationLog(self.entries + (entry,))

    def extend(self, entries: Iterable[RevocationEntry], ca_public_key: ec.EllipticCurvePublicKey) -> RevocationLog:
        """The log grown by `entries`, all or nothing; raise RevocationLogInvalid (this log is unchanged).

        Entries we already hold are skipped if their signed content is identical (the
        signature bytes may differ, see the module docstring); the rest must continue the chain
        from our head, in order, each signed by the mesh CA.
        """
        grown = list(self.entries)
        for entry in entries:
            if not isinstance(entry, RevocationEntry):
                raise RevocationLogInvalid("revocations must be RevocationEntry values")
            if entry.seq <= len(grown):
                if entry.signed_bytes != grown[entry.seq - 1].signed_bytes:
                    raise RevocationLogInvalid(f"revocation entry {entry.seq} differs from the one we hold")
                continue
            if entry.seq != len(grown) + 1:
                raise RevocationLogInvalid(f"revocation entry {entry.seq} leaves a gap after entry {len(grown)}")
            head = grown[-1].hash if grown else GENESIS_HASH
            if entry.prev_hash != head:
                raise RevocationLogInvalid(f"revocation entry {entry.seq} does not chain to entry {len(grown)}")
            if not verify_signature(ca_public_key, entry.signature, entry.signed_bytes):
                raise RevocationLogInvalid(f"revocation entry {entry.seq} is not signed by this mesh's CA")
            grown.append(entry)
        if len(grown) == len(self.entries):
            return self
        return RevocationLog(tuple(grown))


def encode_entries(entries: Iterable[RevocationEntry]) -> bytes:
    """The msgpack file form (`revocations.log`): a list of [seq, node_id, revoked_at, reason, prev_hash, signature]."""
    return msgpack.packb([[e.seq, e.node_id, e.revoked_at, e.reason, e.prev_hash, e.signature] for e in entries],
                         use_bin_type=True)


def decode_entries(data: bytes, limit: int = MAX_ENTRIES_PER_MESSAGE) -> tuple[RevocationEntry, ...]:
    """Parse `encode_entries` output from an untrusted source; raise RevocationLogInvalid for anything else.

    Checks shape, types and sizes only; signatures and the chain are checked by `extend`.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise RevocationLogInvalid("revocation entries must be bytes")
    if len(data) > limit * _MAX_ENTRY_BYTES + 8:
        raise RevocationLogInvalid(f"{len(data)} bytes of revocation entries is more than {limit} entries can take")
    try:
        # No maps or extension types belong here; refusing them up front keeps the parser simple.
        decoded = msgpack.unpackb(bytes(data), raw=False, use_list=True, max_map_len=0, max_ext_len=0,
                                  max_array_len=max(limit, 6))
    except (ValueError, TypeError, OverflowError, msgpack.exceptions.UnpackException) as error:
        raise RevocationLogInvalid(f"revocation entries are not valid msgpack ({type(error).__name__})") from None
    if not isinstance(decoded, list):
        raise RevocationLogInvalid("revocation entries must be a list")
    if len(decoded) > limit:
        raise RevocationLogInvalid(f"{len(decoded)} revocation entries in one message; at most {limit} are accepted")
    entries = []
    for item in decoded:
        if not isinstance(item, list) or len(item) != 6:
            raise RevocationLogInvalid("a revocation entry must be a list of 6 fields")
        try:
            entries.append(RevocationEntry(*item))  # validates every field
        except MalformedRevocationEntry as error:
            raise RevocationLogInvalid(str(error)) from None
    return tuple(entries)
