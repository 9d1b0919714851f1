"""Join tokens and the invitation book (pure: time is passed in)."""

from __future__ import annotations

import hashlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orc.node.trust import tokens
from orc.node.trust.errors import IdentityCorrupt, InvalidJoinToken
from orc.node.trust.tokens import (
    DEFAULT_TTL,
    Accepted,
    Invitations,
    JoinToken,
    Refused,
    RefusalReason,
    new_secret,
)

PIN = "abcdefghijklmnopqrstuvwxyz"
SECRET = "234567abcdefghijklmnopqrst"


def test_secrets_are_26_base32_characters_and_differ() -> None:
    made = {new_secret() for _ in range(50)}
    assert len(made) == 50
    assert all(len(s) == 26 and set(s) <= set("abcdefghijklmnopqrstuvwxyz234567") for s in made)


def test_token_text_round_trip() -> None:
    token = JoinToken(PIN, SECRET)
    assert token.text == f"orc1-{PIN}-{SECRET}"
    assert JoinToken.parse(token.text) == token
    assert SECRET not in repr(token)


def test_parse_ignores_whitespace_and_case() -> None:
    assert JoinToken.parse(f"  \tORC1-{PIN.upper()}-{SECRET.upper()}\n") == JoinToken(PIN, SECRET)


@pytest.mark.parametrize("text", [
    "", "orc1", f"orc2-{PIN}-{SECRET}", f"orc1-{PIN}-{SECRET}x", f"orc1-{PIN}-{SECRET[:-1]}",
    f"orc1-{PIN}{SECRET}", f"orc1_{PIN}_{SECRET}", f"orc1-{PIN}-{SECRET[:-1]}1",  # '1' is not base32
    f"orc1-{PIN[:-1]}-{SECRET}-", f"orc1 -{PIN}-{SECRET}", f"orc1-{PIN}-{SECRET[:-1]}é",
])
def test_bad_tokens_are_refused_with_the_expected_shape(text: str) -> None:
    with pytest.raises(InvalidJoinToken) as caught:
        JoinToken.parse(text)
    message = str(caught.value)
    assert "orc1-<26 letters/digits>-<26 letters/digits>" in message
    assert "orc-node invite" in message


def test_a_bad_token_is_not_echoed() -> None:
    almost = f"orc1-{PIN}-{SECRET}zz"
    with pytest.raises(InvalidJoinToken) as caught:
        JoinToken.parse(almost)
    assert SECRET[:6] not in str(caught.value) and PIN[:6] not in str(caught.value)


@settings(max_examples=400)
@given(st.one_of(st.text(), st.text(alphabet="orc1-abcdefghijklmnopqrstuvwxyz234567 \n", max_size=70),
                 st.binary(), st.none(), st.integers()))
def test_parse_fuzz_raises_only_invalid_join_token(text) -> None:
    try:
        token = JoinToken.parse(text)
    except InvalidJoinToken:
        return
    assert JoinToken.parse(token.text) == token


def test_tokens_cannot_be_built_with_bad_parts() -> None:
    with pytest.raises(InvalidJoinToken):
        JoinToken("short", SECRET)
    with pytest.raises(InvalidJoinToken):
        JoinToken(PIN, SECRET.upper())


# --- invitations ----------------------------------------------------------------------------

def test_only_the_secret_hash_is_kept() -> None:
    book = Invitations().issue(SECRET, now=100.0, ttl=60.0)
    assert book.pending == ((hashlib.sha256(SECRET.encode()).hexdigest(), 160.0),)
    assert SECRET not in book.to_json()


def test_an_invitation_is_single_use() -> None:
    book = Invitations().issue(SECRET, now=100.0)
    assert book.is_open(100.0)
    book, outcome = book.redeem(SECRET, now=200.0)
    assert outcome == Accepted()
    assert not book.is_open(200.0)
    book, outcome = book.redeem(SECRET, now=201.0)
    assert outcome == Refused(RefusalReason.UNKNOWN)
    assert book.failed_tries == 1


