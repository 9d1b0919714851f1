"""Keys, the mesh CA, certificate requests and node certificates (X.509, ECDSA P-256).

The CA is self-signed and lives only on the nodes that created (or were given) the mesh. It
signs node certificates whose single name, `DNS:<node_id>.orc.internal`, is derived from the
certified key itself, so a certificate can never claim another node's id: whatever names a
request asks for are ignored. Every function here is pure apart from key generation and random
serial numbers; time comes in as `now` (an aware datetime).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from orc.node.trust.errors import CertificateInvalid, CsrInvalid, IdentityCorrupt, InvalidNodeName
from orc.node.protocol.ids import MeshId, NodeId
from orc.node.trust.ids import (
    SERVER_NAME_SUFFIX,
    ca_pin_for,
    mesh_id_for,
    node_id_for,
    server_name,
    spki_sha256,
)

NODE_CERTIFICATE_LIFETIME = timedelta(days=30)
CA_LIFETIME = timedelta(days=3650)
# Certificates start this long before `now`, so a peer whose clock is a little behind the
# issuer's still accepts a certificate issued a moment ago.
CLOCK_SKEW = timedelta(minutes=5)
# A CSR arrives from a not-yet-trusted joiner; a real P-256 request is well under 1 KiB, so
# this stops a joiner making the CA parse megabytes.
MAX_CSR_BYTES = 16 * 1024
# Same reasoning for certificates handed to us by peers or join servers (ours are ~700 bytes).
MAX_CERTIFICATE_BYTES = 16 * 1024

_NAME = re.compile(r"[A-Za-z0-9._-]{1,63}")


def check_node_name(name: str) -> str:
    """`name` itself if it is a valid node name (1-63 of [A-Za-z0-9._-]); raise InvalidNodeName otherwise."""
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        shown = repr(name[:70]) if isinstance(name, str) else type(name).__name__
        raise InvalidNodeName(
            f"{shown} cannot be a node name: use 1-63 characters of letters, digits, '.', '_' or '-'")
    return name


def _utc(now: datetime) -> datetime:
    if now.tzinfo is None:
        # A naive datetime is ambiguous (local time or UTC?); refusing it catches the bug early.
        raise ValueError("`now` must be a timezone-aware datetime, e.g. datetime.now(timezone.utc)")
    return now.astimezone(timezone.utc)


def _is_p256(key: object) -> bool:
    return isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)) and isinstance(
        key.curve, ec.SECP256R1)


# --- keys -----------------------------------------------------------------------------------

def generate_key() -> ec.EllipticCurvePrivateKey:
    """A new ECDSA P-256 private key."""
    return ec.generate_private_key(ec.SECP256R1())


def key_to_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """The key as unencrypted PKCS#8 PEM (the file holding it is 0600 in a 0700 folder)."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def key_from_pem(pem: bytes) -> ec.EllipticCurvePrivateKey:
    """Parse a P-256 private key; raise IdentityCorrupt for anything else (junk, other curves, RSA)."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as error:
        raise IdentityCorrupt(f"not a readable unencrypted PEM private key ({error})") from None
    if not _is_p256(key):
        raise IdentityCorrupt(f"the key is a {type(key).__name__.lstrip('_')}, not an ECDSA P-256 key")
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


# --- certificates as bytes ------------------------------------------------------------------

def load_certificate(data: bytes | str) -> x509.Certificate:
    """Parse a PEM or DER certificate; raise CertificateInvalid if it is not one."""
    if isinstance(data, str):
        data = data.encode("ascii", "replace")
    if len(data) > MAX_CERTIFICATE_BYTES:
        raise CertificateInvalid(f"certificate is {len(data)} bytes, more than the {MAX_CERTIFICATE_BYTES} allowed")
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except (ValueError, TypeError) as error:
        raise CertificateInvalid(f"not a readable X.509 certificate ({error})") from None


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _p256_public_key(certificate: x509.Certificate) -> ec.EllipticCurvePublicKey:
    try:
        key = certificate.public_key()
    except (ValueError, UnsupportedAlgorithm) as error:
        raise CertificateInvalid(f"the certificate's public key cannot be read ({error})") from None
    if not _is_p256(key):
        raise CertificateInvalid("the certificate's key is not an ECDSA P-256 key")
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key


def certificate_public_key(cert: bytes | str) -> ec.EllipticCurvePublicKey:
    """The P-256 public key a PEM/DER certificate certifies (e.g. the CA key that signs revocations)."""
    return _p256_public_key(load_certificate(cert))


def certificate_node_id(cert: bytes | str) -> NodeId:
    """The node a PEM/DER certificate belongs to: node_id of its key, which its only SAN must name."""
    certificate = load_certificate(cert)
    node_id = node_id_for(_p256_public_key(certificate))
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise CertificateInvalid(f"the certificate of node {node_id} has no subject alternative name") from None
    except ValueError as error:  # a malformed or duplicated extension
        raise CertificateInvalid(f"the certificate's extensions cannot be read ({error})") from None
    expected = [x509.DNSName(server_name(node_id))]
    if list(names) != expected:
        raise CertificateInvalid(
            f"the certificate names {[n.value for n in names]!r}, but its key belongs to "
            f"{server_name(node_id)!r} (and nothing else)")
    return node_id


def issued_by(cert_pem: bytes | str, ca_cert_pem: bytes | str) -> bool:
    """Whether the CA certificate's key signed `cert_pem` (False too when either cannot be parsed)."""
    try:
        certificate, ca = load_certificate(cert_pem), load_certificate(ca_cert_pem)
    except CertificateInvalid:
        return False
    try:
        certificate.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def not_after(cert_pem: bytes | str) -> datetime:
    """When the certificate expires (aware, UTC)."""
    return load_certificate(cert_pem).not_valid_after_utc


