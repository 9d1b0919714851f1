"""Join tokens and the inviter's book of pending invitations (a pure core: `now` comes in).

A token reads `orc1-<pin>-<secret>`. The pin (26 base32 characters of the CA key's SPKI hash)
lets the joiner check it reached the right mesh before sending anything; the secret (26 random
base32 characters, 130 bits) proves to the CA holder that the joiner was invited. The book keeps
only SHA-256 hashes of secrets; each secret works once, until it expires, and three wrong
secrets in a row burn every pending invitation.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import math
import secrets
from dataclasses import dataclass, replace
from typing import Union

from orc.node.trust.errors import IdentityCorrupt, InvalidJoinToken
from orc.node.trust.ids import CA_PIN_LENGTH

TOKEN_PREFIX = "orc1"
SECRET_LENGTH = 26
DEFAULT_TTL = 15 * 60.0
# Three wrong secrets burn every pending invitation: an attacker on the LAN gets three guesses
# (each 1 in 2^130) and then the join server closes.
MAX_FAILED_TRIES = 3
# `orc-node invite` is local, but each pending invitation keeps the join server open; a script
# looping over invite must not grow the book (and invites.json) without bound.
MAX_PENDING = 64

_BASE32 = "abcdefghijklmnopqrstuvwxyz234567"
_TOKEN_LENGTH = len(TOKEN_PREFIX) + 1 + CA_PIN_LENGTH + 1 + SECRET_LENGTH
_SHAPE = f"{TOKEN_PREFIX}-<{CA_PIN_LENGTH} letters/digits>-<{SECRET_LENGTH} letters/digits>"


def new_secret() -> str:
    """A fresh invitation secret: 26 base32 characters from `secrets` (130 bits)."""
    return "".join(secrets.choice(_BASE32) for _ in range(SECRET_LENGTH))


def _is_base32(text: str, length: int) -> bool:
    return len(text) == length and all(c in _BASE32 for c in text)


@dataclass(frozen=True)
class JoinToken:
    """What `orc-node invite` prints and `orc-node start --join` takes."""

    pin: str
    secret: str

    def __post_init__(self) -> None:
        if not (_is_base32(self.pin, CA_PIN_LENGTH) and _is_base32(self.secret, SECRET_LENGTH)):
            raise InvalidJoinToken(f"a join token needs a {CA_PIN_LENGTH}-character pin and a "
                                   f"{SECRET_LENGTH}-character secret of lowercase base32")

    def __repr__(self) -> str:  # the secret is a credential; keep it out of logs
        return f"JoinToken(pin={self.pin!r}, secret='…')"

    @property
    def text(self) -> str:
        return f"{TOKEN_PREFIX}-{self.pin}-{self.secret}"

    @classmethod
    def parse(cls, text: str) -> JoinToken:
        """Read a pasted token (surrounding whitespace and letter case do not matter)."""
        if not isinstance(text, str):
            raise InvalidJoinToken(f"a join token is text shaped like {_SHAPE}")
        cleaned = text.strip().lower()
        parts = cleaned.split("-")
        if (len(cleaned) == _TOKEN_LENGTH and len(parts) == 3 and parts[0] == TOKEN_PREFIX
                and _is_base32(parts[1], CA_PIN_LENGTH) and _is_base32(parts[2], SECRET_LENGTH)):
            return cls(parts[1], parts[2])
        # Show only the first few characters: the rest may be (most of) a real secret.
        shown = ascii(cleaned[:5])[1:-1]
        raise InvalidJoinToken(
            f"that is not a join token (it starts '{shown}…', {len(cleaned)} characters); expected "
            f"{_SHAPE}, {_TOKEN_LENGTH} characters in all: copy the whole line `orc-node invite` printed")


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


class RefusalReason(enum.Enum):
    EXPIRED = "expired"  # the secret was right but came too late
    UNKNOWN = "unknown"  # no pending invitation has this secret (wrong, used, or never issued)
    BURNED = "burned"  # too many wrong secrets: every pending invitation was withdrawn


@dataclass(frozen=True)
class Accepted:
    """The secret matched a live invitation, which is now used up."""


@dataclass(frozen=True)
class Refused:
    reason: RefusalReason


Redemption = Union[Accepted, Refused]


@dataclass(frozen=True)
class Invitations:
    """Pending invitations as (sha256 hex of the secret, expiry as unix seconds), and wrong tries since the last invite."""

    pending: tuple[tuple[str, float], ...] = ()
    failed_tries: int = 0

    def issue(self, secret: str, now: float, ttl: float = DEFAULT_TTL) -> Invitations:
        """Add an invitation for `secret` valid until now + ttl; a new invite also forgives past wrong tries."""
        if not _is_base32(secret, SECRET_LENGTH):
            raise ValueError("an invitation secret is 26 lowercase base32 characters (see new_secret)")
        if not (math.isfinite(ttl) and ttl > 0):
            raise ValueError(f"an invitation must live a positive time, got {ttl}")
        live = tuple(entry for entry in self.pending if entry[1] > now)
        pending = (live + ((_digest(secret), now + ttl),))[-MAX_PENDING:]
        return Invitations(pending, 0)

    def redeem(self, secret: str, now: float) -> tuple[Invitations, Redemption]:
        """Try `secret` at `now`: Accepted uses the invitation up; anything else counts as a wrong try."""
        if self.failed_tries >= MAX_FAILED_TRIES:
            return self, Refused(RefusalReason.BURNED)
        # Hash first so the comparisons take the same time whatever the secret; compare against
        # every entry (no early exit) so timing does not tell which or how many matched.
        offered = _digest(secret if isinstance(secret, str) else "")
        match = None
        for index, (stored, _) in enumerate(self.pending):
            if hmac.compare_digest(stored, offered):
                match = index
        if match is not None and self.pending[match][1] > now:
            return replace(self, pending=self.pending[:match] + self.pending[match + 1:]), Accepted()
        reason = RefusalReason.UNKNOWN if match is None else RefusalReason.EXPIRED
        pending = self.pending if match is None else self.pending[:match] + self.pending[match + 1:]
        failed = self.failed_tries + 1
        if failed >= MAX_FAILED_TRIES:
            pending = ()
        return Invitations(pending, failed), Refused(reason)

    def is_open(self, now: float) -> bool:
        """Whether any invitation is still live (the join server should be listening)."""
        return self.failed_tries < MAX_FAILED_TRIES and any(expires > now for _, expires in self.pending)

    def closes_at(self, now: float) -> float | None:
        """When the last live invitation expires, or None if none is live."""
        if not self.is_open(now):
            return None
        return max(expires for _, expires in self.pending)

    def to_json(self) -> str:
        return json.dumps({"pending": [list(entry) for entry in self.pending], "failed_tries": self.failed_tries})

    @classmethod
    def from_json(cls, text: str | bytes) -> Invitations:
        """Parse `to_json` output; raise IdentityCorrupt for anything else."""
        try:
            data = json.loads(text)
        except (ValueError, TypeError) as error:
            raise IdentityCorrupt(f"invitations are not valid JSON ({error})") from None
        if not isinstance(data, dict) or set(data) != {"pending", "failed_tries"}:
            raise IdentityCorrupt("invitations must be an object with 'pending' and 'failed_tries'")
        pending, failed = data["pending"], data["failed_tries"]
        if type(failed) is not int or failed < 0 or not isinstance(pending, list) or len(pending) > MAX_PENDING:
            raise IdentityCorrupt("invitations have a bad 'failed_tries' or 'pending' value")
        entries = []
        for entry in pending:
            if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)
                    and len(entry[0]) == 64 and all(c in "0123456789abcdef" for c in entry[0])
                    and type(entry[1]) in (int, float) and math.isfinite(entry[1])):
                raise IdentityCorrupt("an invitation entry is not [sha256 hex, expiry]")
            entries.append((entry[0], float(entry[1])))
        return cls(tuple(entries), failed)
