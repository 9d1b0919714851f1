"""Who may call this node, checked on every call: identity, revocation, rate.

TLS (require_client_auth) already proved the caller holds a key with a certificate from the
mesh CA. grpcio has no CRL support and no verify callback, and connections outlive trust
changes, so the `Authorizer` interceptor checks each call (streaming ones included) before the
servicer runs: the caller's node id comes from its certificate (whose only name must be the id
of its own key), a revoked id is refused, and each caller has a token bucket. Streams that are
already open when a node is revoked are cut off (`Authorizer.cut_off`), and every streamed item
re-checks revocation, so a revocation also ends calls in flight. The servicer learns the caller
from the `current_caller` context variable.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc

from orc.node.identity.certificates import certificate_node_id
from orc.node.identity.errors import IdentityError
from orc.node.identity.ids import NodeId
from orc.node.rpc.errors import RateLimited, ResourceExhausted, Revoked, RpcError, Unauthenticated, abort

log = logging.getLogger(__name__)

current_caller: contextvars.ContextVar[NodeId] = contextvars.ContextVar("current_caller")
"""The authenticated node id of the caller of the mesh call being served."""

DEFAULT_RATE = 50.0  # calls per second per peer, sustained
DEFAULT_BURST = 200.0  # calls a peer may make at once after a quiet spell
# Buckets kept at once. Only CA-certified nodes reach the limiter, but a leaked CA key or a
# long-lived daemon seeing many identities must not grow this table without bound.
DEFAULT_MAX_PEERS = 1024
# Open streaming calls (Watch, Execute) per caller: one peer cannot hold every server slot.
DEFAULT_MAX_STREAMS_PER_PEER = 64


class RateLimits:
    """Per-peer token buckets; a pure core (the caller passes `now`, in seconds, monotonic)."""

    def __init__(self, rate: float = DEFAULT_RATE, burst: float = DEFAULT_BURST,
                 max_peers: int = DEFAULT_MAX_PEERS) -> None:
        if rate <= 0 or burst < 1 or max_peers < 1:
            raise ValueError("rate must be positive, burst at least 1 and max_peers at least 1")
        self.rate = rate
        self.burst = burst
        self.max_peers = max_peers
        # peer -> (tokens, when last updated); least recently used first.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def tokens(self, peer: str, now: float) -> float:
        """How many calls `peer` could make right now."""
        entry = self._buckets.get(peer)
        return self.burst if entry is None else self._refilled(entry, now)

    def allow(self, peer: str, now: float, cost: float = 1.0) -> bool:
        """Take `cost` tokens from `peer`'s bucket if it has them; False (and take none) if not."""
        entry = self._buckets.pop(peer, None)
        tokens = self.burst if entry is None else self._refilled(entry, now)
        allowed = tokens >= cost
        if allowed:
            tokens -= cost
        self._buckets[peer] = (tokens, now)
        if len(self._buckets) > self.max_peers:
            self._evict(now)
        return allowed

    def _refilled(self, entry: tuple[float, float], now: float) -> float:
        tokens, updated = entry
        return min(self.burst, tokens + max(0.0, now - updated) * self.rate)

    def _evict(self, now: float) -> None:
        # Forgetting a full bucket changes nothing (a new one starts full), so those go first;
        # only when every tracked peer is busy does the least recently seen one lose its state.
        for peer, entry in list(self._buckets.items()):
            if self._refilled(entry, now) >= self.burst:
                del self._buckets[peer]
                if len(self._buckets) <= self.max_peers:
                    return
        while len(self._buckets) > self.max_peers:
            self._buckets.popitem(last=False)


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
                 max_streams_per_peer: int = DEFAULT_MAX_STREAMS_PER_PEER) -> None:
        self._is_revoked = is_revoked
        self._limits = limits if limits is not None else RateLimits()
        self._clock = clock
        self._max_streams = max_streams_per_peer
        self._streams: dict[NodeId, set[_OpenStream]] = {}

    # ---- the decision ----------------------------------------------------------------------

    def admit(self, auth_context: Mapping[str, Iterable[bytes]], now: float) -> NodeId:
        """The caller's node id if it may call now; raise Unauthenticated, Revoked or RateLimited."""
        certificates = list(auth_context.get("x509_pem_cert") or ())
        if len(certificates) != 1:
            raise Unauthenticated("the call did not come with exactly one client certificate")
        try:
            caller = certificate_node_id(certificates[0])
        except IdentityError as error:
            raise Unauthenticated(f"the client certificate is not a valid node certificate: {error}") from None
        if self._is_revoked(caller):
            raise Revoked(f"node {caller} has been revoked from this mesh")
        if not self._limits.allow(caller, now):
            raise RateLimited(f"node {caller} made too many calls; slow down")
        return caller

    def open_streams(self, node_id: NodeId) -> int:
        """How many streaming calls of `node_id` are open now."""
        return len(self._streams.get(node_id, ()))

    def cut_off(self, node_id: NodeId) -> int:
        """End every open streaming call of `node_id` with PERMISSION_DENIED; return how many."""
        count = 0
        for opened in list(self._streams.get(node_id, ())):
            if not opened.cut.done():
                opened.cut.set_result(None)
                count += 1
        if count:
            log.warning("cut off %d open call(s) of node %s", count, node_id)
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
            return self.admit(context.auth_context(), self._clock())
        except RpcError as refusal:
            level = logging.INFO if isinstance(refusal, RateLimited) else logging.WARNING
            log.log(level, "refused %s from %s: %s", method, _peer(context), refusal)
            await abort(context, refusal, method)
        except Exception as error:  # noqa: BLE001 - a broken is_revoked must not take the server down
            await abort(context, error, method)
        raise AssertionError("abort returned")

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
                log.warning("refused %s from %s: %s", method, _peer(context), refusal)
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
                log.warning("ended %s of %s: revoked", method, caller)
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


def _peer(context: grpc.aio.ServicerContext) -> str:
    try:
        return context.peer() or "an unknown peer"
    except Exception:  # noqa: BLE001 - only for a log line
        return "an unknown peer"
