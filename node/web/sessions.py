"""The dashboard's browser sessions: a browser cannot put `Authorization` on a page load or an
EventSource, so it trades a key for a cookie once (`POST /dashboard/login`).

A session maps an opaque random token (the cookie) to the key it was opened with, in memory
only: a daemon restart ends every session. The key is checked again with the key store on every
request (by the guard), so revoking a key ends its sessions at once; a session also ends after
SESSION_LIFETIME_S, or at logout. Pure but for the entropy and the clock, both passed in.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Callable

COOKIE = "orc_session"
SESSION_LIFETIME_S = 12 * 3600
# Sessions held at once, the oldest ended first past it: each login of a key holder adds one,
# and a script logging in in a loop must not grow the daemon's memory. Ending the oldest (rather
# than refusing logins) keeps the dashboard usable for whoever logs in now.
MAX_SESSIONS = 1024
# Longest cookie value looked at: a token is 43 characters; anything longer is junk.
MAX_TOKEN_CHARS = 128


class Sessions:
    """Tokens to keys, each for SESSION_LIFETIME_S. `clock()`: seconds (monotonic is fine)."""

    def __init__(self, clock: Callable[[], float], entropy: Callable[[int], bytes] = os.urandom,
                 limit: int = MAX_SESSIONS, lifetime_s: float = SESSION_LIFETIME_S) -> None:
        self._clock = clock
        self._entropy = entropy
        self._limit = limit
        self._lifetime_s = lifetime_s
        # sha256(token) -> (key, expires at), oldest first. Kept by digest: the table never holds
        # a usable cookie, and a lookup compares digests, not the tokens a client sends.
        self._sessions: OrderedDict[bytes, tuple[str, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def open(self, key: str) -> str:
        """A new session for `key` (already verified by the caller); returns its token."""
        now = self._clock()
        self._expire(now)
        token = self._entropy(32).hex()
        self._sessions[_digest(token)] = (key, now + self._lifetime_s)
        while len(self._sessions) > self._limit:
            self._sessions.popitem(last=False)
        return token

    def key(self, token: str | None) -> str | None:
        """The key of the live session `token`, or None (no such session, or it expired)."""
        if not token or len(token) > MAX_TOKEN_CHARS:
            return None
        digest = _digest(token)
        found = self._sessions.get(digest)
        if found is None:
            return None
        key, expires_at = found
        if self._clock() >= expires_at:
            del self._sessions[digest]
            return None
        return key

    def close(self, token: str | None) -> None:
        if token and len(token) <= MAX_TOKEN_CHARS:
            self._sessions.pop(_digest(token), None)

    def _expire(self, now: float) -> None:
        # Sessions are in the order they were opened, with one lifetime: the expired ones lead.
        while self._sessions:
            _, (_, expires_at) = next(iter(self._sessions.items()))
            if expires_at > now:
                return
            self._sessions.popitem(last=False)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", errors="replace")).digest()
