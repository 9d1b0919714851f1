"""This node's identity files: the I/O shell around the pure identity cores.

One folder (`Home.identity_dir`, mode 0700) holds:

    node.key         this node's P-256 key (0600); made before joining, kept across renewals
    node.crt         its certificate from the mesh CA
    ca.crt           the mesh CA certificate (the trust root for every mesh connection)
    ca.key           the CA key, only on nodes that created the mesh
    node.json        name, node_id, mesh_id; written last, so its presence means "member"
    revocations.log  the revocation log (msgpack entries, see revocation.py)
    invites.json     pending invitations (hashes of secrets only), on CA nodes
    issuer.json      who granted the current certificate (a node id, or the address joined
                     through): the node asked first at the next renewal; a hint only

Every file is written atomically (a 0600 temp file in the same folder, fsync, rename, fsync of
the folder), so a crash leaves the old or the new content, never a torn file, and a key is
never readable by anyone else, not even for a moment.
"""

from __future__ import annotations

import json
import os
import shlex
import stat
import tempfile
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from orc.node.trust.certificates import (
    MeshAuthority,
    certificate_node_id,
    check_ca_certificate,
    check_node_name,
    generate_key,
    issued_by,
    key_from_pem,
    key_to_pem,
    load_certificate,
)
from orc.node.trust.errors import (
    AlreadyMember,
    CertificateInvalid,
    IdentityCorrupt,
    IdentityError,
    IdentityPermissionError,
    NotMember,
)
from orc.node.protocol.ids import MeshId, NodeId, is_mesh_id, is_node_id
from orc.node.trust.ids import mesh_id_for, node_id_for, server_name
from orc.node.trust.revocation import RevocationLog, decode_entries, encode_entries
from orc.node.trust.tokens import Invitations

NODE_KEY = "node.key"
NODE_CERT = "node.crt"
CA_CERT = "ca.crt"
CA_KEY = "ca.key"
NODE_JSON = "node.json"
REVOCATIONS = "revocations.log"
INVITES = "invites.json"
ISSUER = "issuer.json"

_KEYS = (NODE_KEY, CA_KEY)
# Our own file, written by us: far above any real log, it only bounds a damaged file.
_MAX_STORED_REVOCATIONS = 1_000_000

_START_OVER = "or move {folder} away and run `orc-node init` or `orc-node start --join TOKEN` to start over"
_ADVICE = {
    REVOCATIONS: "delete it and restart orc-node; peers will send the log again",
    INVITES: "delete it; pending invitations are lost, run `orc-node invite` again",
}


@dataclass(frozen=True)
class Identity:
    """Who this node is in its mesh, as loaded from the identity folder."""

    node_id: NodeId
    name: str
    mesh_id: MeshId
    key: ec.EllipticCurvePrivateKey = field(repr=False)
    key_pem: bytes = field(repr=False)
    certificate_pem: bytes = field(repr=False)
    ca_certificate_pem: bytes = field(repr=False)
    authority: MeshAuthority | None  # present only on CA holders

    @property
    def server_name(self) -> str:
        return server_name(self.node_id)

    @property
    def is_authority(self) -> bool:
        return self.authority is not None


@dataclass(frozen=True)
class Issuer:
    """Who granted this node's current certificate: the node to ask first for the next one.

    At a join only the inviter's mesh address may be known (`--peer`); a renewal names the node.
    """

    node_id: NodeId | None = None
    address: str | None = None  # "host:port" of its mesh server

    def to_json(self) -> str:
        return json.dumps({"node_id": self.node_id, "address": self.address}, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, data: bytes) -> Issuer | None:
        """The issuer in `data`, or None when it is not a well-formed record (it is only a hint)."""
        try:
            record = json.loads(data)
        except ValueError:
            return None
        if not isinstance(record, dict):
            return None
        node_id, address = record.get("node_id"), record.get("address")
        if node_id is not None and not (isinstance(node_id, str) and is_node_id(node_id)):
            return None
        if address is not None and not (isinstance(address, str) and 0 < len(address) <= 300):
            return None
        if node_id is None and address is None:
            return None
        return cls(NodeId(node_id) if node_id is not None else None, address)


