"""Who may call this node, checked on every call: identity, revocation, rate.

TLS (require_client_auth) already proved the caller holds a key with a certificate from the
mesh CA. grpcio has no CRL support and no verify callback, and connections outlive trust
changes, so the `Authorizer` interceptor checks each call (streaming ones included) before the
servicer runs: the caller's node id comes from its certificate (whose only name must be the id
of its own key), a revoked id is refused, and each caller has a token bucket. Streams that are
already open when a node is revoked are cut off (`Authorizer.cut_off`), and every streamed item
re-checks revocation, so a revocation also ends calls in flight. The servicer learns the caller
from the `current_caller` context variable.

Behind a front door (`orc.node.rpc.front_door`), the interceptor also manages connections
through its `ConnectionGate`: an admitted call marks its connection as the caller's (it leaves
the strangers' budget), a revoked or unauthenticated caller's connection is closed, and so are
all the connections of a caller that keeps calling after being refused. Refusals are logged
sampled: the first per caller a minute, then one count a minute.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc

from orc.node.metrics.observers import UNOBSERVED, RpcObserver
from orc.node.trust.certificates import certificate_node_id
from orc.node.trust.errors import IdentityError
from orc.node.trust.rate_limits import RateLimits
from orc.node.protocol.ids import NodeId
from orc.node.protocol.errors import NodeError, RateLimited, ResourceExhausted, Revoked, Unauthenticated
from orc.node.rpc.errors import abort
from orc.node.rpc.log_sampling import SampledLog

log = logging.getLogger(__name__)

current_caller: contextvars.ContextVar[NodeId] = contextvars.ContextVar("current_caller")
"""The authenticated node id of the caller of the mesh call being served."""

# Open streaming calls (Watch, Execute) per caller: one peer cannot hold every server slot.
DEFAULT_MAX_STREAMS_PER_PEER = 64
# Refused calls a caller may keep making (per second, and at once) before all its connections
# are closed: it is ignoring the refusals, and each one still costs a TLS record and a log check.
DEFAULT_REFUSAL_RATE = 5.0
DEFAULT_REFUSAL_BURST = 50.0


class ConnectionGate(Protocol):
    """What the authorizer asks of the front door that relays the server's connections.

    `peer` is gRPC's name for the connection a call came on (`context.peer()`).
    """

    def authenticated(self, peer: str, node_id: NodeId) -> bool:
        """The connection belongs to `node_id` from now on; False: refuse the call."""

    def close_connection(self, peer: str) -> None:
        """Close that connection once the current call's status went out."""

    def close_node(self, node_id: NodeId) -> int:
        """Close every connection of `node_id`; how many."""

    def source(self, peer: str) -> str:
        """Where the connection really comes from, for the logs."""


@dataclass(eq=False)
class _OpenStream:
    caller: NodeId
    method: str
    cut: asyncio.Future = field(repr=False)


