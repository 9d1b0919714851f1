"""The revocation log: appending, verifying what peers send, and decoding hostile bytes."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from hypothesis import given, settings
from hypothesis import strategies as st

from orc.node.trust.certificates import MeshAuthority, generate_key
from orc.node.trust.errors import InvalidNodeId, RevocationLogInvalid, RevocationRefused
from orc.node.trust.ids import node_id_for
from orc.node.trust.revocation import (
    GENESIS_HASH,
    MAX_ENTRIES_PER_MESSAGE,
    RevocationEntry,
    RevocationLog,
    decode_entries,
    encode_entries,
)

NOW = datetime(2025, 3, 1, tzinfo=timezone.utc)
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


@pytest.fixture(scope="module")
def authority() -> MeshAuthority:
    return MeshAuthority.create("ca", NOW)


@pytest.fixture(scope="module")
def impostor() -> MeshAuthority:
    return MeshAuthority.create("impostor", NOW)


@pytest.fixture(scope="module")
def node_ids() -> list[str]:
    return [node_id_for(generate_key().public_key()) for _ in range(5)]


@pytest.fixture(scope="module")
def full(authority: MeshAuthority, node_ids: list[str]) -> RevocationLog:
    log = RevocationLog()
    for i, node_id in enumerate(node_ids[:4]):
        log = log.append(authority, node_id, f"lost device {i}", now=1000.0 + i)
    return log


def resign(authority: MeshAuthority, entry: RevocationEntry, **changes) -> RevocationEntry:
    draft = replace(entry, **changes)
    return replace(draft, signature=authority.sign(draft.signed_bytes))


def test_empty_log() -> None:
    log = RevocationLog()
    assert log.seq == 0 and log.head_hash == GENESIS_HASH and log.revoked_ids == frozenset()
    assert log.after(0) == ()


def test_append_chains_and_signs(authority: MeshAuthority, full: RevocationLog, node_ids: list[str]) -> None:
    assert full.seq == 4
    assert [e.seq for e in full.entries] == [1, 2, 3, 4]
    assert full.entries[0].prev_hash == GENESIS_HASH
    assert all(later.prev_hash == earlier.hash for earlier, later in zip(full.entries, full.entries[1:]))
    assert full.head_hash == full.entries[-1].hash
    assert full.is_revoked(node_ids[0]) and full.is_revoked(node_ids[3]) and not full.is_revoked(node_ids[4])
    assert full.revoked_ids == frozenset(node_ids[:4])
    assert full.entries[2].reason == "lost device 2" and full.entries[2].revoked_at == 1002.0
    assert full.after(2) == full.entries[2:] and full.after(-5) == full.entries and full.after(9) == ()
    assert RevocationLog.verified(full.entries, authority.public_key) == full


def test_append_refusals(authority: MeshAuthority, full: RevocationLog, node_ids: list[str]) -> None:
    with pytest.raises(InvalidNodeId, match="not a node id"):
        full.append(authority, "NOT-AN-ID", "x", now=1.0)
    with pytest.raises(RevocationRefused, match="already revoked"):
        full.append(authority, node_ids[0], "again", now=1.0)
    with pytest.raises(RevocationRefused, match="characters"):
        full.append(authority, node_ids[4], "x" * 201, now=1.0)


def test_peers_catch_up_in_steps(authority: MeshAuthority, full: RevocationLog) -> None:
    peer = RevocationLog().extend(full.after(0)[:2], authority.public_key)
    assert peer.seq == 2
    peer = peer.extend(full.after(peer.seq), authority.public_key)
    assert peer == full


def test_entries_we_hold_are_ignored(authority: MeshAuthority, full: RevocationLog) -> None:
    assert full.extend(full.entries, authority.public_key) is full
    assert full.extend(full.entries[1:3], authority.public_key) is full
    # Overlap then new: the held part is skipped, the rest applied.
    partial = RevocationLog(full.entries[:2])
    assert partial.extend(full.entries, authority.public_key) == full


def _refused(log: RevocationLog, entries, key, match: str) -> None:
    before = (log.seq, log.entries, log.head_hash)
    with pytest.raises(RevocationLogInvalid, match=match):
        log.extend(entries, key)
    assert (log.seq, log.entries, log.head_hash) == before


def test_forged_signatures_are_refused(authority: MeshAuthority, impostor: MeshAuthority, full: RevocationLog,
                                       node_ids: list[str]) -> None:
    base = RevocationLog(full.entries[:2])
    # Signed by another CA (a perfect chain otherwise).
    forged = resign(impostor, full.entries[2])
    _refused(base, [forged], authority.public_key, "not signed by this mesh's CA")
    # Our CA's signature on different content (the node revoked changed).
    tampered = replace(full.entries[2], node_id=node_ids[4])
    _refused(base, [tampered], authority.public_key, "not signed")
    # A whole log made by an impostor.
    other = RevocationLog().append(impostor, node_ids[0], "x", now=1.0)
    _refused(RevocationLog(), other.entries, authority.public_key, "not signed")


def test_a_batch_is_all_or_nothing(authority: MeshAuthority, impostor: MeshAuthority, full: RevocationLog) -> None:
    forged = resign(impostor, full.entries[3])
    _refused(RevocationLog(), [*full.entries[:3], forged], authority.public_key, "entry 4")


def test_broken_chain_is_refused(authority: MeshAuthority, full: RevocationLog) -> None:
    base = RevocationLog(full.entries[:2])
    # Validly signed by the CA, but its prev_hash points elsewhere.
    rechained = resign(authority, full.entries[2], prev_hash=b"\x01" * 32)
    _refused(base, [rechained], authority.public_key, "does not chain")


def test_gaps_are_refused(authority: MeshAuthority, full: RevocationLog) -> None:
    _refused(RevocationLog(full.entries[:1]), [full.entries[2]], authority.public_key, "gap")
    _refused(RevocationLog(), [full.entries[3]], authority.public_key, "gap")


def test_reordered_entries_are_refused(authority: MeshAuthority, full: RevocationLog) -> None:
    e1, e2, e3, _ = full.entries
    _refused(RevocationLog(), [e2, e1], authority.public_key, "gap")
    _refused(RevocationLog(), [e1, e3, e2], authority.public_key, "gap")


def test_replayed_entries_that_differ_are_refused(authority: MeshAuthority, full: RevocationLog) -> None:
    # A validly signed entry 2 from a fork (same seq, other content) conflicts with ours.
    fork = resign(authority, full.entries[1], reason="a different story")
    _refused(full, [fork], authority.public_key, "differs from the one we hold")
    # An entry signed for one position replayed at another (seq rewritten) is not valid.
    moved = replace(full.entries[0], seq=5, prev_hash=full.head_hash)
    _refused(full, [moved], authority.public_key, "not signed")


def test_a_malleated_signature_does_not_fork_the_log(authority: MeshAuthority, full: RevocationLog) -> None:
    first = full.entries[0]
    r, s = decode_dss_signature(first.signature)
    twin = replace(first, signature=encode_dss_signature(r, P256_ORDER - s))
    assert twin.signature != first.signature
    # A peer that received the tweaked copy still accepts the CA's later entries...
    peer = RevocationLog().extend([twin], authority.public_key)
    assert peer.extend(full.entries[1:], authority.public_key).seq == full.seq
    # ...and a peer holding the original treats the twin as the entry it already has.
    assert full.extend([twin], authority.public_key) is full


def test_a_log_cannot_be_built_broken(full: RevocationLog) -> None:
    with pytest.raises(RevocationLogInvalid):
        RevocationLog((full.entries[1],))
    with pytest.raises(RevocationLogInvalid):
        RevocationLog((full.entries[0], full.entries[2]))


# --- encoding -------------------------------------------------------------------------------

def test_encoding_round_trip(authority: MeshAuthority, full: RevocationLog) -> None:
    assert decode_entries(encode_entries(full.entries)) == full.entries
    assert decode_entries(encode_entries(())) == ()
    with pytest.raises(RevocationLogInvalid, match="gap"):  # a tail alone does not verify from scratch
        RevocationLog.verified(decode_entries(encode_entries(full.after(1))), authority.public_key)


def _row(seq=1, node_id="a" * 20, revoked_at=1.0, reason="r", prev_hash=bytes(32), signature=b"sig"):
    return [seq, node_id, revoked_at, reason, prev_hash, signature]


@pytest.mark.parametrize("payload", [
    {}, "text", 5, [_row()[:5]], [_row() + [1]], [_row(seq=0)], [_row(seq=True)], [_row(seq=-1)], [_row(seq=2**64 - 1)],
    [_row(node_id="short")], [_row(node_id=b"a" * 20)], [_row(revoked_at=1)], [_row(revoked_at=float("nan"))],
    [_row(reason="x" * 201)], [_row(reason=b"bytes")], [_row(prev_hash=bytes(31))], [_row(prev_hash="0" * 32)],
    [_row(signature=b"")], [_row(signature=b"x" * 81)], [{"seq": 1}], [[_row()]],
])
def test_malformed_entries_are_refused(payload) -> None:
    with pytest.raises(RevocationLogInvalid):
        decode_entries(msgpack.packb(payload, use_bin_type=True))


def test_well_formed_rows_decode() -> None:
    assert decode_entries(msgpack.packb([_row()], use_bin_type=True))[0].signature == b"sig"


def test_too_many_entries_are_refused() -> None:
    rows = [_row(seq=i) for i in range(1, MAX_ENTRIES_PER_MESSAGE + 2)]
    data = msgpack.packb(rows, use_bin_type=True)
    with pytest.raises(RevocationLogInvalid):
        decode_entries(data)
    assert len(decode_entries(data, limit=MAX_ENTRIES_PER_MESSAGE + 1)) == MAX_ENTRIES_PER_MESSAGE + 1
    with pytest.raises(RevocationLogInvalid):
        decode_entries(b"\x91" + b"\xa1x" * 10 + b"\x00" * (MAX_ENTRIES_PER_MESSAGE * 1024))


@pytest.mark.parametrize("data", [b"", b"\xc1", b"\x91", b"\x91" * 5000, b"\x90\x90", b"\xdd\xff\xff\xff\xff",
                                  b"\xd6\xff\x00\x00\x00\x01", b"\x81\x01\x02"])
def test_junk_bytes_are_refused(data: bytes) -> None:
    with pytest.raises(RevocationLogInvalid):
        decode_entries(data)


@settings(max_examples=500)
@given(st.binary(max_size=600))
def test_decode_fuzz_bytes(data: bytes) -> None:
    try:
        decode_entries(data)
    except RevocationLogInvalid:
        pass


_msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1) | st.floats()
    | st.text(max_size=30) | st.binary(max_size=40),
    lambda children: st.lists(children, max_size=7) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=40,
)


@settings(max_examples=400)
@given(_msgpack_values)
def test_decode_fuzz_structures(value) -> None:
    try:
        decode_entries(msgpack.packb(value, use_bin_type=True))
    except RevocationLogInvalid:
        pass


@settings(max_examples=300)
@given(st.data())
def test_decode_fuzz_mutations(full: RevocationLog, authority: MeshAuthority, data) -> None:
    encoded = bytearray(encode_entries(full.entries))
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(encoded) - 1))
        encoded[index] = data.draw(st.integers(0, 255))
    try:
        entries = decode_entries(bytes(encoded))
    except RevocationLogInvalid:
        return
    try:
        log = RevocationLog().extend(entries, authority.public_key)
    except RevocationLogInvalid:
        return
    # Whatever survives a mutation must still be a genuine prefix of the CA's log.
    assert [e.signed_bytes for e in log.entries] == [e.signed_bytes for e in full.entries[:log.seq]]
