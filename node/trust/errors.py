"""The identity package's errors. Leaf docstrings are written for the person running orc-node.

Every error carries a message that names the file or value at fault and what to do about it;
the docstring is the fallback when a message is empty.
"""

from __future__ import annotations


class IdentityError(Exception):
    """Base of every error raised by orc.node.trust."""


class IdentityCorrupt(IdentityError):
    """An identity file is damaged; restore it from a backup or move the identity folder away and join again."""


class IdentityPermissionError(IdentityError):
    """The identity folder or a key file can be read by other users; tighten it with chmod as the message says."""


class NotMember(IdentityError):
    """This node is not in a mesh yet; run `orc-node init` or `orc-node start --join TOKEN`."""


class AlreadyMember(IdentityError):
    """This node already belongs to a mesh; move its identity folder away first to start over."""


class InvalidNodeName(IdentityError):
    """A node name is 1-63 characters of letters, digits, '.', '_' and '-'."""


class InvalidNodeId(IdentityError):
    """That is not a node id: ids are 20 lowercase letters and digits, as `orc-node peers` shows them."""


class InvalidJoinToken(IdentityError):
    """That is not a join token; copy the whole `orc1-...` line that `orc-node invite` printed."""


class CsrInvalid(IdentityError):
    """The certificate request is malformed, not self-signed, or not for a P-256 key; nothing was issued."""


class CertificateInvalid(IdentityError):
    """The certificate is malformed or does not belong to this mesh and node."""


class RevocationLogInvalid(IdentityError):
    """Revocation entries were refused (bad signature, broken chain or malformed); the log is unchanged."""


class RevocationRefused(IdentityError):
    """That revocation cannot be recorded; the message says why."""