class Authorizer(grpc.aio.ServerInterceptor):
    """The mesh server's gate: every call is admitted (or refused) before its servicer runs.

    `is_revoked(node_id)` is asked on every call and every streamed item, so it must be cheap
    (a set lookup). `cut_off` must be called on the server's event loop.
    """

    def __init__(self, is_revoked: Callable[[NodeId], bool], limits: RateLimits | None = None, *,
                 clock: Callable[[], float] = time.monotonic,
                 max_streams_per_peer: int = DEFAULT_MAX_STREAMS_PER_PEER,
                 gate: ConnectionGate | None = None, refusal_limits: RateLimits | None = None,
                 refusal_log: SampledLog | None = None, observer: RpcObserver = UNOBSERVED) -> None:
        self._is_revoked = is_revoked
        self._observer = observer  # told of every refusal (the node's metrics), sampled or not
        self._limits = limits if limits is not None else RateLimits()
        self._clock = clock
        self._max_streams = max_streams_per_peer
        self._streams: dict[NodeId, set[_OpenStream]] = {}
        self.gate = gate
        self._refusal_limits = (refusal_limits if refusal_limits is not None
                                else RateLimits(DEFAULT_REFUSAL_RATE, DEFAULT_REFUSAL_BURST))
        self._refusal_log = refusal_log if refusal_log is not None else SampledLog()
        self._report: asyncio.TimerHandle | None = None

    # ---- the decision ----------------------------------------------------------------------

    def admit(self, auth_context: Mapping[str, Iterable[bytes]], now: float) -> NodeId:
        """The caller's node id if it may call now; raise Unauthenticated, Revoked or RateLimited."""
        caller, refusal = self.decide(auth_context, now)
        if refusal is not None:
            raise refusal
        assert caller is not None
        return caller

    def decide(self, auth_context: Mapping[str, Iterable[bytes]],
               now: float) -> tuple[NodeId | None, NodeError | None]:
        """Who calls (None if the certificate does not say) and why it is refused (None: admitted)."""
        certificates = list(auth_context.get("x509_pem_cert") or ())
        if len(certificates) != 1:
            return None, Unauthenticated("the call did not come with exactly one client certificate")
        try:
            caller = certificate_node_id(certificates[0])
        except IdentityError as error:
            return None, Unauthenticated(f"the client certificate is not a valid node certificate: {error}")
        if self._is_revoked(caller):
            return caller, Revoked(f"node {caller} has been revoked from this mesh")
        if not self._limits.allow(caller, now):
            return caller, RateLimited(f"node {caller} made too many calls; slow down")
        return caller, None

    def refused(self, peer: str, caller: NodeId | None, refusal: NodeError, method: str, now: float) -> None:
        """Log a refusal (sampled) and close what it calls for: the connection of a revoked or
        unauthenticated caller, every connection of a revoked one, and every connection of a
        caller that keeps calling though refused (past its refusal budget)."""
        self._observer.rpc_rejected(refusal_reason(refusal))
        source = self.gate.source(peer) if self.gate is not None else peer
        who = caller or _host_of(source)
        if self._refusal_log.event(who, now):
            level = logging.INFO if isinstance(refusal, RateLimited) else logging.WARNING
            log.log(level, "refused %s from %s (%s): %s", method, caller or "an unknown caller", source, refusal)
        else:
            self._report_later()
        persistent = not self._refusal_limits.allow(who, now)
        if self.gate is None:
            return
        if isinstance(refusal, Revoked) or (persistent and caller is not None):
            if caller is not None:
                self.gate.close_node(caller)
            self.gate.close_connection(peer)
        elif isinstance(refusal, Unauthenticated) or persistent:
            self.gate.close_connection(peer)

    def report_refusals(self) -> None:
        """Log one line per caller whose refusals were not logged one by one in its last minute."""
        self._report = None
        now = self._clock()
        for summary in self._refusal_log.due(now):
            log.warning("refused %d more call(s) from %s in the last minute", summary.count, summary.source)
        next_due = self._refusal_log.next_due()
        if next_due is not None:
            self._report_later(max(1.0, next_due - now))

    def _report_later(self, delay: float | None = None) -> None:
        if self._report is None:
            self._report = asyncio.get_running_loop().call_later(
                self._refusal_log.window_s if delay is None else delay, self.report_refusals)

    def open_streams(self, node_id: NodeId) -> int:
        """How many streaming calls of `node_id` are open now."""
        return len(self._streams.get(node_id, ()))

    def cut_off(self, node_id: NodeId) -> int:
        """End every open streaming call of `node_id` with PERMISSION_DENIED, then close its
        connections (once those statuses went out); return how many calls were ended."""
        count = 0
        for opened in list(self._streams.get(node_id, ())):
            if not opened.cut.done():
                opened.cut.set_result(None)
                count += 1
        closed = self.gate.close_node(node_id) if self.gate is not None else 0
        if count or closed:
            log.warning("cut off %d open call(s) and %d connection(s) of node %s", count, closed, node_id)
        return count

    # ---- the interceptor -------------------------------------------------------------------

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:  # an unknown method: grpc answers UNIMPLEMENTED
            return handler
        method = handler_call_details.method
        if isinstance(method, bytes):
            method = method.decode("utf-8", "replace")
        options = {"request_deserializer": handler.request_deserializer,
                   "response_serializer": handler.response_serializer}
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(self._unary(handler.unary_unary, method), **options)
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(self._unary(handler.stream_unary, method), **options)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(self._stream(handler.unary_stream, method), **options)
        return grpc.stream_stream_rpc_method_handler(self._stream(handler.stream_stream, method), **options)

    async def _enter(self, context: grpc.aio.ServicerContext, method: str) -> NodeId:
        """Admit the call or end it; never lets anything but the abort escape."""
        try:
            now = self._clock()
            caller, refusal = self.decide(context.auth_context(), now)
            if refusal is None and self.gate is not None and not self.gate.authenticated(_peer(context), caller):
                refusal = ResourceExhausted(f"node {caller} holds too many connections to this node, or this "
                                            "connection did not come through its port")
            if refusal is None:
                return caller  # type: ignore[return-value]
            self.refused(_peer(context), caller, refusal, method, now)
        except Exception as error:  # noqa: BLE001 - a broken is_revoked must not take the server down
            await abort(context, error, method)
        await abort(context, refusal, method)

    def _unary(self, behavior: Callable[..., Any], method: str) -> Callable[..., Awaitable[Any]]:
        async def admitted(request: Any, context: grpc.aio.ServicerContext) -> Any:
            caller = await self._enter(context, method)
            token = current_caller.set(caller)
            try:
                result = behavior(request, context)
                return await result if inspect.isawaitable(result) else result
            finally:
                current_caller.reset(token)

        return admitted

    def _stream(self, behavior: Callable[..., Any], method: str) -> Callable[..., AsyncIterator[Any]]:
        async def admitted(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            caller = await self._enter(context, method)
            opened = self._open(caller, method)
            if opened is None:
                refusal = ResourceExhausted(f"node {caller} has too many open streams ({self._max_streams})")
                self.refused(_peer(context), caller, refusal, method, self._clock())
                await abort(context, refusal, method)
            # Each call runs in its own task, so the variable is not reset: the generator may be
            # finalized outside the context it was set in, where a reset would fail.
            current_caller.set(caller)
            try:
                result = behavior(request, context)
                if inspect.isawaitable(result):  # a handler that writes with context.write()
                    await self._race(result, opened)
                else:
                    async for item in self._relay(result, opened):
                        yield item
                was_cut = opened.cut.done()
            finally:
                self._close(opened)
            if was_cut or self._is_revoked(caller):
                refusal = Revoked(f"node {caller} has been revoked from this mesh; the call was ended")
                self.refused(_peer(context), caller, refusal, method, self._clock())
                await abort(context, refusal, method)

        return admitted

    async def _relay(self, items: Any, opened: _OpenStream) -> AsyncIterator[Any]:
        """Pass `items` on until they end, or until the caller is cut off or revoked."""
        iterator = items.__aiter__()
        step: asyncio.Future | None = None
        try:
            while True:
                step = asyncio.ensure_future(iterator.__anext__())
                await asyncio.wait((step, opened.cut), return_when=asyncio.FIRST_COMPLETED)
                if not step.done():
                    return  # cut off
                try:
                    item = step.result()
                except StopAsyncIteration:
                    return
                step = None
                if opened.cut.done() or self._is_revoked(opened.caller):
                    return
                yield item
        finally:
            if step is not None and not step.done():
                step.cancel()
                await asyncio.wait((step,))
            close = getattr(iterator, "aclose", None)
            if close is not None:
                try:
                    await close()
                except Exception:  # noqa: BLE001 - the stream is over either way
                    log.debug("closing the stream of %s failed", opened.method, exc_info=True)

    async def _race(self, work: Awaitable[Any], opened: _OpenStream) -> None:
        task = asyncio.ensure_future(work)
        try:
            await asyncio.wait((task, opened.cut), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not task.done():
                task.cancel()
                await asyncio.wait((task,))
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]

    def _open(self, caller: NodeId, method: str) -> _OpenStream | None:
        streams = self._streams.setdefault(caller, set())
        if len(streams) >= self._max_streams:
            return None
        opened = _OpenStream(caller, method, asyncio.get_running_loop().create_future())
        streams.add(opened)
        return opened

    def _close(self, opened: _OpenStream) -> None:
        streams = self._streams.get(opened.caller)
        if streams is not None:
            streams.discard(opened)
            if not streams:
                del self._streams[opened.caller]
        if not opened.cut.done():
            opened.cut.cancel()


def refusal_reason(refusal: NodeError) -> str:
    """A refusal's kind as a metric label: its class in snake case ("rate_limited"). A closed set:
    the refusals this module raises."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(refusal).__name__).lower()


def _host_of(source: str) -> str:
    """The host part of "host:port", "[v6]:port" or a gRPC peer string: refusals count per host."""
    return source.rsplit(":", 1)[0]


def _peer(context: grpc.aio.ServicerContext) -> str:
    try:
        return context.peer() or "an unknown peer"
    except Exception:  # noqa: BLE001 - only for a log line
        return "an unknown peer"
