"""The HTTP listener: its own socket (a port in use is one clear error), TLS with the user's
certificate, a clean stop."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import ssl
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from orc.node.config import ApiConfig
from orc.node.links.static import Endpoint
from orc.node.web.server import ApiUnavailable, WebServer


async def hello(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello"})


def certificate(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "orc test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def get(url: str, **kw) -> httpx.Response:
    return httpx.get(url, timeout=10, **kw)


def test_it_serves_and_stops_and_its_port_is_free_again() -> None:
    async def scenario() -> None:
        server = WebServer(hello, ApiConfig(listen=Endpoint("127.0.0.1", 0)))
        await server.start()
        answer = await asyncio.to_thread(get, server.address + "/")
        assert answer.status_code == 200 and answer.text == "hello"
        port = int(server.address.rsplit(":", 1)[1])
        await server.stop()
        with socket.socket() as again:
            again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            again.bind(("127.0.0.1", port))

    asyncio.run(scenario())


def test_a_websocket_upgrade_is_answered_as_plain_http() -> None:
    """Nothing speaks WebSocket: the upgrade is ignored and the app answers the request."""

    async def scenario() -> bytes:
        server = WebServer(hello, ApiConfig(listen=Endpoint("127.0.0.1", 0)))
        await server.start()
        try:
            host, port = server.address.removeprefix("http://").rsplit(":", 1)
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                         b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
            await writer.drain()
            answer = b""
            while not answer.endswith(b"0\r\n\r\n") and (chunk := await asyncio.wait_for(reader.read(4096), 10)):
                answer += chunk
            writer.close()
            return answer
        finally:
            await server.stop()

    answer = asyncio.run(scenario())
    assert answer.startswith(b"HTTP/1.1 200 ") and b"\r\n\r\n5\r\nhello\r\n" in answer, answer


def test_a_port_in_use_is_one_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        server = WebServer(hello, ApiConfig(listen=Endpoint("127.0.0.1", port)))
        with pytest.raises(ApiUnavailable, match=f"port {port} .* in use.*--api HOST:PORT.*--no-api"):
            asyncio.run(server.start())


def test_with_a_certificate_it_speaks_https_only(tmp_path: Path) -> None:
    cert, key = certificate(tmp_path)
    trust = ssl.create_default_context(cafile=str(cert))

    async def scenario() -> None:
        server = WebServer(hello, ApiConfig(listen=Endpoint("127.0.0.1", 0), tls_certificate=cert, tls_key=key))
        await server.start()
        try:
            assert server.address.startswith("https://")
            answer = await asyncio.to_thread(get, server.address + "/", verify=trust)
            assert answer.status_code == 200 and answer.text == "hello"
            with pytest.raises(httpx.HTTPError):  # plain HTTP to a TLS port gets no answer
                await asyncio.to_thread(get, server.address.replace("https://", "http://") + "/")
        finally:
            await server.stop()

    asyncio.run(scenario())


def test_an_unusable_certificate_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text("not a certificate")
    (tmp_path / "key.pem").write_text("not a key")
    server = WebServer(hello, ApiConfig(listen=Endpoint("127.0.0.1", 0), tls_certificate=tmp_path / "cert.pem",
                                        tls_key=tmp_path / "key.pem"))
    with pytest.raises(ApiUnavailable, match="tls_certificate"):
        asyncio.run(server.start())
    missing = WebServer(hello, ApiConfig(listen=Endpoint("127.0.0.1", 0), tls_certificate=tmp_path / "none.pem",
                                         tls_key=tmp_path / "none.key"))
    with pytest.raises(ApiUnavailable):
        asyncio.run(missing.start())
