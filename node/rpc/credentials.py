"""Every TLS and channel setting of orc in one place (servers, clients, raw handshakes).

Mesh: mutual TLS with the mesh CA as the only trust root; a client names the exact node it
wants (`<node_id>.orc.internal`) with `grpc.ssl_target_name_override`, so reaching any other
member fails the handshake. Join: the server's identity is the CA certificate itself and no
client certificate is asked for; the joiner pins that certificate before trusting it. Control:
a Unix socket with local credentials, never a network port.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from collections.abc import Iterator
from pathlib import Path

import grpc

from orc.node.trust.certificates import ca_server_name, certificate_node_id
from orc.node.trust.errors import IdentityError
from orc.node.protocol.ids import MeshId, NodeId
from orc.node.trust.ids import server_name
from orc.node.protocol.errors import PeerNotInMesh, TimedOut, Unavailable

# A whole message, either way. Agent payloads and results are text of small models' contexts;
# this stops a peer from making us buffer more than that per call.
MAX_MESSAGE_BYTES = 4 << 20
# A join request is a CSR and a secret (~1 KiB): a not-yet-trusted joiner gets very little.
MAX_JOIN_MESSAGE_BYTES = 64 << 10
# The control socket carries whole run results (every agent's output) to the local CLI.
MAX_CONTROL_MESSAGE_BYTES = 64 << 20
# Concurrent calls a server runs; one more is refused with RESOURCE_EXHAUSTED. Bounds the tasks
# and memory a set of peers can make this node hold.
MAX_CONCURRENT_CALLS = 256
# Streams on one HTTP/2 connection (one peer): below the server-wide bound, so one peer cannot
# take every slot.
MAX_STREAMS_PER_CONNECTION = 64
# A TLS handshake must finish within this; stops half-open connections piling up (slowloris).
# The front door also closes any connection that has made no admitted call after 10 s.
HANDSHAKE_TIMEOUT_MS = 5_000

# Keepalive for a LAN: a peer that vanished (unplugged, asleep) is noticed within ~30 s even on
# an idle connection; the 1 s beats of Watch notice it far sooner while a watch is open.
_KEEPALIVE_TIME_MS = 20_000
_KEEPALIVE_TIMEOUT_MS = 10_000


# ---- mesh ----------------------------------------------------------------------------------

def server_credentials(key_pem: bytes, cert_pem: bytes, ca_pem: bytes) -> grpc.ServerCredentials:
    """Mesh server TLS: our node certificate; clients must present one from the mesh CA."""
    return grpc.ssl_server_credentials([(key_pem, cert_pem)], root_certificates=ca_pem, require_client_auth=True)


def channel_credentials(key_pem: bytes, cert_pem: bytes, ca_pem: bytes) -> grpc.ChannelCredentials:
    """Mesh client TLS: trust only the mesh CA, and present our node certificate."""
    return grpc.ssl_channel_credentials(root_certificates=ca_pem, private_key=key_pem, certificate_chain=cert_pem)


# Every server binds its port alone: with gRPC's default SO_REUSEPORT, a second daemon on the
# same port starts fine and the kernel splits the connections between the two.
_NO_SHARED_PORT = ("grpc.so_reuseport", 0)


def server_options() -> list[tuple[str, object]]:
    """Channel arguments of the mesh server."""
    return [
        _NO_SHARED_PORT,
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_concurrent_streams", MAX_STREAMS_PER_CONNECTION),
        ("grpc.server_handshake_timeout_ms", HANDSHAKE_TIMEOUT_MS),
        ("grpc.keepalive_time_ms", _KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", _KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 1),
        # Accept the clients' keepalive pings (the default refuses pings closer than 5 minutes
        # and closes the connection after two).
        ("grpc.http2.min_recv_ping_interval_without_data_ms", _KEEPALIVE_TIME_MS // 2),
        ("grpc.http2.max_ping_strikes", 2),
    ]


def channel_options(peer_node_id: NodeId) -> list[tuple[str, object]]:
    """Channel arguments for a channel to exactly `peer_node_id` (any other member fails TLS)."""
    return [
        ("grpc.ssl_target_name_override", server_name(peer_node_id)),
        ("grpc.default_authority", server_name(peer_node_id)),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.keepalive_time_ms", _KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", _KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        # A LAN peer that restarts is back within seconds; do not back off for minutes.
        ("grpc.initial_reconnect_backoff_ms", 500),
        ("grpc.min_reconnect_backoff_ms", 500),
        ("grpc.max_reconnect_backoff_ms", 5_000),
        # Failover is the scheduler's decision (another peer), not a transparent retry.
        ("grpc.enable_retries", 0),
        # Each channel has its own connection: closing or revoking one never affects another.
        ("grpc.use_local_subchannel_pool", 1),
    ]


# ---- join ----------------------------------------------------------------------------------

def join_server_credentials(ca_key_pem: bytes, ca_cert_pem: bytes) -> grpc.ServerCredentials:
    """Join server TLS: the CA certificate is the identity; joiners have no certificate yet."""
    return grpc.ssl_server_credentials([(ca_key_pem, ca_cert_pem)], root_certificates=None,
                                       require_client_auth=False)


def join_server_options() -> list[tuple[str, object]]:
    return [
        _NO_SHARED_PORT,
        ("grpc.max_receive_message_length", MAX_JOIN_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_concurrent_streams", 4),
        ("grpc.server_handshake_timeout_ms", HANDSHAKE_TIMEOUT_MS),
    ]


def join_channel_credentials(ca_cert_pem: bytes) -> grpc.ChannelCredentials:
    """Joiner TLS: trust exactly the (already pinned) CA certificate, present nothing."""
    return grpc.ssl_channel_credentials(root_certificates=ca_cert_pem)


def join_channel_options(mesh_id: MeshId) -> list[tuple[str, object]]:
    return [
        ("grpc.ssl_target_name_override", ca_server_name(mesh_id)),
        ("grpc.default_authority", ca_server_name(mesh_id)),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_JOIN_MESSAGE_BYTES),
        ("grpc.enable_retries", 0),
        ("grpc.use_local_subchannel_pool", 1),
    ]


# ---- control -------------------------------------------------------------------------------

def control_server_credentials() -> grpc.ServerCredentials:
    return grpc.local_server_credentials(grpc.LocalConnectionType.UDS)


def control_channel_credentials() -> grpc.ChannelCredentials:
    return grpc.local_channel_credentials(grpc.LocalConnectionType.UDS)


def control_server_options() -> list[tuple[str, object]]:
    return [_NO_SHARED_PORT, *control_options()]


def control_options() -> list[tuple[str, object]]:
    return [
        ("grpc.max_receive_message_length", MAX_CONTROL_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_CONTROL_MESSAGE_BYTES),
        ("grpc.enable_retries", 0),
        ("grpc.use_local_subchannel_pool", 1),
    ]


# ---- raw handshakes ------------------------------------------------------------------------

def _client_context(verify: bool) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # what grpc speaks
    context.check_hostname = False  # node names are checked from the certificate, not DNS
    context.verify_mode = ssl.CERT_REQUIRED if verify else ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])  # look like the grpc client we are
    return context


@contextlib.contextmanager
def _pem_paths(*blobs: bytes) -> Iterator[list[str]]:
    """Paths OpenSSL can read `blobs` from without them touching a disk (pipes, /dev/fd/N).

    `ssl.SSLContext.load_cert_chain` only takes paths; the node key must not be copied to a
    temporary file just to read it back.
    """
    ends: list[int] = []
    paths = []
    try:
        for blob in blobs:
            if len(blob) > 60_000:  # must fit a pipe's buffer, or the write would block
                raise ValueError("a certificate or key of more than 60 kB")
            read, write = os.pipe()
            ends.append(read)
            try:
                os.write(write, blob)
            finally:
                os.close(write)
            paths.append(f"/dev/fd/{read}")
        yield paths
    finally:
        for end in ends:
            os.close(end)


async def _handshake(host: str, port: int, context: ssl.SSLContext, timeout: float) -> bytes:
    """Complete a TLS handshake and return the server's leaf certificate (DER); send nothing else."""
    where = f"{host}:{port}"
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=context, server_hostname=host,
                                    ssl_handshake_timeout=timeout), timeout)
    except asyncio.TimeoutError:
        raise TimedOut(f"{where} did not complete a TLS handshake within {timeout:g} s") from None
    except ssl.SSLCertVerificationError as error:
        raise PeerNotInMesh(f"{where} did not present a certificate of this mesh ({error.verify_message})") from None
    except ssl.SSLError as error:
        raise Unavailable(f"TLS with {where} failed: {error.reason or error}") from None
    except OSError as error:
        raise Unavailable(f"cannot reach {where}: {error.strerror or error}") from None
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 1.0)
    if not der:
        raise PeerNotInMesh(f"{where} presented no certificate")
    return der


