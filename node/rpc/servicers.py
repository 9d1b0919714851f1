"""The gRPC servicers: translate each call with `wire`, delegate to a backend, map errors once.

No decision is made here. The caller of a mesh call is the `current_caller` the `Authorizer`
set; a servicer running without it refuses every call rather than serve an unknown caller.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import grpc

from orc.node.protocol.ids import NodeId
from orc.node.rpc import wire
from orc.node.rpc.authorization import current_caller
from orc.node.rpc.backends import ControlBackend, JoinBackend, NodeBackend
from orc.node.protocol.errors import Unauthenticated
from orc.node.rpc.errors import abort
from orc.node.protocol.messages import (
    CancelReply,
    PeersReply,
    RenewReply,
    RevocationsReply,
    RevokeReply,
)
from orc.proto.v1 import control_pb2 as cpb
from orc.proto.v1 import control_pb2_grpc as control_grpc
from orc.proto.v1 import mesh_pb2 as pb
from orc.proto.v1 import mesh_pb2_grpc as mesh_grpc

_T = TypeVar("_T")
Context = grpc.aio.ServicerContext


def _caller() -> NodeId:
    try:
        return current_caller.get()
    except LookupError:
        raise Unauthenticated("this server checks no caller identity; refusing (the Authorizer is missing)") from None


@contextlib.asynccontextmanager
async def _closing(items: AsyncIterator[_T]) -> AsyncIterator[AsyncIterator[_T]]:
    """Close a backend's stream when the call ends early (client gone, cut off)."""
    try:
        yield items
    finally:
        close = getattr(items, "aclose", None)
        if close is not None:
            await close()


class NodeServicer(mesh_grpc.NodeServicer):
    def __init__(self, backend: NodeBackend) -> None:
        self._backend = backend

    async def Describe(self, request: pb.DescribeRequest, context: Context) -> Any:
        try:
            _caller()
            return wire.to_wire(self._backend.describe())
        except Exception as error:  # noqa: BLE001 - mapped to a status in one place
            await abort(context, error, "Describe")

    async def Watch(self, request: pb.WatchRequest, context: Context) -> AsyncIterator[Any]:
        try:
            addresses = wire.watch_addresses(request)
            async with _closing(self._backend.beats(_caller(), addresses)) as beats:
                async for beat in beats:
                    yield wire.to_wire(beat)
        except Exception as error:  # noqa: BLE001 - service boundary: abort() logs what orc does not know
            await abort(context, error, "Watch")

    async def Revocations(self, request: pb.RevocationsRequest, context: Context) -> Any:
        try:
            _caller()
            query = wire.from_wire(request)
            return wire.to_wire(RevocationsReply(self._backend.revocations_after(query.after_seq)))
        except Exception as error:  # noqa: BLE001 - service boundary: abort() logs what orc does not know
            await abort(context, error, "Revocations")

    async def Renew(self, request: pb.RenewRequest, context: Context) -> Any:
        try:
            caller = _caller()
            renewal = wire.from_wire(request)
            return wire.to_wire(RenewReply(await self._backend.renew(caller, renewal.csr_pem)))
        except Exception as error:  # noqa: BLE001 - service boundary: abort() logs what orc does not know
            await abort(context, error, "Renew")

    async def Offer(self, request: pb.OfferRequest, context: Context) -> Any:
        try:
            caller = _caller()
            return wire.to_wire(await self._backend.offer(caller, wire.from_wire(request)))
        except Exception as error:  # noqa: BLE001 - service boundary: abort() logs what orc does not know
            await abort(context, error, "Offer")

    async def Execute(self, request: pb.ExecuteRequest, context: Context) -> AsyncIterator[Any]:
        try:
            caller = _caller()
            execution = wire.from_wire(request)
            async with _closing(self._backend.execute(caller, execution)) as events:
                async for event in events:
                    yield wire.to_wire(event)
        except Exception as error:  # noqa: BLE001 - service boundary: abort() logs what orc does not know
            await abort(context, error, "Execute")

    async def Cancel(self, request: pb.CancelRequest, context: Context) -> Any:
        try:
            caller = _caller()
            cancel = wire.from_wire(request)
            return wire.to_wire(CancelReply(await self._backend.cancel(caller, cancel.execution_id)))
        except Exception as error:  # noqa: BLE001 - service boundary: abort() logs what orc does not know
            await abort(context, error, "Cancel")


class JoinServicer(mesh_grpc.JoinServicer):
    def __init__(self, backend: JoinBackend) -> None:
        self._backend = backend

    async def Join(self, request: pb.JoinRequest, context: Context) -> Any:
        try:
            join = wire.from_wire(request)
            grant = await self._backend.join(join.secret, join.csr_pem, join.name, context.peer())
            return wire.to_wire(grant)
        except Exception as error:  # noqa: BLE001 - service boundary: abort() logs what orc does not know
            await abort(context, error, "Join")


class ControlServicer(control_grpc.ControlServicer):
    def __init__(self, backend: ControlBackend) -> None:
        self._backend = backend

    async def Status(self, request: cpb.StatusRequest, context: Context) -> Any:
        try:
            return wire.to_wire(self._backend.status())
        except Exception as error:  # noqa: BLE001 - service boundary: abort() logs what orc does not know
            await abort(context, error, "Status")

    async def Peers(self, request: cpb.PeersRequest, context: Context) -> Any:
        try:
            return wire.to_wire(PeersReply(tuple(self._backend.peers())))
        except Exception as error:  # noqa: BLE001 - service boundary: abort() logs what orc does not know
            await abort(context, error, "Peers")

    async def Invite(self, request: cpb.InviteRequest, context: Context) -> Any:
        try:
            invite = wire.from_wire(request)
            return wire.to_wire(await self._backend.invite(invite.ttl_seconds))
        except Exception as error:  # noqa: BLE001 - service boundary: abort() logs what orc does not know
            await abort(context, error, "Invite")

    async def Revoke(self, request: cpb.RevokeRequest, context: Context) -> Any:
        try:
            revoke = wire.from_wire(request)
            return wire.to_wire(RevokeReply(await self._backend.revoke(revoke.node_id, revoke.reason)))
        except Exception as error:  # noqa: BLE001 - service boundary: abort() logs what orc does not know
            await abort(context, error, "Revoke")

    async def Run(self, request: cpb.RunRequest, context: Context) -> AsyncIterator[Any]:
        try:
            run = wire.from_wire(request)
            async with _closing(self._backend.run(run)) as events:
                async for event in events:
                    yield wire.to_wire(event)
        except Exception as error:  # noqa: BLE001 - service boundary: abort() logs what orc does not know
            await abort(context, error, "Run")
