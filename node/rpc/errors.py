"""The RPC layer's errors, and the two places they cross the wire.

`status_for(error)` is the only mapping from an error to a gRPC status (every servicer and the
authorization interceptor use it, through `abort`); `error_from_status(code, details, kind)`
(through `error_from_rpc`) is the only mapping back to an exception (every client uses it). A
trailing-metadata key carries the error's kind, so a client gets the precise class back (a
`Revoked`, not merely a `PermissionDenied`) when the server is an orc node. Leaf docstrings are
written for the person running orc.
"""

from __future__ import annotations

import logging
from typing import NoReturn

import grpc

log = logging.getLogger(__name__)

# Trailing-metadata key naming the error class a server aborted with (lowercase: HTTP/2 rule).
KIND_KEY = "orc-error"


class RpcError(Exception):
    """Base of every error raised by orc.node.rpc."""

    code = grpc.StatusCode.INTERNAL

    def __init__(self, message: str = "") -> None:
        super().__init__(message or " ".join((type(self).__doc__ or "").split()))

    @property
    def message(self) -> str:
        return str(self)


class Unauthenticated(RpcError):
    """The caller did not prove membership of this mesh with a valid node certificate."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(RpcError):
    """The caller is a known party but not allowed to do that."""

    code = grpc.StatusCode.PERMISSION_DENIED


class Revoked(PermissionDenied):
    """This node's certificate has been revoked by the mesh; it cannot take part any more."""


class JoinRefused(PermissionDenied):
    """The join was refused: the token is wrong, used or expired. Ask for a new one with `orc-node invite`."""


class PinMismatch(PermissionDenied):
    """The join server's certificate does not match the token's pin: it is not the mesh you were
    invited to (or something is in between). Nothing was sent to it."""


class PeerNotInMesh(PermissionDenied):
    """The node at that address did not prove membership of this mesh."""


class ResourceExhausted(RpcError):
    """The other side is out of capacity for this request (too large, too many)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class RateLimited(ResourceExhausted):
    """Too many calls from this node in a short time; slow down and try again."""


class NotCertificateAuthority(RpcError):
    """This node does not hold the mesh CA key; run that on the node that created the mesh."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class InvalidRequest(RpcError):
    """The request is malformed or out of bounds."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class WireError(InvalidRequest):
    """A message from another node or process is malformed; it was dropped."""


class NotFound(RpcError):
    """There is no such thing here."""

    code = grpc.StatusCode.NOT_FOUND


class Unavailable(RpcError):
    """The node cannot be reached (not running, unreachable, or not the node expected)."""

    code = grpc.StatusCode.UNAVAILABLE


class DaemonNotRunning(Unavailable):
    """No orc-node daemon answers on this home's control socket; start it with `orc-node start`."""


class DaemonStarting(Unavailable):
    """The orc-node daemon is still starting; ask again in a moment."""


class SocketInUse(Unavailable):
    """Another orc-node daemon already serves this home's control socket; stop it first."""


class MeshCannotRun(RpcError):
    """No node of the mesh can run part of this ensemble (a model or tag nobody has); nothing ran."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class SocketPathInvalid(RpcError):
    """The control socket path cannot be used (too long for a Unix socket, or not a socket)."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class TimedOut(RpcError):
    """The other node did not answer in time."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Cancelled(RpcError):
    """The call was cancelled."""

    code = grpc.StatusCode.CANCELLED


class NotImplementedYet(RpcError):
    """The other node does not offer that call (yet)."""

    code = grpc.StatusCode.UNIMPLEMENTED


class Internal(RpcError):
    """The other node failed unexpectedly; its log has the details."""

    code = grpc.StatusCode.INTERNAL


_KINDS: dict[str, type[RpcError]] = {
    cls.__name__: cls
    for cls in (Unauthenticated, PermissionDenied, Revoked, JoinRefused, PinMismatch, PeerNotInMesh,
                ResourceExhausted, RateLimited, NotCertificateAuthority, InvalidRequest, WireError,
                NotFound, Unavailable, DaemonNotRunning, DaemonStarting, SocketInUse, MeshCannotRun, SocketPathInvalid, TimedOut, Cancelled, NotImplementedYet, Internal)
}

# The class a status code means when the server did not say more (not an orc node, or grpc
# itself refused: message too large, deadline, connection lost).
_BY_CODE: dict[grpc.StatusCode, type[RpcError]] = {
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.FAILED_PRECONDITION: NotCertificateAuthority,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequest,
    grpc.StatusCode.OUT_OF_RANGE: InvalidRequest,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: TimedOut,
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.UNIMPLEMENTED: NotImplementedYet,
}

_MAX_DETAILS = 1024  # status details are for people; a peer cannot make us carry a novel


def status_for(error: BaseException) -> tuple[grpc.StatusCode, str, str]:
    """(status code, details, kind) for an error a servicer or the interceptor ran into.

    Errors orc does not know are bugs: they become INTERNAL with a generic message (the
    details stay in this node's log, never on the wire).
    """
    if isinstance(error, RpcError):
        return error.code, str(error)[:_MAX_DETAILS], type(error).__name__
    return grpc.StatusCode.INTERNAL, "internal error on the serving node (see its log)", Internal.__name__


def error_from_status(code: grpc.StatusCode, details: str | None, kind: str | None = None) -> RpcError:
    """The exception a client raises for a failed call."""
    text = (details or "")[:_MAX_DETAILS]
    cls = _KINDS.get(kind or "")
    if cls is None or cls.code != code:  # an unknown or inconsistent kind is ignored
        cls = _BY_CODE.get(code, Internal)
    return cls(text)


def error_from_rpc(error: grpc.aio.AioRpcError | grpc.RpcError) -> RpcError:
    """The exception for a failed grpc call (reads the kind from the trailing metadata)."""
    code = error.code() if callable(getattr(error, "code", None)) else grpc.StatusCode.UNKNOWN
    details = error.details() if callable(getattr(error, "details", None)) else None
    kind = None
    trailing = error.trailing_metadata() if callable(getattr(error, "trailing_metadata", None)) else None
    for key, value in trailing or ():
        if key == KIND_KEY and isinstance(value, str):
            kind = value
    return error_from_status(code, details, kind)


async def abort(context: grpc.aio.ServicerContext, error: BaseException, method: str = "") -> NoReturn:
    """End the call with the status `error` maps to (logging errors orc does not know)."""
    code, details, kind = status_for(error)
    if not isinstance(error, RpcError):
        log.error("%s failed", method or "a call", exc_info=error)
    await context.abort(code, details, trailing_metadata=((KIND_KEY, kind),))
    raise AssertionError("context.abort returned")  # it always raises
