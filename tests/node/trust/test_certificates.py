"""Keys, the mesh CA, CSRs and node certificates; plus one real mutual-TLS handshake over loopback."""

from __future__ import annotations

import socket
import ssl
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from orc.node.trust.certificates import (
    CLOCK_SKEW,
    MeshAuthority,
    ca_pin_of,
    certificate_node_id,
    certificate_public_key,
    check_node_name,
    generate_key,
    issued_by,
    key_from_pem,
    key_to_pem,
    make_csr,
    needs_renewal,
    not_after,
    verify_signature,
)
from orc.node.trust.errors import CertificateInvalid, CsrInvalid, IdentityCorrupt, InvalidNodeName
from orc.node.trust.ids import mesh_id_from_pin, node_id_for, server_name

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def authority() -> MeshAuthority:
    return MeshAuthority.create("laptop", NOW)


@pytest.fixture(scope="module")
def other_authority() -> MeshAuthority:
    return MeshAuthority.create("elsewhere", NOW)


def load(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def der_children(der: bytes) -> tuple[bytes, list[bytes]]:
    """Split a DER SEQUENCE into its header and its children's raw TLVs (test-only, short forms)."""
    def header_length(data: bytes, at: int) -> tuple[int, int]:
        first = data[at + 1]
        if first < 0x80:
            return 2, first
        count = first & 0x7F
        return 2 + count, int.from_bytes(data[at + 2:at + 2 + count], "big")

    head, _ = header_length(der, 0)
    children, at = [], head
    while at < len(der):
        size, length = header_length(der, at)
        children.append(der[at:at + size + length])
        at += size + length
    return der[:head], children


def der_sequence(children: list[bytes]) -> bytes:
    body = b"".join(children)
    length = len(body)
    if length < 0x80:
        return b"\x30" + bytes([length]) + body
    raw = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return b"\x30" + bytes([0x80 | len(raw)]) + raw + body


# --- keys -----------------------------------------------------------------------------------

def test_key_pem_round_trip() -> None:
    key = generate_key()
    assert isinstance(key.curve, ec.SECP256R1)
    again = key_from_pem(key_to_pem(key))
    assert node_id_for(again.public_key()) == node_id_for(key.public_key())


@pytest.mark.parametrize("pem", [b"", b"junk", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"])
def test_junk_key_is_corrupt(pem: bytes) -> None:
    with pytest.raises(IdentityCorrupt):
        key_from_pem(pem)


def test_other_curves_and_rsa_are_refused() -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for key in (p384, rsa_key):
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        with pytest.raises(IdentityCorrupt, match="P-256"):
            key_from_pem(pem)


@pytest.mark.parametrize("name", ["a", "laptop", "my-box.local_2", "x" * 63])
def test_good_node_names(name: str) -> None:
    assert check_node_name(name) == name


@pytest.mark.parametrize("name", ["", "x" * 64, "has space", "naïve", "a/b", "tab\t", "new\n", "a\nb"])
def test_bad_node_names(name: str) -> None:
    with pytest.raises(InvalidNodeName, match="node name"):
        check_node_name(name)
    with pytest.raises(InvalidNodeName):
        make_csr(generate_key(), name)


# --- the CA ---------------------------------------------------------------------------------

def test_ca_certificate_contents(authority: MeshAuthority) -> None:
    ca = load(authority.certificate_pem)
    assert ca.subject == ca.issuer
    assert issued_by(authority.certificate_pem, authority.certificate_pem)
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign and usage.digital_signature
    assert not usage.key_encipherment
    names = ca.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == [f"ca.{authority.mesh_id}.orc.internal"]
    assert authority.server_name == f"ca.{authority.mesh_id}.orc.internal"
    assert ca.not_valid_before_utc == NOW - CLOCK_SKEW
    assert ca.not_valid_after_utc == NOW + timedelta(days=3650)


def test_pin_matches_mesh_id_and_reads_from_pem_or_der(authority: MeshAuthority) -> None:
    der = load(authority.certificate_pem).public_bytes(serialization.Encoding.DER)
    assert ca_pin_of(authority.certificate_pem) == ca_pin_of(der) == authority.pin
    assert len(authority.pin) == 26
    assert mesh_id_from_pin(authority.pin) == authority.mesh_id


def test_authority_round_trips_through_pem(authority: MeshAuthority) -> None:
    again = MeshAuthority.from_pem(authority.key_pem, authority.certificate_pem)
    assert again.mesh_id == authority.mesh_id and again.certificate == authority.certificate
    assert "PRIVATE" not in repr(again) and authority.mesh_id in repr(again)


def test_authority_refuses_mismatched_key_or_non_ca(authority: MeshAuthority, other_authority: MeshAuthority) -> None:
    with pytest.raises(IdentityCorrupt, match="do not belong together"):
        MeshAuthority.from_pem(other_authority.key_pem, authority.certificate_pem)
    node_key = generate_key()
    node_cert = authority.issue_for_key(node_key.public_key(), NOW)
    with pytest.raises(IdentityCorrupt, match="not a self-signed CA"):
        MeshAuthority.from_pem(key_to_pem(node_key), node_cert)
    with pytest.raises(IdentityCorrupt):
        MeshAuthority.from_pem(authority.key_pem, b"not a certificate")


def test_signatures(authority: MeshAuthority, other_authority: MeshAuthority) -> None:
    signature = authority.sign(b"entry")
    assert verify_signature(authority.public_key, signature, b"entry")
    assert not verify_signature(authority.public_key, signature, b"entrY")
    assert not verify_signature(other_authority.public_key, signature, b"entry")
    assert not verify_signature(authority.public_key, b"\x00" * 70, b"entry")
    assert certificate_public_key(authority.certificate_pem).public_numbers() == authority.public_key.public_numbers()


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        MeshAuthority.create("laptop", datetime(2025, 1, 1))


# --- issuing --------------------------------------------------------------------------------

def test_issued_certificate_contents(authority: MeshAuthority) -> None:
    key = generate_key()
    pem = authority.issue(make_csr(key, "box"), NOW, timedelta(days=7))
    cert = load(pem)
    node_id = node_id_for(key.public_key())
    assert certificate_node_id(pem) == node_id
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(names) == [x509.DNSName(f"{node_id}.orc.internal")]
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.not_valid_before_utc == NOW - timedelta(minutes=5)
    assert cert.not_valid_after_utc == not_after(pem) == NOW + timedelta(days=7)
    assert issued_by(pem, authority.certificate_pem)
    assert cert.issuer == load(authority.certificate_pem).subject


def test_requested_names_are_ignored(authority: MeshAuthority) -> None:
    key, victim = generate_key(), generate_key()
    victim_name = server_name(node_id_for(victim.public_key()))
    request = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, victim_name)]))
               .add_extension(x509.SubjectAlternativeName([x509.DNSName(victim_name), x509.DNSName("*.orc.internal")]),
                              critical=False)
               .sign(key, hashes.SHA256()))
    pem = authority.issue(request.public_bytes(serialization.Encoding.PEM), NOW)
    cert = load(pem)
    own = server_name(node_id_for(key.public_key()))
    assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName) == [own]
    assert victim_name not in cert.subject.rfc4514_string()


