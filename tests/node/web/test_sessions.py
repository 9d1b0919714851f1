"""The dashboard's browser sessions, on a clock the test moves."""

from __future__ import annotations

import itertools

from orc.node.web.sessions import MAX_TOKEN_CHARS, Sessions


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def counting_entropy():
    counter = itertools.count()
    return lambda n: next(counter).to_bytes(n, "big")


def test_a_session_gives_its_key_until_it_ends() -> None:
    clock = Clock()
    sessions = Sessions(clock, counting_entropy(), lifetime_s=60)
    token = sessions.open("orc_key")
    assert len(token) == 64 and sessions.key(token) == "orc_key"
    clock.now += 59
    assert sessions.key(token) == "orc_key"
    clock.now += 1
    assert sessions.key(token) is None and len(sessions) == 0


def test_logout_ends_a_session_and_unknown_or_junk_tokens_have_none() -> None:
    sessions = Sessions(Clock(), counting_entropy())
    token = sessions.open("orc_key")
    sessions.close(token)
    assert sessions.key(token) is None
    assert sessions.key(None) is None and sessions.key("") is None
    assert sessions.key("x" * (MAX_TOKEN_CHARS + 1)) is None
    sessions.close("x" * 10_000)  # nothing to end, and no error


def test_past_the_cap_the_oldest_sessions_end() -> None:
    clock = Clock()
    sessions = Sessions(clock, counting_entropy(), limit=3)
    tokens = []
    for i in range(5):
        clock.now += 1
        tokens.append(sessions.open(f"orc_{i}"))
    assert len(sessions) == 3
    assert [sessions.key(t) for t in tokens] == [None, None, "orc_2", "orc_3", "orc_4"]


def test_expired_sessions_are_forgotten_when_new_ones_open() -> None:
    clock = Clock()
    sessions = Sessions(clock, counting_entropy(), lifetime_s=10)
    for i in range(3):
        sessions.open(f"orc_{i}")
    clock.now += 11
    sessions.open("orc_new")
    assert len(sessions) == 1


def test_tokens_are_not_guessable_from_each_other() -> None:
    sessions = Sessions(Clock())
    assert len({sessions.open("orc_key") for _ in range(50)}) == 50
