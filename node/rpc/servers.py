"""Starting the three gRPC servers of a node: mesh (mTLS), join (CA identity), control (Unix socket).

The mesh and join servers listen only on 127.0.0.1; their public ports belong to a `FrontDoor`
each (`orc.node.rpc.front_door`), which caps and relays the connections.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import stat
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import grpc

from orc.node.rpc import credentials
from orc.node.rpc.authorization import Authorizer
from orc.node.rpc.backends import ControlBackend, JoinBackend, NodeBackend
from orc.node.rpc.connections import JOIN_LIMITS
from orc.node.protocol.errors import SocketInUse, SocketPathInvalid, Unavailable
from orc.node.rpc.front_door import UPSTREAM_HOST, FrontDoor
from orc.node.rpc.servicers import ControlServicer, JoinServicer, NodeServicer
from orc.node.protocol.messages import JoinGrant
from orc.proto.v1 import control_pb2_grpc as control_grpc
from orc.proto.v1 import mesh_pb2_grpc as mesh_grpc

log = logging.getLogger(__name__)

# sockaddr_un.sun_path holds 108 bytes on Linux (104 on macOS) including the final NUL.
MAX_SOCKET_PATH_BYTES = 103


class FrontedServer:
    """A gRPC server on loopback behind the `FrontDoor` that owns its public port(s)."""

    def __init__(self, front_door: FrontDoor, ports: tuple[int, ...], server: grpc.aio.Server,
                 start_upstream: Callable[[grpc.ServerCredentials], Awaitable[tuple[grpc.aio.Server, int]]]) -> None:
        self.front_door = front_door
        self.ports = ports  # the public ports, in `listen` order
        self._server = server
        self._start_upstream = start_upstream

    async def serve_credentials(self, server_credentials: grpc.ServerCredentials, grace: float) -> None:
        """Serve new connections with `server_credentials` (a renewed certificate): a new gRPC
        server on another loopback port takes the new connections, then the old one drains, so
        peers see no gap."""
        server, port = await self._start_upstream(server_credentials)
        old, self._server = self._server, server
        self.front_door.point_to(port)
        await old.stop(grace)

    async def stop(self, grace: float | None) -> None:
        """Stop listening, let calls in flight finish for `grace` seconds, then close everything."""
        await self.front_door.stop_listening()
        await self._server.stop(grace)
        await self.front_door.stop()


async def _start_fronted(front_door: FrontDoor, listen: Sequence[str], server_credentials: grpc.ServerCredentials,
                         make_server: Callable[[], grpc.aio.Server], what: str) -> FrontedServer:
    async def start_upstream(credentials_now: grpc.ServerCredentials) -> tuple[grpc.aio.Server, int]:
        server = make_server()
        try:
            port = server.add_secure_port(f"{UPSTREAM_HOST}:0", credentials_now)
        except RuntimeError as error:  # grpc raises this when it cannot bind
            raise Unavailable(f"cannot start the {what} server on the loopback interface: {error}") from None
        if port == 0:
            raise Unavailable(f"cannot start the {what} server on the loopback interface")
        await server.start()
        return server, port

    server, port = await start_upstream(server_credentials)
    try:
        ports = await front_door.open([_host_and_port(address) for address in listen], port)
    except BaseException:
        await server.stop(None)
        raise
    log.info("%s server listening on %s", what, ", ".join(_shown(a, p) for a, p in zip(listen, ports)))
    return FrontedServer(front_door, ports, server, start_upstream)


async def start_mesh_server(backend: NodeBackend, listen: Sequence[str], key_pem: bytes, cert_pem: bytes,
                            ca_pem: bytes, authorizer: Authorizer,
                            front_door: FrontDoor) -> tuple[FrontedServer, tuple[int, ...]]:
    """Serve `Node` on every "host:port" of `listen` (port 0: any free port) with mutual TLS,
    through `front_door`, whose connections `authorizer` manages.

    Returns the started server and the bound ports, in `listen` order. Raises PortInUse when
    another program listens on one of those ports.
    """
    if authorizer.gate is not front_door:
        raise ValueError("the authorizer must be the gate of the mesh server's front door")

    def make_server() -> grpc.aio.Server:
        server = grpc.aio.server(interceptors=[authorizer], options=credentials.server_options(),
                                 maximum_concurrent_rpcs=credentials.MAX_CONCURRENT_CALLS)
        mesh_grpc.add_NodeServicer_to_server(NodeServicer(backend), server)
        return server

    server = await _start_fronted(front_door, listen, credentials.server_credentials(key_pem, cert_pem, ca_pem),
                                  make_server, "mesh")
    return server, server.ports


async def start_join_server(backend: JoinBackend, listen: Sequence[str], ca_key_pem: bytes,
                            ca_cert_pem: bytes) -> tuple[FrontedServer, tuple[int, ...]]:
    """Serve only `Join`, with the CA certificate as TLS identity and no client certificates.

    Open this only while an invitation is pending, and stop it when the last one is used up.
    Nobody authenticates on it, so its front door gives every connection a short life.
    """
    front_door = FrontDoor(JOIN_LIMITS, name="join")
    sourced = _SourcedJoin(backend, front_door)

    def make_server() -> grpc.aio.Server:
        server = grpc.aio.server(options=credentials.join_server_options(), maximum_concurrent_rpcs=8)
        mesh_grpc.add_JoinServicer_to_server(JoinServicer(sourced), server)
        return server

    server = await _start_fronted(front_door, listen, credentials.join_server_credentials(ca_key_pem, ca_cert_pem),
                                  make_server, "join")
    return server, server.ports


class _SourcedJoin:
    """The join backend, told where a joiner really connects from (gRPC sees only the front door)."""

    def __init__(self, backend: JoinBackend, front_door: FrontDoor) -> None:
        self._backend = backend
        self._front_door = front_door

    async def join(self, secret: str, csr_pem: bytes, name: str, peer_address: str) -> JoinGrant:
        return await self._backend.join(secret, csr_pem, name, self._front_door.source(peer_address))


async def start_control_server(backend: ControlBackend, socket_path: str | Path) -> grpc.aio.Server:
    """Serve `Control` on a Unix socket only its owner can use (folder 0700, socket 0600).

    Nothing is done through a symbolic link: a link in place of the folder or the socket is
    refused, and both are re-moded through descriptors of what was checked.
    """
    path = Path(socket_path).absolute()
    if len(os.fsencode(str(path))) > MAX_SOCKET_PATH_BYTES:
        raise SocketPathInvalid(f"{path} is longer than a Unix socket path may be "
                                f"({MAX_SOCKET_PATH_BYTES} bytes); use a shorter home or state folder")
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    _make_private_folder(path.parent)
    _remove_stale_socket(path)
    server = grpc.aio.server(options=credentials.control_server_options())
    control_grpc.add_ControlServicer_to_server(ControlServicer(backend), server)
    try:
        port = server.add_secure_port(credentials.socket_target(path), credentials.control_server_credentials())
    except RuntimeError as error:
        raise Unavailable(f"cannot serve the control socket {path}: {error}") from None
    if port == 0:
        raise Unavailable(f"cannot serve the control socket {path}")
    await server.start()
    # The 0700 folder already keeps others out during the moment before this chmod.
    try:
        _chmod_socket(path, 0o600)
    except SocketPathInvalid:
        await server.stop(None)
        raise
    log.info("control socket at %s", path)
    return server


def _make_private_folder(folder: Path) -> None:
    """Make the socket's folder 0700 through a descriptor of the folder itself, never through a link."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENOTDIR):
            raise SocketPathInvalid(f"{folder} is a symbolic link or not a folder; the control socket's folder "
                                    "must be a real folder of yours") from None
        raise
    try:
        if os.fstat(fd).st_uid != os.geteuid():
            raise SocketPathInvalid(f"{folder} belongs to another user; the control socket needs a folder of yours")
        os.fchmod(fd, 0o700)
    finally:
        os.close(fd)


