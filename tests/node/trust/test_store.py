"""The identity folder: creating a mesh, joining, renewing, permissions, atomic writes, damage."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from orc.node.trust import store as store_module
from orc.node.trust.certificates import MeshAuthority, generate_key, issued_by, make_csr, needs_renewal
from orc.node.trust.errors import (
    AlreadyMember,
    CertificateInvalid,
    IdentityCorrupt,
    IdentityPermissionError,
    InvalidNodeName,
    NotMember,
    RevocationLogInvalid,
)
from orc.node.trust.ids import node_id_for, server_name
from orc.node.trust.revocation import RevocationLog, encode_entries
from orc.node.trust.store import IdentityStore, Issuer
from orc.node.trust.tokens import Invitations, new_secret

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
MEMBER_FILES = {"node.key", "node.crt", "ca.crt", "node.json", "revocations.log"}

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def ca_store(tmp_path: Path) -> IdentityStore:
    store = IdentityStore(tmp_path / "ca" / "identity")
    store.init_mesh("laptop", NOW)
    return store


def join(ca_store: IdentityStore, folder: Path, name: str = "box") -> IdentityStore:
    """What the join server and joiner do between them, without the network."""
    joiner = IdentityStore(folder)
    authority = ca_store.load().authority
    assert authority is not None
    certificate = authority.issue(make_csr(joiner.pending_key(), name), NOW)
    joiner.save_membership(name, certificate, authority.certificate_pem, ca_store.load_revocations())
    return joiner


def test_init_creates_a_private_folder_of_private_files(tmp_path: Path) -> None:
    store = IdentityStore(tmp_path / "data" / "identity")
    assert not store.exists()
    identity = store.init_mesh("laptop", NOW)
    assert store.exists()
    assert mode(store.folder) == 0o700
    names = {p.name for p in store.folder.iterdir()}
    assert names == MEMBER_FILES | {"ca.key"}
    assert all(mode(store.folder / n) == 0o600 for n in names)
    assert identity.is_authority and identity.authority.mesh_id == identity.mesh_id
    assert identity.node_id == node_id_for(identity.key.public_key())
    assert identity.server_name == server_name(identity.node_id)
    assert issued_by(identity.certificate_pem, identity.ca_certificate_pem)
    assert "PRIVATE" not in repr(identity) and "CERTIFICATE" not in repr(identity)


def test_files_are_private_even_with_a_permissive_umask(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        seen.append(stat.S_IMODE(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(store_module.os, "fsync", recording_fsync)
    old = os.umask(0)
    try:
        store = IdentityStore(tmp_path / "identity")
        store.init_mesh("laptop", NOW)
    finally:
        os.umask(old)
    assert mode(store.folder) == 0o700
    assert all(mode(p) == 0o600 for p in store.folder.iterdir())
    # Every temp file was already 0600 while its content (a key, say) was being written.
    file_modes = [m for m in seen if m != 0o700]
    assert file_modes and set(file_modes) == {0o600}


def test_load_returns_what_init_made(ca_store: IdentityStore) -> None:
    made = ca_store.load()
    again = ca_store.load()
    assert (again.node_id, again.name, again.mesh_id) == (made.node_id, "laptop", made.mesh_id)
    assert again.certificate_pem == made.certificate_pem and again.key_pem == made.key_pem
    assert again.authority is not None and again.authority.mesh_id == made.mesh_id
    assert json.loads((ca_store.folder / "node.json").read_text()) == {
        "name": "laptop", "node_id": made.node_id, "mesh_id": made.mesh_id}


def test_init_twice_is_refused(ca_store: IdentityStore) -> None:
    before = {p.name: p.read_bytes() for p in ca_store.folder.iterdir()}
    with pytest.raises(AlreadyMember, match="already laptop"):
        ca_store.init_mesh("laptop", NOW)
    assert {p.name: p.read_bytes() for p in ca_store.folder.iterdir()} == before


def test_not_a_member_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(NotMember) as caught:
        IdentityStore(tmp_path / "identity").load()
    assert "orc-node init" in str(caught.value) and "orc-node start --join TOKEN" in str(caught.value)


def test_bad_names_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    store = IdentityStore(tmp_path / "identity")
    with pytest.raises(InvalidNodeName):
        store.init_mesh("my laptop", NOW)
    assert not store.folder.exists()


def test_a_loose_empty_folder_is_tightened(tmp_path: Path) -> None:
    folder = tmp_path / "identity"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)
    IdentityStore(folder).init_mesh("laptop", NOW)
    assert mode(folder) == 0o700


# --- joining --------------------------------------------------------------------------------

def test_pending_key_is_made_once_and_reused(tmp_path: Path) -> None:
    store = IdentityStore(tmp_path / "identity")
    first = store.pending_key()
    assert node_id_for(store.pending_key().public_key()) == node_id_for(first.public_key())
    assert mode(store.folder / "node.key") == 0o600 and not store.exists()


def test_join_then_load(ca_store: IdentityStore, tmp_path: Path) -> None:
    joiner = join(ca_store, tmp_path / "box")
    identity = joiner.load()
    assert identity.name == "box" and identity.mesh_id == ca_store.load().mesh_id
    assert not identity.is_authority
    assert {p.name for p in joiner.folder.iterdir()} == MEMBER_FILES
    assert all(mode(p) == 0o600 for p in joiner.folder.iterdir())
    assert joiner.load_revocations() == RevocationLog()


def test_membership_needs_a_certificate_for_our_key_from_that_ca(ca_store: IdentityStore, tmp_path: Path) -> None:
    authority = ca_store.load().authority
    joiner = IdentityStore(tmp_path / "box")
    joiner.pending_key()
    someone_else = authority.issue(make_csr(generate_key(), "other"), NOW)
    with pytest.raises(CertificateInvalid, match="this node's key"):
        joiner.save_membership("box", someone_else, authority.certificate_pem, RevocationLog())
    stranger_ca = MeshAuthority.create("stranger", NOW)
    ours_by_stranger = stranger_ca.issue(make_csr(joiner.pending_key(), "box"), NOW)
    with pytest.raises(CertificateInvalid, match="not issued"):
        joiner.save_membership("box", ours_by_stranger, authority.certificate_pem, RevocationLog())
    forged_log = RevocationLog().append(stranger_ca, node_id_for(generate_key().public_key()), "x", now=1.0)
    ours = authority.issue(make_csr(joiner.pending_key(), "box"), NOW)
    with pytest.raises(RevocationLogInvalid):
        joiner.save_membership("box", ours, authority.certificate_pem, forged_log)
    assert not joiner.exists()
    joiner.save_membership("box", ours, authority.certificate_pem, RevocationLog())
    with pytest.raises(AlreadyMember):
        joiner.save_membership("box", ours, authority.certificate_pem, RevocationLog())


# --- renewal --------------------------------------------------------------------------------

def test_renewal_keeps_the_node_id(ca_store: IdentityStore, tmp_path: Path) -> None:
    joiner = join(ca_store, tmp_path / "box")
    before = joiner.load()
    later = NOW + timedelta(days=25)
    assert needs_renewal(before.certificate_pem, later)
    renewed = ca_store.load().authority.issue(make_csr(before.key, "box"), later)
    after = joiner.save_certificate(renewed)
    assert after.node_id == before.node_id and after.certificate_pem == renewed
    assert joiner.load().certificate_pem == renewed
    assert not needs_renewal(joiner.load().certificate_pem, later)


def test_renewal_refuses_foreign_certificates(ca_store: IdentityStore, tmp_path: Path) -> None:
    joiner = join(ca_store, tmp_path / "box")
    original = (joiner.folder / "node.crt").read_bytes()
    with pytest.raises(CertificateInvalid, match="not for this node"):
        joiner.save_certificate(ca_store.load().authority.issue(make_csr(generate_key(), "x"), NOW))
    stranger = MeshAuthority.create("stranger", NOW)
    with pytest.raises(CertificateInvalid, match="not issued"):
        joiner.save_certificate(stranger.issue(make_csr(joiner.load().key, "box"), NOW))
    assert (joiner.folder / "node.crt").read_bytes() == original


def test_who_granted_the_certificate_is_recorded_at_join_and_renewal(ca_store: IdentityStore,
                                                                       tmp_path: Path) -> None:
    joiner = IdentityStore(tmp_path / "box")
    authority = ca_store.load().authority
    certificate = authority.issue(make_csr(joiner.pending_key(), "box"), NOW)
    assert joiner.load_issuer() is None
    joiner.save_membership("box", certificate, authority.certificate_pem, RevocationLog(),
                           Issuer(None, "192.168.1.20:7733"))  # joined through --peer: only the address
    assert joiner.load_issuer() == Issuer(None, "192.168.1.20:7733")
    inviter = ca_store.load().node_id
    joiner.save_certificate(authority.issue(make_csr(joiner.load().key, "box"), NOW + timedelta(days=21)),
                            Issuer(inviter, "192.168.1.20:7733"))
    assert joiner.load_issuer() == Issuer(inviter, "192.168.1.20:7733")
    # A hint only: a damaged record is no record, never an error.
    for damaged in (b"{", b"[]", b'{"node_id": "not an id"}', b"{}", b'{"address": ""}'):
        (joiner.folder / store_module.ISSUER).write_bytes(damaged)
        assert joiner.load_issuer() is None
    joiner.load()


# --- revocations and invitations ------------------------------------------------------------

def test_revocations_round_trip(ca_store: IdentityStore) -> None:
    identity = ca_store.load()
    log = ca_store.load_revocations().append(identity.authority, node_id_for(generate_key().public_key()),
                                             "stolen", now=5.0)
    ca_store.save_revocations(log)
    assert ca_store.load_revocations() == log


def test_a_forged_revocation_file_is_corrupt(ca_store: IdentityStore) -> None:
    stranger = MeshAuthority.create("stranger", NOW)
    forged = RevocationLog().append(stranger, node_id_for(generate_key().public_key()), "x", now=1.0)
    (ca_store.folder / "revocations.log").write_bytes(encode_entries(forged.entries))
    with pytest.raises(IdentityCorrupt, match="revocations.log.*not signed.*peers will send"):
        ca_store.load_revocations()


def test_invitations_round_trip(ca_store: IdentityStore) -> None:
    assert ca_store.load_invitations() == Invitations()
    book = Invitations().issue(new_secret(), now=10.0)
    ca_store.save_invitations(book)
    assert ca_store.load_invitations() == book
    assert mode(ca_store.folder / "invites.json") == 0o600


# --- permissions ----------------------------------------------------------------------------

@pytest.mark.parametrize("name, loose, fix", [
    ("node.key", 0o644, "chmod 600"), ("node.key", 0o640, "chmod 600"), ("ca.key", 0o604, "chmod 600"),
    (".", 0o755, "chmod 700"), (".", 0o750, "chmod 700"),
])
def test_loose_permissions_are_refused_with_the_fix(ca_store: IdentityStore, name: str, loose: int, fix: str) -> None:
    path = ca_store.folder / name if name != "." else ca_store.folder
    os.chmod(path, loose)
    with pytest.raises(IdentityPermissionError) as caught:
        ca_store.load()
    message = str(caught.value)
    shown = str(path) if name != "." else str(ca_store.folder)
    assert f"{fix} {shown}" in message and f"{loose:04o}" in message
    with pytest.raises(IdentityPermissionError):
        ca_store.pending_key()
    os.chmod(path, 0o600 if name != "." else 0o700)
    ca_store.load()


# --- atomic writes --------------------------------------------------------------------------

def test_writes_leave_no_temp_files(ca_store: IdentityStore, tmp_path: Path) -> None:
    ca_store.save_invitations(Invitations().issue(new_secret(), now=1.0))
    ca_store.save_revocations(ca_store.load_revocations())
    join(ca_store, tmp_path / "box")
    for folder in (ca_store.folder, tmp_path / "box"):
        assert not [p.name for p in folder.iterdir() if p.name.startswith(".") or p.name.endswith(".tmp")]


def test_a_failed_write_keeps_the_old_file(ca_store: IdentityStore, monkeypatch: pytest.MonkeyPatch) -> None:
    old = Invitations().issue(new_secret(), now=1.0)
    ca_store.save_invitations(old)

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store_module.os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space"):
        ca_store.save_invitations(old.issue(new_secret(), now=2.0))
    monkeypatch.undo()
    assert ca_store.load_invitations() == old
    assert sorted(p.name for p in ca_store.folder.iterdir()) == sorted(MEMBER_FILES | {"ca.key", "invites.json"})


# --- damage ---------------------------------------------------------------------------------

def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("name", ["node.key", "node.crt", "ca.crt", "ca.key", "node.json"])
def test_truncated_files_are_corrupt_and_named(ca_store: IdentityStore, name: str) -> None:
    _truncate(ca_store.folder / name)
    with pytest.raises(IdentityCorrupt) as caught:
        ca_store.load()
    assert str(ca_store.folder / name) in str(caught.value)
    assert "orc-node init" in str(caught.value)


@pytest.mark.parametrize("name", ["node.crt", "ca.crt"])
def test_missing_files_are_corrupt(ca_store: IdentityStore, name: str) -> None:
    (ca_store.folder / name).unlink()
    with pytest.raises(IdentityCorrupt, match=f"{name}.*missing"):
        ca_store.load()


def test_swapped_in_files_from_another_node_are_corrupt(ca_store: IdentityStore, tmp_path: Path) -> None:
    other = IdentityStore(tmp_path / "other")
    other.init_mesh("other", NOW)
    (ca_store.folder / "ca.crt").write_bytes((other.folder / "ca.crt").read_bytes())
    with pytest.raises(IdentityCorrupt, match="ca.crt.*CA of mesh"):
        ca_store.load()
    (ca_store.folder / "ca.crt").write_bytes((other.folder / "node.crt").read_bytes())
    with pytest.raises(IdentityCorrupt, match="ca.crt.*not a self-signed CA"):
        ca_store.load()


def test_a_key_that_does_not_match_node_json_is_corrupt(ca_store: IdentityStore, tmp_path: Path) -> None:
    other = IdentityStore(tmp_path / "other")
    other.pending_key()
    (ca_store.folder / "node.key").write_bytes((other.folder / "node.key").read_bytes())
    with pytest.raises(IdentityCorrupt, match="node.json.*names node"):
        ca_store.load()


@pytest.mark.parametrize("text", [b"", b"[]", b'{"name": "x"}', b'{"name": "a b", "node_id": "x", "mesh_id": "y"}'])
def test_bad_node_json_is_corrupt(ca_store: IdentityStore, text: bytes) -> None:
    (ca_store.folder / "node.json").write_bytes(text)
    with pytest.raises(IdentityCorrupt, match="node.json"):
        ca_store.load()


def test_damaged_side_files_name_their_fix(ca_store: IdentityStore) -> None:
    (ca_store.folder / "invites.json").write_bytes(b"{not json")
    with pytest.raises(IdentityCorrupt, match="invites.json.*orc-node invite"):
        ca_store.load_invitations()
    authority = ca_store.load().authority
    log = RevocationLog()
    for _ in range(2):
        log = log.append(authority, node_id_for(generate_key().public_key()), "gone", now=1.0)
    ca_store.save_revocations(log)
    _truncate(ca_store.folder / "revocations.log")
    with pytest.raises(IdentityCorrupt, match="revocations.log is damaged.*peers will send"):
        ca_store.load_revocations()


def test_identity_is_frozen(ca_store: IdentityStore) -> None:
    identity = ca_store.load()
    with pytest.raises(AttributeError):
        identity.name = "x"  # type: ignore[misc]
    assert replace(identity, name="x").name == "x"
