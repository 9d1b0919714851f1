"""Where the node's domain errors (`orc.node.protocol.errors`) cross the wire, both ways.

`status_for(error)` is the only mapping from an error to a gRPC status (every servicer and the
authorization interceptor use it, through `abort`); `error_from_status(code, details, kind)`
(through `error_from_rpc`) is the only mapping back to an exception (every client uses it). A
trailing-metadata key carries the error's kind, so a client gets the precise class back (a
`Revoked`, not merely a `PermissionDenied`) when the server is an orc node. The table
`_STATUS` is the one mapping between the domain's error categories and status codes.
"""

from __future__ import annotations

import logging
from typing import NoReturn

import grpc

from orc.node.protocol.errors import ERROR_KINDS, GENERAL_ERROR, Category, Internal, NodeError

log = logging.getLogger(__name__)

# Trailing-metadata key naming the error class a server aborted with (lowercase: HTTP/2 rule).
KIND_KEY = "orc-error"

# The one mapping between the domain's error categories and gRPC status codes.
_STATUS: dict[Category, grpc.StatusCode] = {
    Category.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    Category.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    Category.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Category.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    Category.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    Category.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Category.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    Category.DEADLINE_EXCEEDED: grpc.StatusCode.DEADLINE_EXCEEDED,
    Category.CANCELLED: grpc.StatusCode.CANCELLED,
    Category.UNIMPLEMENTED: grpc.StatusCode.UNIMPLEMENTED,
    Category.INTERNAL: grpc.StatusCode.INTERNAL,
}
# The way back; OUT_OF_RANGE (which grpc itself may send) is a kind of invalid argument. A code
# not in here (UNKNOWN, DATA_LOSS, ...) comes from something that is not an orc node: internal.
_CATEGORY: dict[grpc.StatusCode, Category] = {status: category for category, status in _STATUS.items()}
_CATEGORY[grpc.StatusCode.OUT_OF_RANGE] = Category.INVALID_ARGUMENT

_KINDS: dict[str, type[NodeError]] = {cls.__name__: cls for cls in ERROR_KINDS}

_MAX_DETAILS = 1024  # status details are for people; a peer cannot make us carry a novel


def status_for(error: BaseException) -> tuple[grpc.StatusCode, str, str]:
    """(status code, details, kind) for an error a servicer or the interceptor ran into.

    Errors orc does not know are bugs: they become INTERNAL with a generic message (the
    details stay in this node's log, never on the wire).
    """
    if isinstance(error, NodeError):
        return _STATUS[error.category], str(error)[:_MAX_DETAILS], type(error).__name__
    return grpc.StatusCode.INTERNAL, "internal error on the serving node (see its log)", Internal.__name__


def error_from_status(code: grpc.StatusCode, details: str | None, kind: str | None = None) -> NodeError:
    """The exception a client raises for a failed call."""
    text = (details or "")[:_MAX_DETAILS]
    category = _CATEGORY.get(code, Category.INTERNAL)
    cls = _KINDS.get(kind or "")
    if cls is None or cls.category is not category:  # an unknown or inconsistent kind is ignored
        cls = GENERAL_ERROR[category]
    return cls(text)


def error_from_rpc(error: grpc.aio.AioRpcError | grpc.RpcError) -> NodeError:
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
    if not isinstance(error, NodeError):
        log.error("%s failed", method or "a call", exc_info=error)
    await context.abort(code, details, trailing_metadata=((KIND_KEY, kind),))
    raise AssertionError("context.abort returned")  # it always raises
