"""Node and mesh identifiers, derived from public keys (never chosen, never negotiated).

`node_id` is a base32 prefix of SHA-256 over the node key's SubjectPublicKeyInfo (DER), so it
stays the same across certificate renewals and cannot be claimed without the private key.
`mesh_id` is the same construction over the mesh CA's key; the join token's pin is a longer
prefix of that hash, so a joiner can tell from the token alone which mesh it is joining.
"""

from __future__ import annotations

import base64
import hashlib
from typing import NewType

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

NodeId = NewType("NodeId", str)
MeshId = NewType("MeshId", str)

# 20 base32 characters = 100 bits: a second key with the same id costs ~2^100 work.
NODE_ID_LENGTH = 20
# 16 characters = 80 bits: enough to tell meshes apart on a LAN; trust never rests on it
# alone (membership is proven by the CA signature during the TLS handshake).
MESH_ID_LENGTH = 16
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


_ALPHABET = set("abcdefghijklmnopqrstuvwxyz234567")


def is_node_id(text: str) -> bool:
    return len(text) == NODE_ID_LENGTH and set(text) <= _ALPHABET


def is_mesh_id(text: str) -> bool:
    return len(text) == MESH_ID_LENGTH and set(text) <= _ALPHABET