class IdentityStore:
    """Reads and writes one identity folder; every check happens on load."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    # --- membership -------------------------------------------------------------------------

    def exists(self) -> bool:
        """Whether a membership is stored (node.json, the last file a join or init writes)."""
        return (self.folder / NODE_JSON).is_file()

    def init_mesh(self, name: str, now: datetime) -> Identity:
        """Create a mesh: a CA, this node's key (the pending one if any) and its certificate."""
        check_node_name(name)
        self._refuse_if_member()
        key = self.pending_key()
        authority = MeshAuthority.create(name, now)
        certificate = authority.issue_for_key(key.public_key(), now)
        self._write(CA_KEY, authority.key_pem)
        self._write(CA_CERT, authority.certificate_pem)
        self._write(NODE_CERT, certificate)
        self._write(REVOCATIONS, encode_entries(()))
        node_id = node_id_for(key.public_key())
        self._write_node_json(name, node_id, authority.mesh_id)
        return Identity(node_id, name, authority.mesh_id, key, key_to_pem(key), certificate,
                        authority.certificate_pem, authority)

    def pending_key(self) -> ec.EllipticCurvePrivateKey:
        """This node's key, created on first use (a joiner needs it for its CSR before it has a certificate)."""
        self._prepare_folder()
        path = self.folder / NODE_KEY
        if path.exists():
            return self._load_key(NODE_KEY)
        key = generate_key()
        self._write(NODE_KEY, key_to_pem(key))
        return key

    def save_membership(self, name: str, certificate_pem: bytes, ca_certificate_pem: bytes,
                        revocations: RevocationLog, issuer: Issuer | None = None) -> Identity:
        """Record a successful join; the certificate must be for our pending key and from that CA.

        `issuer`: the node that admitted us, as far as the joiner knows it."""
        check_node_name(name)
        self._refuse_if_member()
        key = self.pending_key()
        node_id = node_id_for(key.public_key())
        ca_key = check_ca_certificate(ca_certificate_pem)
        certified = certificate_node_id(certificate_pem)
        if certified != node_id:
            raise CertificateInvalid(f"the certificate is for node {certified}, but this node's key is {node_id}")
        if not issued_by(certificate_pem, ca_certificate_pem):
            raise CertificateInvalid("the certificate was not issued by the mesh CA it came with")
        RevocationLog.verified(revocations.entries, ca_key)
        certificate, ca_certificate = _normalized(certificate_pem), _normalized(ca_certificate_pem)
        mesh_id = mesh_id_for(ca_key)
        self._write(NODE_CERT, certificate)
        self._write(CA_CERT, ca_certificate)
        self._write(REVOCATIONS, encode_entries(revocations.entries))
        if issuer is not None:
            self._write(ISSUER, issuer.to_json().encode())
        self._write_node_json(name, node_id, mesh_id)
        return Identity(node_id, name, mesh_id, key, key_to_pem(key), certificate, ca_certificate, None)

    def load(self) -> Identity:
        """The stored identity, fully checked; NotMember, IdentityPermissionError or IdentityCorrupt otherwise."""
        if not self.exists():
            raise NotMember(f"this node is not in a mesh yet (nothing in {self.folder}); run `orc-node init` "
                            "to create a mesh, or `orc-node start --join TOKEN` to join one")
        self._check_permissions()
        name, node_id, mesh_id = self._read_node_json()
        key = self._load_key(NODE_KEY)
        key_pem = key_to_pem(key)
        if node_id_for(key.public_key()) != node_id:
            raise self._corrupt(NODE_JSON, f"it names node {node_id}, but {NODE_KEY} is the key of "
                                           f"{node_id_for(key.public_key())}")
        ca_certificate = self._read(CA_CERT)
        try:
            ca_key = check_ca_certificate(ca_certificate)
        except CertificateInvalid as error:
            raise self._corrupt(CA_CERT, str(error)) from None
        if mesh_id_for(ca_key) != mesh_id:
            raise self._corrupt(CA_CERT, f"it is the CA of mesh {mesh_id_for(ca_key)}, not of mesh {mesh_id}")
        certificate = self._read(NODE_CERT)
        try:
            certified = certificate_node_id(certificate)
        except CertificateInvalid as error:
            raise self._corrupt(NODE_CERT, str(error)) from None
        if certified != node_id or not issued_by(certificate, ca_certificate):
            raise self._corrupt(NODE_CERT, f"it is not a certificate for node {node_id} from mesh {mesh_id}")
        authority = None
        if (self.folder / CA_KEY).exists():
            try:
                authority = MeshAuthority.from_pem(self._read(CA_KEY), ca_certificate)
            except IdentityCorrupt as error:
                raise self._corrupt(CA_KEY, str(error)) from None
        return Identity(node_id, name, mesh_id, key, key_pem, certificate, ca_certificate, authority)

    def save_certificate(self, certificate_pem: bytes, issuer: Issuer | None = None) -> Identity:
        """Store a renewed certificate, after checking it is for our key and from our CA, and
        the node that granted it (`issuer`), if it came from another node."""
        identity = self.load()
        certified = certificate_node_id(certificate_pem)
        if certified != identity.node_id:
            raise CertificateInvalid(f"the renewed certificate is for node {certified}, not for this node "
                                     f"({identity.node_id})")
        if not issued_by(certificate_pem, identity.ca_certificate_pem):
            raise CertificateInvalid(f"the renewed certificate was not issued by the CA of mesh {identity.mesh_id}")
        certificate = _normalized(certificate_pem)
        self._write(NODE_CERT, certificate)
        if issuer is not None:
            self._write(ISSUER, issuer.to_json().encode())
        return replace(identity, certificate_pem=certificate)

    def load_issuer(self) -> Issuer | None:
        """Who granted the current certificate, if recorded (a missing or damaged record: None)."""
        try:
            data = (self.folder / ISSUER).read_bytes()
        except OSError:
            return None
        return Issuer.from_json(data[:4096])

    # --- revocations and invitations --------------------------------------------------------

    def load_revocations(self) -> RevocationLog:
        """The stored revocation log, every signature checked against the stored CA certificate."""
        if not self.exists():
            raise NotMember("this node is not in a mesh yet; run `orc-node init` or `orc-node start --join TOKEN`")
        path = self.folder / REVOCATIONS
        if not path.exists():
            return RevocationLog()
        try:
            ca_key = check_ca_certificate(self._read(CA_CERT))
        except CertificateInvalid as error:
            raise self._corrupt(CA_CERT, str(error)) from None
        try:
            return RevocationLog.verified(decode_entries(self._read(REVOCATIONS), _MAX_STORED_REVOCATIONS), ca_key)
        except IdentityError as error:
            raise self._corrupt(REVOCATIONS, str(error)) from None

    def save_revocations(self, log: RevocationLog) -> None:
        self._prepare_folder()
        self._write(REVOCATIONS, encode_entries(log.entries))

    def load_invitations(self) -> Invitations:
        """Pending invitations (none if the file does not exist)."""
        if not (self.folder / INVITES).exists():
            return Invitations()
        try:
            return Invitations.from_json(self._read(INVITES))
        except IdentityCorrupt as error:
            raise self._corrupt(INVITES, str(error)) from None

    def save_invitations(self, invitations: Invitations) -> None:
        self._prepare_folder()
        self._write(INVITES, invitations.to_json().encode())

    # --- files ------------------------------------------------------------------------------

    def _refuse_if_member(self) -> None:
        if not self.exists():
            return
        try:
            name, node_id, mesh_id = self._read_node_json()
            who = f"{name} ({node_id}) in mesh {mesh_id}"
        except IdentityCorrupt:
            who = "a member of a mesh"
        raise AlreadyMember(f"this node is already {who}; to start over, move {self.folder} away first")

    def _prepare_folder(self) -> None:
        """Create the folder 0700; tighten it if it holds no key yet, otherwise insist it is private."""
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.mkdir(self.folder, 0o700)
        except FileExistsError:
            pass
        if not self.folder.is_dir():
            raise IdentityCorrupt(f"{self.folder} should be the identity folder but is not a folder; move it away")
        if os.name == "posix" and not any((self.folder / key).exists() for key in _KEYS):
            if stat.S_IMODE(os.stat(self.folder).st_mode) & 0o077:
                os.chmod(self.folder, 0o700)
        self._check_permissions()

    def _check_permissions(self) -> None:
        if os.name != "posix":  # POSIX modes are what we check; other systems rely on the user profile
            return
        for path, mode in ((self.folder, "700"), *((self.folder / key, "600") for key in _KEYS)):
            try:
                bits = stat.S_IMODE(os.stat(path).st_mode)
            except FileNotFoundError:
                continue
            if bits & 0o077:
                raise IdentityPermissionError(
                    f"{path} can be accessed by other users (mode {bits:04o}), but it holds private keys; "
                    f"fix it with: chmod {mode} {shlex.quote(str(path))}")

    def _read(self, name: str) -> bytes:
        try:
            return (self.folder / name).read_bytes()
        except FileNotFoundError:
            raise self._corrupt(name, "the file is missing") from None

    def _load_key(self, name: str) -> ec.EllipticCurvePrivateKey:
        self._check_permissions()
        pem = self._read(name)
        try:
            return key_from_pem(pem)
        except IdentityCorrupt as error:
            raise self._corrupt(name, str(error)) from None

    def _read_node_json(self) -> tuple[str, NodeId, MeshId]:
        try:
            data = json.loads(self._read(NODE_JSON))
        except ValueError as error:
            raise self._corrupt(NODE_JSON, f"it is not valid JSON ({error})") from None
        if not isinstance(data, dict):
            raise self._corrupt(NODE_JSON, "it is not a JSON object")
        name, node_id, mesh_id = data.get("name"), data.get("node_id"), data.get("mesh_id")
        if not (isinstance(name, str) and isinstance(node_id, str) and isinstance(mesh_id, str)
                and is_node_id(node_id) and is_mesh_id(mesh_id)):
            raise self._corrupt(NODE_JSON, "it needs text fields name, node_id and mesh_id")
        try:
            check_node_name(name)
        except IdentityError as error:
            raise self._corrupt(NODE_JSON, str(error)) from None
        return name, NodeId(node_id), MeshId(mesh_id)

    def _write_node_json(self, name: str, node_id: NodeId, mesh_id: MeshId) -> None:
        text = json.dumps({"name": name, "node_id": node_id, "mesh_id": mesh_id}, indent=2, sort_keys=True)
        self._write(NODE_JSON, (text + "\n").encode())

    def _write(self, name: str, data: bytes) -> None:
        """Replace `name` atomically; the temp file is 0600 from its creation (mkstemp)."""
        fd, temp = tempfile.mkstemp(dir=self.folder, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, self.folder / name)
        except BaseException:
            try:
                os.unlink(temp)
            except FileNotFoundError:
                pass
            raise
        _fsync_folder(self.folder)

    def _corrupt(self, name: str, detail: str) -> IdentityCorrupt:
        path = self.folder / name
        advice = _ADVICE.get(name) or "restore it from a backup, " + _START_OVER.format(folder=self.folder)
        return IdentityCorrupt(f"{path} is damaged: {detail}; {advice}")


def _normalized(certificate: bytes) -> bytes:
    """PEM, whatever form it came in (the caller has already validated it)."""
    return load_certificate(certificate).public_bytes(serialization.Encoding.PEM)


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
