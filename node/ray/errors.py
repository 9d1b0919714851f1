"""What can go wrong reaching or using a Ray cluster.

They are `NodeError`s of the `Unavailable` kind, so the command line maps them like an
unreachable mesh (exit 3), except a malformed address, which is the user's input (exit 2).
"""

from __future__ import annotations

from orc.node.protocol.errors import InvalidRequest, Unavailable


class RayError(Unavailable):
    """The Ray cluster cannot run this now."""


class RayNotInstalled(RayError):
    """Running on a Ray cluster needs Ray: pip install 'orc-mesh[ray]'."""


class ClusterUnreachable(RayError):
    """No Ray cluster answers at the address given (is `ray start --head` running there?)."""


class BadAddress(InvalidRequest):
    """The Ray address is not of the form ray://HOST:PORT."""