def test_csr_signed_by_another_key_is_refused(authority: MeshAuthority) -> None:
    victim, attacker = generate_key(), generate_key()
    victim_der = x509.load_pem_x509_csr(make_csr(victim, "victim")).public_bytes(serialization.Encoding.DER)
    attacker_der = x509.load_pem_x509_csr(make_csr(attacker, "victim")).public_bytes(serialization.Encoding.DER)
    _, (victim_info, _, _) = der_children(victim_der)
    _, (_, algorithm, signature) = der_children(attacker_der)
    spliced = der_sequence([victim_info, algorithm, signature])
    pem = x509.load_der_x509_csr(spliced).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(CsrInvalid, match="not signed by the key"):
        authority.issue(pem, NOW)


def test_csr_for_other_key_types_is_refused(authority: MeshAuthority) -> None:
    for key in (ec.generate_private_key(ec.SECP384R1()), rsa.generate_private_key(public_exponent=65537, key_size=2048)):
        request = (x509.CertificateSigningRequestBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
                   .sign(key, hashes.SHA256()))
        with pytest.raises(CsrInvalid, match="P-256"):
            authority.issue(request.public_bytes(serialization.Encoding.PEM), NOW)


@pytest.mark.parametrize("csr", [b"", b"junk", b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
                                 b"-" * 20_000, "text, not bytes"])
def test_junk_csr_is_refused(authority: MeshAuthority, csr) -> None:
    with pytest.raises(CsrInvalid):
        authority.issue(csr, NOW)


def test_node_id_is_stable_across_renewal(authority: MeshAuthority) -> None:
    key = generate_key()
    first = authority.issue(make_csr(key, "box"), NOW)
    second = authority.issue(make_csr(key, "box"), NOW + timedelta(days=20))
    assert first != second
    assert load(first).serial_number != load(second).serial_number
    assert certificate_node_id(first) == certificate_node_id(second) == node_id_for(key.public_key())


def test_certificates_of_another_mesh_are_not_ours(authority: MeshAuthority, other_authority: MeshAuthority) -> None:
    pem = other_authority.issue(make_csr(generate_key(), "stranger"), NOW)
    assert issued_by(pem, other_authority.certificate_pem)
    assert not issued_by(pem, authority.certificate_pem)
    # Same issuer name as our CA, signed by another key: only the signature check can tell.
    impostor = MeshAuthority(other_authority.key, authority.certificate)
    forged = impostor.issue(make_csr(generate_key(), "stranger"), NOW)
    assert load(forged).issuer == load(authority.certificate_pem).subject
    assert not issued_by(forged, authority.certificate_pem)
    assert not issued_by(b"junk", authority.certificate_pem)
    assert not issued_by(pem, b"junk")


