"""The node's domain errors: what trust, the worker, the links, the daemon and the RPC layer raise.

They know nothing of gRPC. Each class has a `category` (what kind of failure it is, in words a
status code can be chosen from); `orc.node.rpc.errors` is the one place a category becomes a
gRPC status and a status becomes an error again, and `orc.node.cli.errors` is the one place an
error becomes an exit code. The class name travels with a failed call, so a client gets the
precise class back (a `Revoked`, not merely a `PermissionDenied`); `ERROR_KINDS` lists the
classes a peer may name. Leaf docstrings are written for the person running orc.
"""

from __future__ import annotations

from enum import Enum
from typing import ClassVar


class Category(str, Enum):
    """What kind of failure an error is; the RPC boundary picks a status code from it."""

    UNAUTHENTICATED = "unauthenticated"
    PERMISSION_DENIED = "permission_denied"
    RESOURCE_EXHAUSTED = "resource_exhausted"
    FAILED_PRECONDITION = "failed_precondition"
    INVALID_ARGUMENT = "invalid_argument"
    NOT_FOUND = "not_found"
    UNAVAILABLE = "unavailable"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    CANCELLED = "cancelled"
    UNIMPLEMENTED = "unimplemented"
    INTERNAL = "internal"


class NodeError(Exception):
    """Base of every domain error a node raises to a caller (a peer, the CLI, its own coordinator)."""

    category: ClassVar[Category] = Category.INTERNAL

    def __init__(self, message: str = "") -> None:
        super().__init__(message or " ".join((type(self).__doc__ or "").split()))

    @property
    def message(self) -> str:
        return str(self)


class Unauthenticated(NodeError):
    """The caller did not prove membership of this mesh with a valid node certificate."""

    category = Category.UNAUTHENTICATED


class PermissionDenied(NodeError):
    """The caller is a known party but not allowed to do that."""

    category = Category.PERMISSION_DENIED


class Revoked(PermissionDenied):
    """This node's certificate has been revoked by the mesh; it cannot take part any more."""


class JoinRefused(PermissionDenied):
    """The join was refused: the token is wrong, used or expired. Ask for a new one with `orc-node invite`."""


class PinMismatch(PermissionDenied):
    """The join server's certificate does not match the token's pin: it is not the mesh you were
    invited to (or something is in between). Nothing was sent to it."""


class PeerNotInMesh(PermissionDenied):
    """The node at that address did not prove membership of this mesh."""


class ResourceExhausted(NodeError):
    """The other side is out of capacity for this request (too large, too many)."""

    category = Category.RESOURCE_EXHAUSTED


class RateLimited(ResourceExhausted):
    """Too many calls from this node in a short time; slow down and try again."""


class NotCertificateAuthority(NodeError):
    """This node does not hold the mesh CA key; run that on the node that created the mesh."""

    category = Category.FAILED_PRECONDITION


class InvalidRequest(NodeError):
    """The request is malformed or out of bounds."""

    category = Category.INVALID_ARGUMENT


class WireError(InvalidRequest):
    """A message from another node or process is malformed; it was dropped."""


class NotFound(NodeError):
    """There is no such thing here."""

    category = Category.NOT_FOUND


class Unavailable(NodeError):
    """The node cannot be reached (not running, unreachable, or not the node expected)."""

    category = Category.UNAVAILABLE


class DaemonNotRunning(Unavailable):
    """No orc-node daemon answers on this home's control socket; start it with `orc-node start`."""


class DaemonStarting(Unavailable):
    """The orc-node daemon is still starting; ask again in a moment."""


class SocketInUse(Unavailable):
    """Another orc-node daemon already serves this home's control socket; stop it first."""


class MeshCannotRun(NodeError):
    """No node of the mesh can run part of this ensemble (a model or tag nobody has); nothing ran."""

    category = Category.FAILED_PRECONDITION


class SocketPathInvalid(NodeError):
    """The control socket path cannot be used (too long for a Unix socket, or not a socket)."""

    category = Category.INVALID_ARGUMENT


class TimedOut(NodeError):
    """The other node did not answer in time."""

    category = Category.DEADLINE_EXCEEDED


class Cancelled(NodeError):
    """The call was cancelled."""

    category = Category.CANCELLED


class NotImplementedYet(NodeError):
    """The other node does not offer that call (yet)."""

    category = Category.UNIMPLEMENTED


class Internal(NodeError):
    """The other node failed unexpectedly; its log has the details."""

    category = Category.INTERNAL


# Every class a failed call may name; a name outside this tuple is ignored by the receiver.
ERROR_KINDS: tuple[type[NodeError], ...] = (
    Unauthenticated, PermissionDenied, Revoked, JoinRefused, PinMismatch, PeerNotInMesh,
    ResourceExhausted, RateLimited, NotCertificateAuthority, InvalidRequest, WireError,
    NotFound, Unavailable, DaemonNotRunning, DaemonStarting, SocketInUse, MeshCannotRun,
    SocketPathInvalid, TimedOut, Cancelled, NotImplementedYet, Internal,
)

# The class a bare category stands for, when the other side named no class this node knows.
# FAILED_PRECONDITION has no general class; the CA one is the precondition a peer can refuse.
GENERAL_ERROR: dict[Category, type[NodeError]] = {
    Category.UNAUTHENTICATED: Unauthenticated,
    Category.PERMISSION_DENIED: PermissionDenied,
    Category.RESOURCE_EXHAUSTED: ResourceExhausted,
    Category.FAILED_PRECONDITION: NotCertificateAuthority,
    Category.INVALID_ARGUMENT: InvalidRequest,
    Category.NOT_FOUND: NotFound,
    Category.UNAVAILABLE: Unavailable,
    Category.DEADLINE_EXCEEDED: TimedOut,
    Category.CANCELLED: Cancelled,
    Category.UNIMPLEMENTED: NotImplementedYet,
    Category.INTERNAL: Internal,
}