def _chmod_socket(path: Path, mode: int) -> None:
    """chmod the socket file itself; a link put in its place is refused (os.chmod would follow it)."""
    status = path.lstat()
    if not stat.S_ISSOCK(status.st_mode) or status.st_uid != os.geteuid():
        raise SocketPathInvalid(f"{path} was replaced by something other than this daemon's socket; move it away")
    if os.chmod in os.supports_follow_symlinks:  # lchmod exists (macOS, BSD)
        os.chmod(path, mode, follow_symlinks=False)
        return
    # Linux has no lchmod: open the name itself (O_PATH | O_NOFOLLOW), check it is still the
    # socket we just looked at, and chmod it through /proc, which names that very inode.
    fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        opened = os.fstat(fd)
        if not stat.S_ISSOCK(opened.st_mode) or (opened.st_dev, opened.st_ino) != (status.st_dev, status.st_ino):
            raise SocketPathInvalid(f"{path} changed while the daemon was starting; move it away")
        os.chmod(f"/proc/self/fd/{fd}", mode)
    finally:
        os.close(fd)


def _remove_stale_socket(path: Path) -> None:
    """Remove a socket file left by a daemon that died, but never one a live daemon serves.

    Only a socket is probed or removed: anything else at that name (a symbolic link included:
    `lstat` does not follow it) is refused, so a planted link is never connected through.
    """
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if stat.S_ISLNK(mode):
        raise SocketPathInvalid(f"{path} is a symbolic link, not a socket; orc does not follow links in its home: "
                                "remove it")
    if not stat.S_ISSOCK(mode):
        raise SocketPathInvalid(f"{path} exists and is not a socket; move it away")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except OSError as error:
        if error.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise SocketInUse(f"{path} exists and cannot be checked ({error.strerror}); "
                              "is another daemon starting?") from None
        log.info("removing the stale control socket %s", path)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # unlink removes the name, whatever it is; it never follows a link
    else:
        raise SocketInUse(f"another orc-node daemon is serving {path}")
    finally:
        probe.close()


def _host_and_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        raise Unavailable(f"cannot listen on {address}: give HOST:PORT") from None


def _shown(address: str, port: int) -> str:
    host = address.rpartition(":")[0]
    return f"{host}:{port}"
