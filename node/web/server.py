"""The HTTP listener: uvicorn serving the node's ASGI app inside the daemon's event loop.

The socket is bound here, not by uvicorn, so a port in use or a bad address is this node's clear
error rather than uvicorn's exit; uvicorn's own signal handling is off (the daemon owns SIGTERM
and SIGINT and stops this server with everything else).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import socket
import ssl
from collections.abc import Iterator

import uvicorn
from orc.node.config import ApiConfig
from orc.node.web.responses import Drain
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 2.0
DRAIN_S = 0.3  # what requests still running get to send their "shutting down" answer  # streams still open after this are cancelled (their generations with them)
KEEP_ALIVE_S = 5  # an idle connection is closed after this: idle clients must not hold sockets
# Requests arriving together beyond this are answered 503 by uvicorn before the app sees them:
# a flood of connections must not exhaust the node's file descriptors.
MAX_CONNECTIONS = 512
# The largest request head (request line and headers) uvicorn's parser buffers.
MAX_HEAD_BYTES = 64 * 1024
# A connection nobody's request is running on must deliver a whole request head within this of
# opening, or of its first byte after a response: uvicorn has no such limit, and a client sending
# nothing, or a header a minute, would hold its connection for ever; MAX_CONNECTIONS of them
# would lock everyone out.
HEAD_TIMEOUT_S = 10.0
# Connections one client address may hold at once; past it a new one is answered 503 and closed,
# so one stranger cannot take all MAX_CONNECTIONS (on loopback, every local program is one address).
MAX_CONNECTIONS_PER_CLIENT = 64


class ApiUnavailable(Exception):
    """The HTTP listener cannot start; the message says why and what to do."""


def _crowded_response() -> bytes:
    body = json.dumps({"error": {"message": f"this address holds {MAX_CONNECTIONS_PER_CLIENT} connections to the "
                                            "API already; reuse them", "type": "server_error", "param": None,
                                 "code": "overloaded"}}).encode()
    return (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
            b"connection: close\r\ncontent-length: %d\r\n\r\n" % len(body)) + body


class _Connection(H11Protocol):
    """uvicorn's HTTP/1.1 connection with two more limits: HEAD_TIMEOUT_S and
    MAX_CONNECTIONS_PER_CLIENT."""

    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        host = self.client[0] if self.client else None
        if host is not None and sum(1 for c in self.connections
                                    if c.client and c.client[0] == host) > MAX_CONNECTIONS_PER_CLIENT:
            transport.write(_crowded_response())
            transport.close()
            return
        self._await_head()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._serving() or self.transport.is_closing():
            self._stop_waiting()
        else:
            self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        super().connection_lost(exc)

    def _serving(self) -> bool:
        """A request of this connection is with the app (which has its own limits on its body)."""
        return self.cycle is not None and not self.cycle.response_complete

    def _await_head(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(HEAD_TIMEOUT_S, self._head_too_slow)

    def _stop_waiting(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if not self._serving():
            self.transport.close()


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the daemon handles signals; this server is stopped by `WebServer.stop`


class WebServer:
    """Serves `app` on `config.listen` until stopped. Build, `await start()`, `await stop()`."""

    def __init__(self, app: object, config: ApiConfig, drain: Drain | None = None) -> None:
        """`drain`: the app's (`build_app(..., drain=)`), set first when the server stops."""
        self._drain = drain
        self._config = config
        tls = config.tls_certificate is not None
        # ws="none": nothing here speaks WebSocket, so an upgrade request is answered as plain
        # HTTP, and no WebSocket library is imported into the daemon.
        self._uvicorn_config = uvicorn.Config(
            app, http=_Connection, ws="none", lifespan="off", log_config=None, access_log=False, server_header=False,
            timeout_keep_alive=KEEP_ALIVE_S, timeout_graceful_shutdown=int(SHUTDOWN_GRACE_S),
            limit_concurrency=MAX_CONNECTIONS, h11_max_incomplete_event_size=MAX_HEAD_BYTES,
            ssl_certfile=str(config.tls_certificate) if tls else None,
            ssl_keyfile=str(config.tls_key) if tls else None)
        self._server = _Server(self._uvicorn_config)
        self._socket: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def address(self) -> str:
        """`http(s)://host:port` it serves on (the real port once started, for port 0)."""
        host, port = self._config.listen.host, self._config.listen.port
        if self._socket is not None:
            port = self._socket.getsockname()[1]
        scheme = "https" if self._config.tls_certificate else "http"
        return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"

    async def start(self) -> None:
        """Bind, load the TLS certificate, and serve. Raises ApiUnavailable."""
        try:
            self._uvicorn_config.load()
        except (ssl.SSLError, OSError, ValueError) as error:
            raise ApiUnavailable(f"the API's TLS certificate or key cannot be used ({error}); check "
                                 "api.tls_certificate and api.tls_key in config.yaml") from None
        # uvicorn warns of each malformed request and each connection past its cap: a stranger's
        # garbage must not fill this node's log (its errors, with tracebacks, still go there).
        logging.getLogger("uvicorn.error").setLevel(logging.ERROR)
        self._socket = _bind(self._config)
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]), name="http-api")
        while not self._server.started and not self._task.done():
            await asyncio.sleep(0.01)
        if self._task.done():
            self._task.result()  # raises what stopped it
            raise ApiUnavailable("the HTTP server stopped while starting")
        log.info("HTTP API on %s", self.address)

    async def stop(self) -> None:
        if self._task is None:
            return
        if self._drain is not None:
            self._drain.begin()  # waiting requests and streams answer that the node stops ...
            await asyncio.sleep(DRAIN_S)  # ... and get the moment to send it
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), SHUTDOWN_GRACE_S + 2)
        except (asyncio.TimeoutError, Exception):  # noqa: BLE001 - stopping: force it, log, go on
            self._server.force_exit = True
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        finally:
            if self._socket is not None:
                self._socket.close()


def _bind(config: ApiConfig) -> socket.socket:
    host, port = config.listen.host, config.listen.port
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise ApiUnavailable(f"--api {host}:{port}: cannot resolve {host!r} ({error.strerror})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(128)
        sock.setblocking(False)
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise ApiUnavailable(f"the API port {port} on {host} is in use (another orc-node?); choose another "
                                 "with --api HOST:PORT or turn the API off with --no-api") from None
        raise ApiUnavailable(f"cannot listen on {host}:{port} for the API: {error.strerror}") from None
    return sock