def needs_renewal(cert_pem: bytes | str, now: datetime) -> bool:
    """Whether less than a third of the certificate's lifetime is left at `now` (or it expired)."""
    certificate = load_certificate(cert_pem)
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    return certificate.not_valid_after_utc - _utc(now) < lifetime / 3


def ca_pin_of(ca_cert: bytes | str) -> str:
    """The join-token pin of a CA certificate (PEM or DER), to compare with the token's pin."""
    return ca_pin_for(_p256_public_key(load_certificate(ca_cert)))


def check_ca_certificate(ca_cert: bytes | str) -> ec.EllipticCurvePublicKey:
    """The CA key of a mesh CA certificate; raise CertificateInvalid unless it is a self-signed P-256 CA."""
    certificate = load_certificate(ca_cert)
    key = _p256_public_key(certificate)
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    except (x509.ExtensionNotFound, ValueError):
        raise CertificateInvalid("the CA certificate has no valid basicConstraints extension") from None
    if not constraints.ca or not issued_by(ca_cert, ca_cert):
        raise CertificateInvalid("the CA certificate is not a self-signed CA certificate")
    return key


def ca_server_name(mesh_id: MeshId) -> str:
    """The TLS name of the mesh CA's certificate (the join server's identity)."""
    return f"ca.{mesh_id}.{SERVER_NAME_SUFFIX}"


# --- requests -------------------------------------------------------------------------------

def make_csr(key: ec.EllipticCurvePrivateKey, name: str) -> bytes:
    """A PEM certificate request for `key` (the CA ignores its names; `name` is informational)."""
    check_node_name(name)
    request = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
               .sign(key, hashes.SHA256()))
    return request.public_bytes(serialization.Encoding.PEM)


def csr_public_key(csr_pem: bytes) -> ec.EllipticCurvePublicKey:
    """The P-256 key of a self-signed CSR; raise CsrInvalid for anything else."""
    if not isinstance(csr_pem, (bytes, bytearray)):
        raise CsrInvalid("the certificate request must be PEM bytes")
    if len(csr_pem) > MAX_CSR_BYTES:
        raise CsrInvalid(f"the certificate request is {len(csr_pem)} bytes, more than the {MAX_CSR_BYTES} allowed")
    try:
        request = x509.load_pem_x509_csr(bytes(csr_pem))
        key = request.public_key()
        valid = request.is_signature_valid
    except (ValueError, TypeError, UnsupportedAlgorithm) as error:
        raise CsrInvalid(f"the certificate request cannot be read ({error})") from None
    if not _is_p256(key):
        raise CsrInvalid("the certificate request is not for an ECDSA P-256 key")
    if not valid:
        raise CsrInvalid("the certificate request is not signed by the key it asks to certify")
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key


