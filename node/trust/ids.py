"""Node and mesh identifiers, derived from public keys (never chosen, never negotiated).

`node_id` is a base32 prefix of SHA-256 over the node key's SubjectPublicKeyInfo (DER), so it
stays the same across certificate renewals and cannot be claimed without the private key.
`mesh_id` is the same construction over the mesh CA's key; the join token's pin is a longer
prefix of that hash, so a joiner can tell from the token alone which mesh it is joining. The id
types and their shape check are the protocol's (`orc.node.protocol.ids`).
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from orc.node.protocol.ids import MESH_ID_LENGTH, NODE_ID_LENGTH, MeshId, NodeId

# 26 characters = 130 bits: the pin in a join token authenticates the CA to the joiner.
CA_PIN_LENGTH = 26

SERVER_NAME_SUFFIX = "orc.internal"


def spki_sha256(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """SHA-256 of the key's DER-encoded SubjectPublicKeyInfo."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).digest()


def _b32(digest: bytes, length: int) -> str:
    return base64.b32encode(digest).decode("ascii").lower().rstrip("=")[:length]


def node_id_for(public_key: ec.EllipticCurvePublicKey) -> NodeId:
    return NodeId(_b32(spki_sha256(public_key), NODE_ID_LENGTH))


def mesh_id_for(ca_public_key: ec.EllipticCurvePublicKey) -> MeshId:
    return MeshId(_b32(spki_sha256(ca_public_key), MESH_ID_LENGTH))


def ca_pin_for(ca_public_key: ec.EllipticCurvePublicKey) -> str:
    return _b32(spki_sha256(ca_public_key), CA_PIN_LENGTH)


def mesh_id_from_pin(pin: str) -> MeshId:
    """The mesh a join token's pin belongs to (the pin is a longer prefix of the same hash)."""
    return MeshId(pin[:MESH_ID_LENGTH])


def server_name(node_id: NodeId) -> str:
    """The TLS name a node's certificate carries and a client must ask for: `<node_id>.orc.internal`."""
    return f"{node_id}.{SERVER_NAME_SUFFIX}"

