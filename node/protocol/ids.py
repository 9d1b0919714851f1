"""Node and mesh ids as the protocol carries them: their types and the check of their shape.

An id is derived from a public key (`orc.node.trust.ids` does that); here it is only a string of
a fixed length over the lowercase base32 alphabet, which is all a message can be checked for.
"""

from __future__ import annotations

from typing import NewType

NodeId = NewType("NodeId", str)
MeshId = NewType("MeshId", str)

# 20 base32 characters = 100 bits: a second key with the same id costs ~2^100 work.
NODE_ID_LENGTH = 20
# 16 characters = 80 bits: enough to tell meshes apart on a LAN; trust never rests on it
# alone (membership is proven by the CA signature during the TLS handshake).
MESH_ID_LENGTH = 16

_ALPHABET = frozenset("abcdefghijklmnopqrstuvwxyz234567")


def is_node_id(text: str) -> bool:
    return len(text) == NODE_ID_LENGTH and set(text) <= _ALPHABET


def is_mesh_id(text: str) -> bool:
    return len(text) == MESH_ID_LENGTH and set(text) <= _ALPHABET