# --- the mesh CA ----------------------------------------------------------------------------

@dataclass(frozen=True)
class MeshAuthority:
    """The mesh CA: its private key and self-signed certificate. Held only by CA nodes."""

    key: ec.EllipticCurvePrivateKey = field(repr=False)
    certificate: x509.Certificate = field(repr=False)

    def __repr__(self) -> str:  # never the key
        return f"MeshAuthority(mesh_id={self.mesh_id!r})"

    @classmethod
    def create(cls, name: str, now: datetime) -> MeshAuthority:
        """A new mesh: a fresh CA key and a 10-year self-signed CA certificate."""
        check_node_name(name)
        now = _utc(now)
        key = generate_key()
        mesh_id = mesh_id_for(key.public_key())
        subject = x509.Name([
            x509.NameAttribute(NameOID.COMMON_NAME, f"orc mesh CA {mesh_id}"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, f"created on {name}"),
        ])
        certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(now + CA_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(ca_server_name(mesh_id))]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(key, certificate)

    @classmethod
    def from_pem(cls, key_pem: bytes, certificate_pem: bytes) -> MeshAuthority:
        """Load a CA; raise IdentityCorrupt unless the certificate is a self-signed CA for this key."""
        key = key_from_pem(key_pem)
        try:
            ca_key = check_ca_certificate(certificate_pem)
        except CertificateInvalid as error:
            raise IdentityCorrupt(str(error)) from None
        if spki_sha256(ca_key) != spki_sha256(key.public_key()):
            raise IdentityCorrupt("the CA key and the CA certificate do not belong together")
        certificate = load_certificate(certificate_pem)
        return cls(key, certificate)

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self.key.public_key()

    @property
    def mesh_id(self) -> MeshId:
        return mesh_id_for(self.key.public_key())

    @property
    def pin(self) -> str:
        """The pin a join token carries (`ca_pin_for` of the CA key)."""
        return ca_pin_for(self.key.public_key())

    @property
    def server_name(self) -> str:
        return ca_server_name(self.mesh_id)

    @property
    def certificate_pem(self) -> bytes:
        return _pem(self.certificate)

    @property
    def key_pem(self) -> bytes:
        return key_to_pem(self.key)

    def issue(self, csr_pem: bytes, now: datetime, lifetime: timedelta = NODE_CERTIFICATE_LIFETIME) -> bytes:
        """A node certificate (PEM) for the key of a valid P-256 CSR; raise CsrInvalid otherwise.

        The requested subject and names are ignored: the certificate names only the node id
        derived from the key, so nobody can obtain a certificate for an id they do not own.
        """
        return self.issue_for_key(csr_public_key(csr_pem), now, lifetime)

    def issue_for_key(self, public_key: ec.EllipticCurvePublicKey, now: datetime,
                      lifetime: timedelta = NODE_CERTIFICATE_LIFETIME) -> bytes:
        """A node certificate (PEM) for `public_key`, valid from `now` - 5 min for `lifetime`."""
        if not _is_p256(public_key):
            raise CsrInvalid("a node certificate can only be issued for an ECDSA P-256 key")
        if lifetime <= timedelta(0):
            raise ValueError(f"certificate lifetime must be positive, got {lifetime}")
        now = _utc(now)
        node_id = node_id_for(public_key)
        ca_key_id = x509.SubjectKeyIdentifier.from_public_key(self.public_key)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id)]))
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(now + lifetime)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(server_name(node_id))]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_key_id), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return _pem(certificate)

    def sign(self, data: bytes) -> bytes:
        """An ECDSA-SHA256 signature (DER) by the CA key over `data`."""
        return self.key.sign(data, ec.ECDSA(hashes.SHA256()))


def verify_signature(public_key: ec.EllipticCurvePublicKey, signature: bytes, data: bytes) -> bool:
    """Whether `signature` is a valid ECDSA-SHA256 signature of `data` by `public_key`."""
    try:
        public_key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True