def test_invitations_expire() -> None:
    book = Invitations().issue(SECRET, now=100.0, ttl=60.0)
    assert book.is_open(159.9) and book.closes_at(159.9) == 160.0
    assert not book.is_open(160.0) and book.closes_at(160.0) is None
    after, outcome = book.redeem(SECRET, now=160.0)
    assert outcome == Refused(RefusalReason.EXPIRED)
    assert after.pending == () and after.failed_tries == 1
    assert Invitations().issue(SECRET, now=0.0).closes_at(0.0) == DEFAULT_TTL


def test_each_invitation_has_its_own_secret() -> None:
    other = new_secret()
    book = Invitations().issue(SECRET, now=0.0).issue(other, now=1.0)
    book, outcome = book.redeem(other, now=2.0)
    assert outcome == Accepted() and book.is_open(2.0)
    book, outcome = book.redeem(SECRET, now=3.0)
    assert outcome == Accepted() and not book.is_open(3.0)


def test_three_wrong_secrets_burn_every_invitation() -> None:
    book = Invitations().issue(SECRET, now=0.0).issue(new_secret(), now=0.0)
    for attempt in range(1, 4):
        book, outcome = book.redeem(new_secret(), now=10.0)
        assert outcome == Refused(RefusalReason.UNKNOWN)
        assert book.failed_tries == attempt
    assert book.pending == () and not book.is_open(10.0)
    # Even the right secret is refused now, and trying does not change anything.
    again, outcome = book.redeem(SECRET, now=11.0)
    assert outcome == Refused(RefusalReason.BURNED) and again == book
    # A new invitation starts over.
    fresh = new_secret()
    book = book.issue(fresh, now=20.0)
    assert book.failed_tries == 0 and book.is_open(20.0)
    assert book.redeem(fresh, now=21.0)[1] == Accepted()


def test_two_wrong_secrets_do_not_burn() -> None:
    book = Invitations().issue(SECRET, now=0.0)
    for _ in range(2):
        book, _ = book.redeem("x", now=1.0)
    assert book.is_open(1.0)
    assert book.redeem(SECRET, now=1.0)[1] == Accepted()


def test_secrets_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[str, str]] = []

    def recording(a, b):
        compared.append((a, b))
        return a == b

    monkeypatch.setattr(tokens.hmac, "compare_digest", recording)
    secrets_ = [new_secret() for _ in range(3)]
    book = Invitations()
    for s in secrets_:
        book = book.issue(s, now=0.0)
    _, outcome = book.redeem(secrets_[0], now=1.0)
    assert outcome == Accepted()
    # Every pending entry is compared (no early exit), always as digests, never raw secrets.
    assert len(compared) == 3
    assert all(offered == hashlib.sha256(secrets_[0].encode()).hexdigest() for _, offered in compared)


def test_issue_drops_expired_and_caps_pending() -> None:
    book = Invitations().issue(SECRET, now=0.0, ttl=10.0).issue(new_secret(), now=20.0, ttl=10.0)
    assert len(book.pending) == 1
    for i in range(tokens.MAX_PENDING + 5):
        book = book.issue(new_secret(), now=30.0 + i)
    assert len(book.pending) == tokens.MAX_PENDING


def test_issue_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        Invitations().issue("short", now=0.0)
    with pytest.raises(ValueError):
        Invitations().issue(SECRET, now=0.0, ttl=0.0)


def test_json_round_trip() -> None:
    book = Invitations().issue(SECRET, now=5.0)
    book, _ = book.redeem("wrong", now=6.0)
    assert Invitations.from_json(book.to_json()) == book
    assert Invitations.from_json(Invitations().to_json()) == Invitations()


@pytest.mark.parametrize("text", [
    "", "{", "[]", '{"pending": []}', '{"pending": [], "failed_tries": -1}',
    '{"pending": [["abc", 1.0]], "failed_tries": 0}', '{"pending": [["' + "0" * 64 + '", "soon"]], "failed_tries": 0}',
    '{"pending": {}, "failed_tries": 0}', '{"pending": [], "failed_tries": true}',
    json.dumps({"pending": [["0" * 64, 1.0]] * 65, "failed_tries": 0}),
])
def test_bad_json_is_corrupt(text: str) -> None:
    with pytest.raises(IdentityCorrupt):
        Invitations.from_json(text)
