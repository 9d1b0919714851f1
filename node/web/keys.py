"""The HTTP API's keys: made once, stored hashed, checked on every request.

A key is `orc_` and 43 characters of URL-safe base64: 32 random bytes, 256 bits. `create`
returns it once; the file keeps only its SHA-256, its public id (`key_` and 8 hex digits), the
name the user gave it, when it was made, and a hint (the 8 characters after `orc_`) to recognise
it by in `orc-node api-key list`. One file, `Home.api_keys_file`:

    {"version": 1, "keys": [{"id": "key_1a2b3c4d", "name": "laptop", "created_at": 1767225600,
                             "hint": "Xq3vM0aT", "sha256": "<64 hex digits>"}]}

Why a fast hash and not bcrypt or scrypt: a slow hash protects secrets people choose, few enough
to try them all against a stolen file. A key here is 256 random bits; no number of SHA-256 guesses
finds one, and a slow hash would only make every request slower.

The command line changes the file (`create`, `revoke`: read, change, write under an exclusive
`flock` of a lock file beside it, so two commands at once both land, then an atomic rename); the
daemon's `verify` re-reads it whenever its (mtime_ns, size, inode) changed, so a key created or
revoked counts from the next request, with no restart. A damaged file fails closed: `verify`
finds no key in it (and says so once in the log), the commands raise `ApiKeysInvalid`.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NewType

from orc.node.home import open_private, private_folder

log = logging.getLogger(__name__)

ApiKeyId = NewType("ApiKeyId", str)

SECRET_PREFIX = "orc_"
SECRET_BYTES = 32  # 256 bits: out of reach of guessing, whatever the hash costs
HINT_CHARS = 8
# A bearer value longer than any key, or not ASCII, is refused before it is hashed: a client
# cannot make each request hash megabytes of header.
MAX_SECRET_CHARS = 256
# Every request compares against each stored key; the cap keeps that loop (and the file a
# request may have to re-read) small whatever the file holds.
MAX_KEYS = 1000
MAX_FILE_BYTES = 1 << 20  # far above 1000 keys (~200 KB); a planted huge file is not read
NAME_CHARS = 64
_NAME = re.compile(rf"[A-Za-z0-9._-]{{1,{NAME_CHARS}}}")
_ID = re.compile(r"key_[0-9a-f]{8}")
_HINT = re.compile(rf"[A-Za-z0-9_-]{{{HINT_CHARS}}}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_FIELDS = frozenset({"id", "name", "created_at", "hint", "sha256"})
FILE_VERSION = 1


class ApiKeyError(Exception):
    """The node's API keys cannot be read or changed as asked."""


class UnknownApiKey(ApiKeyError):
    """No API key has this id or name; 'orc-node api-key list' shows them."""


class ApiKeysInvalid(ApiKeyError):
    """The API keys file is damaged: fix it, or move it away and create new keys."""


class BadApiKeyName(ApiKeyError):
    """An API key's name is 1-64 letters, digits, '.', '_' or '-', and no other key has it."""


class TooManyApiKeys(ApiKeyError):
    """This node holds as many API keys as orc allows; revoke some first."""


@dataclass(frozen=True)
class ApiKey:
    """What is known of a key without its secret."""

    id: ApiKeyId
    name: str
    created_at: int  # unix seconds
    hint: str  # the secret's first characters after `orc_`: enough to recognise it, far too few to use it


@dataclass(frozen=True)
class _Stored:
    key: ApiKey
    digest: bytes  # SHA-256 of the whole secret, prefix included


_Signature = tuple[int, int, int]  # (mtime_ns, size, inode): a rewrite changes at least the inode


def check_name(name: str) -> None:
    """Raise BadApiKeyName unless `name` can name a key."""
    if not _NAME.fullmatch(name):
        raise BadApiKeyName(f"API key name {name!r}: use 1-{NAME_CHARS} letters, digits, '.', '_' or '-'")
    if _ID.fullmatch(name):  # `revoke` takes an id or a name: the two must never be confused
        raise BadApiKeyName(f"API key name {name!r} looks like a key id; choose another name")


def secret_digest(secret: str) -> bytes:
    """The SHA-256 a key's secret is stored as (`secret` must be ASCII)."""
    return hashlib.sha256(secret.encode("ascii")).digest()