async def probe_node_id(host: str, port: int, key_pem: bytes, cert_pem: bytes, ca_pem: bytes,
                        timeout: float = 5.0) -> NodeId:
    """Which node listens at host:port, proven by a TLS handshake against the mesh CA.

    Used for peers known only by address (static --peer, peer exchange): the server's
    certificate must chain to our CA and name the id of its own key; from then on the grpc
    channel to it asks for exactly that id.
    """
    context = _client_context(verify=True)
    context.load_verify_locations(cadata=ca_pem.decode("ascii"))
    with _pem_paths(cert_pem, key_pem) as (cert_path, key_path):
        context.load_cert_chain(cert_path, key_path)
    der = await _handshake(host, port, context, timeout)
    try:
        return certificate_node_id(der)
    except IdentityError as error:
        raise PeerNotInMesh(f"{host}:{port} presented a certificate that is not a node's: {error}") from None


async def fetch_join_certificate(host: str, port: int, timeout: float = 5.0) -> bytes:
    """The certificate (PEM) the join server at host:port presents, NOT verified.

    The caller must compare its pin with the join token's before trusting or sending anything.
    """
    der = await _handshake(host, port, _client_context(verify=False), timeout)
    return ssl.DER_cert_to_PEM_cert(der).encode("ascii")


def socket_target(socket_path: str | Path) -> str:
    """The grpc target of a Unix socket."""
    return f"unix:{Path(socket_path).absolute()}"
