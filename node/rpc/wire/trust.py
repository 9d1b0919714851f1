"""Trust upkeep on the wire: revocation entries and joins."""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf.internal.containers import RepeatedCompositeFieldContainer

from orc.node.protocol.messages import JoinGrant, JoinRequest
from orc.node.rpc.wire import checks as check
from orc.node.rpc.wire.checks import MAX_SECRET, capped, fail
from orc.node.protocol.ids import NodeId
from orc.node.protocol.revocation_entry import MalformedRevocationEntry, RevocationEntry
from orc.node.trust.revocation import MAX_ENTRIES_PER_MESSAGE
from orc.proto.v1 import mesh_pb2 as pb

# The entries travel as messages, field by field; what the CA signs is not these bytes but the
# entry's canonical msgpack encoding (`RevocationEntry.signed_bytes`), rebuilt from the fields on
# each side. Every field converts without loss (an int, a str, a float64, bytes), so an entry
# signed before the wire carried messages, or read from a log on disk, verifies unchanged.


def revocations_to_wire(entries: Iterable[RevocationEntry]) -> list[pb.RevocationEntry]:
    return [pb.RevocationEntry(seq=e.seq, node_id=e.node_id, revoked_at=e.revoked_at, reason=e.reason,
                               prev_hash=e.prev_hash, signature=e.signature) for e in entries]


def revocations_from_wire(messages: RepeatedCompositeFieldContainer[pb.RevocationEntry],
                          what: str) -> tuple[RevocationEntry, ...]:
    """The entries, each well-formed (types and sizes; signatures and the chain are the log's to check)."""
    entries = []
    for message in capped(messages, what, MAX_ENTRIES_PER_MESSAGE):
        try:
            entries.append(RevocationEntry(message.seq, NodeId(message.node_id), message.revoked_at, message.reason,
                                           message.prev_hash, message.signature))
        except MalformedRevocationEntry as error:
            fail(what, str(error))
    return tuple(entries)


def join_request_from_wire(message: pb.JoinRequest) -> JoinRequest:
    return JoinRequest(
        secret=check.label(message.secret, "join secret", MAX_SECRET),
        csr_pem=check.pem(message.csr_pem, "certificate request"),
        name=check.node_name(message.name, "node name"),
    )


def join_grant_to_wire(grant: JoinGrant) -> pb.JoinReply:
    return pb.JoinReply(certificate_pem=grant.certificate_pem, ca_certificate_pem=grant.ca_certificate_pem,
                        revocation_log=revocations_to_wire(grant.revocation_entries))


def join_grant_from_wire(message: pb.JoinReply) -> JoinGrant:
    return JoinGrant(check.pem(message.certificate_pem, "certificate"),
                     check.pem(message.ca_certificate_pem, "CA certificate"),
                     revocations_from_wire(message.revocation_log, "revocation log"))