class ApiKeys:
    """The keys in one file: changed by the command line, checked by the daemon on each request.

    `clock` gives unix seconds (a key's `created_at`), `entropy(n)` n random bytes (ids and
    secrets); tests pass their own. `verify` and `exists` cost one `stat` while the file is
    unchanged and a read of at most MAX_FILE_BYTES when it changed: cheap enough to call on the
    event loop. The commands block on the lock while another command writes: call them from
    the command line or a thread.
    """

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time,
                 entropy: Callable[[int], bytes] = os.urandom) -> None:
        self.path = path
        self._lock_path = path.with_name(path.name + ".lock")
        self._clock = clock
        self._entropy = entropy
        # What `verify` last read, by the signature of the file it came from (None: no file).
        # One tuple, replaced whole: a reader never sees a signature with another file's keys.
        self._view: tuple[_Signature | None, tuple[_Stored, ...]] | None = None
        self._warned: object = None  # the trouble last logged, so a broken file is logged once

    # ---- the commands: read, change, write under the lock

    def create(self, name: str | None = None) -> tuple[ApiKey, str]:
        """A new key and its secret. The secret is returned here once and stored nowhere.

        Raises BadApiKeyName (bad or taken name), TooManyApiKeys, ApiKeysInvalid.
        """
        if name is not None:
            check_name(name)
        with self._locked() as stored:
            if len(stored) >= MAX_KEYS:
                raise TooManyApiKeys(f"{self.path} holds {len(stored)} API keys, the most orc allows; "
                                     "revoke unused ones with 'orc-node api-key revoke ID'")
            names = {s.key.name for s in stored}
            if name is None:
                name = _default_name(names, len(stored))
            elif name in names:
                taken = next(s.key.id for s in stored if s.key.name == name)
                raise BadApiKeyName(f"an API key named {name!r} exists already ({taken}); choose another "
                                    "--name, or revoke that key first")
            key_id = self._new_id({s.key.id for s in stored})
            body = base64.urlsafe_b64encode(self._entropy(SECRET_BYTES)).decode("ascii").rstrip("=")
            secret = SECRET_PREFIX + body
            key = ApiKey(key_id, name, int(self._clock()), body[:HINT_CHARS])
            self._write((*stored, _Stored(key, secret_digest(secret))))
        return key, secret

    def list(self) -> tuple[ApiKey, ...]:
        """Every key, oldest first. Raises ApiKeysInvalid if the file is damaged."""
        return tuple(s.key for s in self._load()[1])

    def revoke(self, id_or_name: str) -> ApiKey:
        """Remove the key with this id (or else this name); it stops working at the next request.

        Raises UnknownApiKey, ApiKeysInvalid.
        """
        with self._locked() as stored:
            found = (next((s for s in stored if s.key.id == id_or_name), None)
                     or next((s for s in stored if s.key.name == id_or_name), None))
            if found is None:
                raise UnknownApiKey(f"no API key has the id or name {id_or_name!r}; "
                                    "'orc-node api-key list' shows them")
            self._write(tuple(s for s in stored if s is not found))
        return found.key

    # ---- the daemon: cheap, never raises, fails closed

    def verify(self, secret: str) -> ApiKey | None:
        """The key whose secret this is, or None (unknown, malformed, or the file is unusable).

        Compares with every stored key in constant time each. Re-reads the file only when it
        changed since the last call, so changes by the command line count from the next request.
        """
        if len(secret) > MAX_SECRET_CHARS or not secret.isascii() or not secret.startswith(SECRET_PREFIX):
            return None
        digest = secret_digest(secret)
        found: ApiKey | None = None
        for stored in self._current():
            if hmac.compare_digest(stored.digest, digest):  # no early exit: time does not say which key
                found = stored.key
        return found

    def exists(self) -> bool:
        """Whether any valid key is stored (a damaged file holds none, as for `verify`)."""
        return bool(self._current())

    # ---- the file

    def _current(self) -> tuple[_Stored, ...]:
        """The keys of the file as it is now, read again only if its signature changed."""
        try:
            signature: _Signature | None = _signature(os.stat(self.path))
        except FileNotFoundError:
            signature = None
        except OSError as error:
            return self._unusable(f"stat {error.errno}", error)
        view = self._view
        if view is not None and view[0] == signature:
            return view[1]
        try:
            loaded = self._load()
        except (ApiKeyError, OSError) as error:  # fail closed: no request gets in on a broken file
            self._view = (signature, ())  # not read again until it changes
            return self._unusable(signature, error)
        self._view, self._warned = loaded, None
        return loaded[1]

    def _unusable(self, trouble: object, error: Exception) -> tuple[_Stored, ...]:
        """No keys; the reason logged once for each `trouble` (a version of the file, a stat error)."""
        if trouble != self._warned:
            log.warning("no API key is accepted until this is fixed: %s", error)
            self._warned = trouble
        return ()

    def _load(self) -> tuple[_Signature | None, tuple[_Stored, ...]]:
        """The file's signature and keys, read through one descriptor so the two agree."""
        try:
            fd = open_private(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None, ()
        with os.fdopen(fd, "rb") as file:
            status = os.fstat(fd)
            raw = file.read(MAX_FILE_BYTES + 1)
        if len(raw) > MAX_FILE_BYTES:
            raise self._damaged(f"it is larger than {MAX_FILE_BYTES} bytes")
        try:
            return _signature(status), _parse(raw)
        except _Damage as damage:
            raise self._damaged(str(damage)) from None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[tuple[_Stored, ...]]:
        """The keys, read while holding the lock file exclusively until the block ends."""
        private_folder(self.path.parent)
        # A lock file beside the keys, not the keys file itself: each write replaces that file,
        # and a lock on a replaced inode would exclude nobody.
        fd = open_private(self._lock_path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield self._load()[1]
        finally:
            os.close(fd)  # releases the flock

    def _write(self, stored: tuple[_Stored, ...]) -> None:
        """Replace the file atomically; the temp file is 0600 from its creation (mkstemp)."""
        records = [{"id": s.key.id, "name": s.key.name, "created_at": s.key.created_at, "hint": s.key.hint,
                    "sha256": s.digest.hex()} for s in stored]
        text = json.dumps({"version": FILE_VERSION, "keys": records}, indent=2) + "\n"
        folder = self.path.parent
        fd, temp = tempfile.mkstemp(dir=folder, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="ascii") as file:
                file.write(text)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, self.path)  # a reader sees the old file or the new one, never half of one
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        with contextlib.suppress(OSError):  # make the rename itself durable where folders can be synced
            folder_fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
            try:
                os.fsync(folder_fd)
            finally:
                os.close(folder_fd)

    def _new_id(self, taken: set[str]) -> ApiKeyId:
        for _ in range(16):  # 1000 keys among 2^32 ids: a clash is rare, sixteen in a row means bad entropy
            candidate = "key_" + self._entropy(4).hex()
            if candidate not in taken:
                return ApiKeyId(candidate)
        raise ApiKeyError("could not draw an unused API key id; is the system's random source working?")

    def _damaged(self, detail: str) -> ApiKeysInvalid:
        return ApiKeysInvalid(f"{self.path} is damaged: {detail}; fix it by hand, or move it away and create "
                              "new keys with 'orc-node api-key create' (clients then need the new keys)")


class _Damage(Exception):
    """What is wrong inside the file (ApiKeys names the file and the fix)."""


def _signature(status: os.stat_result) -> _Signature:
    return status.st_mtime_ns, status.st_size, status.st_ino


def _default_name(taken: set[str], count: int) -> str:
    number = count + 1
    while f"key-{number}" in taken:
        number += 1
    return f"key-{number}"


def _parse(raw: bytes) -> tuple[_Stored, ...]:
    """The keys of a version 1 file, every field checked; raises _Damage saying what is wrong."""
    try:
        data = json.loads(raw)
    except ValueError as error:  # UnicodeDecodeError included
        raise _Damage(f"it is not valid JSON ({error})") from None
    if not isinstance(data, dict) or data.get("version") != FILE_VERSION or not isinstance(data.get("keys"), list):
        raise _Damage(f'it is not an API keys file (expected {{"version": {FILE_VERSION}, "keys": [...]}})')
    records = data["keys"]
    if len(records) > MAX_KEYS:
        raise _Damage(f"it holds {len(records)} keys, more than the {MAX_KEYS} orc allows")
    stored: list[_Stored] = []
    ids: set[str] = set()
    names: set[str] = set()
    for number, record in enumerate(records, 1):
        where = f"key {number}"
        if not isinstance(record, dict) or set(record) != _FIELDS:
            raise _Damage(f"{where} needs exactly the fields {', '.join(sorted(_FIELDS))}")
        key_id, name, created_at = record["id"], record["name"], record["created_at"]
        hint, digest = record["hint"], record["sha256"]
        if not (isinstance(key_id, str) and _ID.fullmatch(key_id)):
            raise _Damage(f"{where} has a bad id (key_ and 8 hex digits)")
        if not isinstance(name, str):
            raise _Damage(f"{where} ({key_id}) has a name that is not text")
        try:
            check_name(name)
        except BadApiKeyName as error:
            raise _Damage(f"{where} ({key_id}): {error}") from None
        if isinstance(created_at, bool) or not isinstance(created_at, int) or created_at < 0:
            raise _Damage(f"{where} ({key_id}) has a bad created_at (unix seconds)")
        if not (isinstance(hint, str) and _HINT.fullmatch(hint)):
            raise _Damage(f"{where} ({key_id}) has a bad hint ({HINT_CHARS} URL-safe base64 characters)")
        if not (isinstance(digest, str) and _SHA256.fullmatch(digest)):
            raise _Damage(f"{where} ({key_id}) has a bad sha256 (64 lowercase hex digits)")
        if key_id in ids or name in names:
            raise _Damage(f"{where} repeats the id or name of an earlier key ({key_id}, {name})")
        ids.add(key_id)
        names.add(name)
        stored.append(_Stored(ApiKey(ApiKeyId(key_id), name, created_at, hint), bytes.fromhex(digest)))
    return tuple(stored)