def test_needs_renewal_boundaries(authority: MeshAuthority) -> None:
    pem = authority.issue_for_key(generate_key().public_key(), NOW, timedelta(days=30))
    lifetime = timedelta(days=30) + CLOCK_SKEW
    end = NOW + timedelta(days=30)
    turning_point = end - lifetime / 3
    assert not needs_renewal(pem, NOW)
    assert not needs_renewal(pem, turning_point)
    assert needs_renewal(pem, turning_point + timedelta(microseconds=1))
    assert needs_renewal(pem, end + timedelta(days=1))
    # Other time zones mean the same instant.
    assert needs_renewal(pem, (turning_point + timedelta(seconds=1)).astimezone(timezone(timedelta(hours=-7))))


def test_certificate_node_id_accepts_der(authority: MeshAuthority) -> None:
    key = generate_key()
    der = load(authority.issue_for_key(key.public_key(), NOW)).public_bytes(serialization.Encoding.DER)
    assert certificate_node_id(der) == node_id_for(key.public_key())


def _custom_certificate(authority: MeshAuthority, key: ec.EllipticCurvePrivateKey, names: list[x509.GeneralName] | None):
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
               .issuer_name(authority.certificate.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(NOW).not_valid_after(NOW + timedelta(days=1)))
    if names is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(authority.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def test_certificate_node_id_requires_exactly_the_own_name(authority: MeshAuthority) -> None:
    key, other = generate_key(), generate_key()
    own = x509.DNSName(server_name(node_id_for(key.public_key())))
    wrong = x509.DNSName(server_name(node_id_for(other.public_key())))
    for names in (None, [wrong], [own, wrong], [own, x509.DNSName("example.com")], [x509.DNSName("*.orc.internal")]):
        with pytest.raises(CertificateInvalid):
            certificate_node_id(_custom_certificate(authority, key, names))
    assert certificate_node_id(_custom_certificate(authority, key, [own])) == node_id_for(key.public_key())
    with pytest.raises(CertificateInvalid):
        certificate_node_id(authority.certificate_pem)
    with pytest.raises(CertificateInvalid):
        certificate_node_id(b"junk")


# --- real mutual TLS ------------------------------------------------------------------------

def _write_identity(folder: Path, name: str, authority: MeshAuthority) -> tuple[Path, Path, str]:
    key = generate_key()
    cert = authority.issue(make_csr(key, name), datetime.now(timezone.utc))
    key_path, cert_path = folder / f"{name}.key", folder / f"{name}.crt"
    key_path.write_bytes(key_to_pem(key))
    cert_path.write_bytes(cert)
    return key_path, cert_path, server_name(node_id_for(key.public_key()))


def _handshake(server_files, client_files, server_ca: bytes, client_ca: bytes, hostname: str):
    """Run one TLS exchange over loopback; return (server outcome, client outcome)."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(server_files[1], server_files[0])
    server_ctx.load_verify_locations(cadata=server_ca.decode())
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname + CERT_REQUIRED
    client_ctx.load_verify_locations(cadata=client_ca.decode())
    client_ctx.load_cert_chain(client_files[1], client_files[0])

    outcome: dict[str, object] = {}
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def serve() -> None:
        try:
            connection, _ = listener.accept()
            with server_ctx.wrap_socket(connection, server_side=True) as tls:
                peer = tls.getpeercert(binary_form=True)
                outcome["server"] = certificate_node_id(peer)
                tls.sendall(b"hello")
        except (ssl.SSLError, OSError) as error:
            outcome["server"] = error

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with socket.create_connection(listener.getsockname(), timeout=10) as raw:
            with client_ctx.wrap_socket(raw, server_hostname=hostname) as tls:
                data = tls.recv(5)
                outcome["client"] = (certificate_node_id(tls.getpeercert(binary_form=True)), data)
    except (ssl.SSLError, OSError) as error:
        outcome["client"] = error
    finally:
        thread.join(10)
        listener.close()
    return outcome["server"], outcome["client"]


def test_issued_certificates_work_for_mutual_tls(tmp_path: Path, authority: MeshAuthority,
                                                 other_authority: MeshAuthority) -> None:
    server = _write_identity(tmp_path, "server", authority)
    client = _write_identity(tmp_path, "client", authority)
    stranger = _write_identity(tmp_path, "stranger", other_authority)
    ca = authority.certificate_pem
    server_id, client_id = server[2].split(".")[0], client[2].split(".")[0]

    # Same CA on both ends: each side learns the other's node id from its certificate.
    server_saw, client_saw = _handshake(server, client, ca, ca, server[2])
    assert server_saw == client_id
    assert client_saw == (server_id, b"hello")

    # A client certificate from another mesh is refused by the server.
    server_saw, client_saw = _handshake(server, stranger, ca, ca, server[2])
    assert isinstance(server_saw, ssl.SSLError) and "certificate verify failed" in str(server_saw)
    assert isinstance(client_saw, (ssl.SSLError, OSError)) or client_saw[1] == b""

    # Asking for another node's name fails hostname verification on the client.
    server_saw, client_saw = _handshake(server, client, ca, ca, client[2])
    assert isinstance(client_saw, ssl.SSLCertVerificationError)
