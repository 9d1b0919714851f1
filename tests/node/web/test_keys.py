"""The API keys store: secrets returned once and kept only as hashes, checked cheaply, failing closed."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
from orc.node.home import UnsafeFile
from orc.node.web import keys as keys_module
from orc.node.web.keys import (
    MAX_SECRET_CHARS,
    ApiKeyError,
    ApiKeys,
    ApiKeysInvalid,
    BadApiKeyName,
    TooManyApiKeys,
    UnknownApiKey,
)

NOW = 1_767_225_600.75


def counting_entropy():
    """Distinct, reproducible 'random' bytes: sha256 of a counter."""
    drawn = 0

    def entropy(n: int) -> bytes:
        nonlocal drawn
        drawn += 1
        return hashlib.sha256(f"draw {drawn}".encode()).digest()[:n]

    return entropy


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "home" / "api-keys.json"


@pytest.fixture
def store(path: Path) -> ApiKeys:
    return ApiKeys(path, clock=lambda: NOW, entropy=counting_entropy())


def test_a_created_key_verifies_until_it_is_revoked(store: ApiKeys) -> None:
    laptop, laptop_secret = store.create("laptop")
    phone, phone_secret = store.create("phone")
    assert store.verify(laptop_secret) == laptop and store.verify(phone_secret) == phone
    assert store.list() == (laptop, phone) and store.exists()

    assert store.revoke("laptop") == laptop  # by name
    assert store.verify(laptop_secret) is None and store.verify(phone_secret) == phone
    assert store.revoke(phone.id) == phone  # by id
    assert store.verify(phone_secret) is None and store.list() == () and not store.exists()
    with pytest.raises(UnknownApiKey, match="'phone'.*api-key list"):
        store.revoke("phone")


def test_a_key_has_a_public_id_a_hint_and_a_256_bit_secret(store: ApiKeys) -> None:
    key, secret = store.create("laptop")
    assert re.fullmatch(r"orc_[A-Za-z0-9_-]{43}", secret)
    assert re.fullmatch(r"key_[0-9a-f]{8}", key.id)
    assert key.hint == secret[4:12] and key.name == "laptop" and key.created_at == int(NOW)
    other_key, other = ApiKeys(store.path.with_name("other.json")).create()  # the real os.urandom
    assert other != secret and other_key.id != key.id


def test_anything_but_a_stored_secret_is_refused(store: ApiKeys) -> None:
    _, secret = store.create("laptop")
    forged = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    for candidate in (forged, secret[4:], secret + "x", "", "orc_", "Bearer " + secret, secret.upper(),
                      "orc_" + "é" * 43, "orc_" + "a" * (MAX_SECRET_CHARS * 4)):
        assert store.verify(candidate) is None, candidate


def test_an_overlong_or_non_ascii_secret_is_not_even_hashed(store: ApiKeys, monkeypatch: pytest.MonkeyPatch) -> None:
    store.create("laptop")
    hashed: list[str] = []
    real = keys_module.secret_digest
    monkeypatch.setattr(keys_module, "secret_digest", lambda s: hashed.append(s) or real(s))
    assert store.verify("orc_" + "a" * MAX_SECRET_CHARS) is None
    assert store.verify("orc_\u00e9t\u00e9") is None
    assert hashed == []
    store.verify("orc_" + "a" * 43)
    assert len(hashed) == 1


def test_names_default_are_checked_and_unique(store: ApiKeys) -> None:
    first, _ = store.create(None)
    second, _ = store.create(None)
    assert (first.name, second.name) == ("key-1", "key-2")
    store.revoke("key-1")
    assert store.create(None)[0].name == "key-3"  # key-2 exists: the next free number
    assert store.create("a" * 64)[0].name == "a" * 64
    for bad in ("", "a" * 65, "has space", "slash/name", "émoji", "key_0123abcd"):
        with pytest.raises(BadApiKeyName):
            store.create(bad)
    with pytest.raises(BadApiKeyName, match="exists already"):
        store.create("key-2")
    assert [k.name for k in store.list()] == ["key-2", "key-3", "a" * 64]


def test_the_secret_is_never_stored_only_its_hash(store: ApiKeys, path: Path) -> None:
    _, secret = store.create("laptop")
    raw = path.read_bytes()
    assert secret.encode() not in raw and secret[4:].encode() not in raw
    assert secret[4:12].encode() in raw  # the hint, and nothing more of it
    assert hashlib.sha256(secret.encode()).hexdigest().encode() in raw
    data = json.loads(raw)
    assert data["version"] == 1 and set(data["keys"][0]) == {"id", "name", "created_at", "hint", "sha256"}


def test_the_file_and_its_lock_are_private(store: ApiKeys, path: Path) -> None:
    store.create("laptop")
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.with_name("api-keys.json.lock").stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700  # made by the store when missing
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


CREATOR = """
import sys, time
from pathlib import Path
from orc.node.web.keys import ApiKeys
path, tag, count, go = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
while not go.exists():
    time.sleep(0.001)
store = ApiKeys(path)
for n in range(count):
    store.create(f"{tag}-{n}")
"""


def test_creates_from_two_processes_at_once_all_land(path: Path, tmp_path: Path) -> None:
    go = tmp_path / "go"
    workers = [subprocess.Popen([sys.executable, "-c", CREATOR, str(path), tag, "25", str(go)])
               for tag in ("a", "b")]
    go.touch()  # both start creating at the same moment
    assert [w.wait(timeout=120) for w in workers] == [0, 0]
    names = {k.name for k in ApiKeys(path).list()}
    assert names == {f"{tag}-{n}" for tag in "ab" for n in range(25)}


DAMAGED = {
    "not json": b"{not json",
    "not utf-8": b"\xff\xfe",
    "a list": b"[]",
    "another version": b'{"version": 2, "keys": []}',
    "a missing field": b'{"version": 1, "keys": [{"id": "key_0123abcd", "name": "x", "created_at": 1, '
                       b'"hint": "abcdefgh"}]}',
    "a short hash": b'{"version": 1, "keys": [{"id": "key_0123abcd", "name": "x", "created_at": 1, '
                    b'"hint": "abcdefgh", "sha256": "abc"}]}',
    "a bad name": b'{"version": 1, "keys": [{"id": "key_0123abcd", "name": "a b", "created_at": 1, '
                  b'"hint": "abcdefgh", "sha256": "' + b"0" * 64 + b'"}]}',
}


@pytest.mark.parametrize("content", DAMAGED.values(), ids=DAMAGED.keys())
def test_a_damaged_file_refuses_every_key_and_the_commands_say_why(
        store: ApiKeys, path: Path, content: bytes, caplog: pytest.LogCaptureFixture) -> None:
    _, secret = store.create("laptop")
    daemon = ApiKeys(path)
    assert daemon.verify(secret) is not None
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="orc.node.web.keys"):
        assert daemon.verify(secret) is None and daemon.verify(secret) is None and not daemon.exists()
    assert len(caplog.records) == 1 and str(path) in caplog.records[0].getMessage()  # once, not per request
    for command in (store.list, lambda: store.create("phone"), lambda: store.revoke("laptop")):
        with pytest.raises(ApiKeysInvalid, match=re.escape(str(path)) + ".*damaged.*move it away"):
            command()


def test_a_repaired_file_is_used_again(store: ApiKeys, path: Path) -> None:
    _, secret = store.create("laptop")
    good = path.read_bytes()
    daemon = ApiKeys(path)
    path.write_bytes(b"{}")
    assert daemon.verify(secret) is None
    path.write_bytes(good)
    assert daemon.verify(secret) is not None


def test_duplicate_ids_in_the_file_are_damage(store: ApiKeys, path: Path) -> None:
    store.create("laptop")
    data = json.loads(path.read_text())
    data["keys"].append({**data["keys"][0], "name": "copy"})
    path.write_text(json.dumps(data))
    with pytest.raises(ApiKeysInvalid, match="repeats"):
        store.list()


def test_a_link_planted_in_place_of_the_file_is_not_followed(store: ApiKeys, path: Path, tmp_path: Path) -> None:
    _, secret = store.create("laptop")
    elsewhere = tmp_path / "elsewhere.json"
    path.rename(elsewhere)
    path.symlink_to(elsewhere)
    assert ApiKeys(path).verify(secret) is None
    with pytest.raises(UnsafeFile):
        store.list()


def test_no_file_means_no_keys(store: ApiKeys, path: Path) -> None:
    assert store.verify("orc_" + "a" * 43) is None and store.list() == () and not store.exists()
    assert not path.exists()  # looking creates nothing


def test_the_number_of_keys_is_capped(store: ApiKeys, path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keys_module, "MAX_KEYS", 3)
    for n in range(3):
        store.create(f"k{n}")
    with pytest.raises(TooManyApiKeys, match="revoke"):
        store.create("k3")
    assert isinstance(TooManyApiKeys(), ApiKeyError)
    monkeypatch.setattr(keys_module, "MAX_KEYS", 2)  # a file holding more than the cap is damaged
    with pytest.raises(ApiKeysInvalid, match="more than the 2"):
        store.list()


def test_a_huge_file_is_not_read(store: ApiKeys, path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, secret = store.create("laptop")
    monkeypatch.setattr(keys_module, "MAX_FILE_BYTES", path.stat().st_size - 1)
    with pytest.raises(ApiKeysInvalid, match="larger than"):
        store.list()
    assert ApiKeys(path).verify(secret) is None


def test_the_daemon_sees_changes_by_the_command_line_without_a_restart(
        path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    daemon, command_line = ApiKeys(path), ApiKeys(path)
    _, first = command_line.create("laptop")
    assert daemon.verify(first) is not None
    _, second = command_line.create("phone")
    assert daemon.verify(second) is not None  # created after the daemon's last read
    command_line.revoke("laptop")
    assert daemon.verify(first) is None  # revoked: refused from the next request

    opened: list[Path] = []
    real = keys_module.open_private
    monkeypatch.setattr(keys_module, "open_private", lambda p, *a: opened.append(p) or real(p, *a))
    for _ in range(5):
        assert daemon.verify(second) is not None
    assert opened == []  # unchanged: not read again
    command_line.create("tablet")
    opened.clear()
    daemon.verify(second)
    daemon.verify(second)
    assert opened == [path]  # changed: read once more


def test_a_same_size_rewrite_is_noticed(path: Path) -> None:
    """A revoke and a create can leave a file of the same size: the inode still tells them apart."""
    daemon, command_line = ApiKeys(path, clock=lambda: NOW), ApiKeys(path, clock=lambda: NOW)
    _, old = command_line.create("aaaa")
    assert daemon.verify(old) is not None
    size = path.stat().st_size
    command_line.revoke("aaaa")
    _, new = command_line.create("bbbb")
    assert path.stat().st_size == size
    assert daemon.verify(old) is None and daemon.verify(new) is not None


def test_ids_that_clash_are_drawn_again(path: Path) -> None:
    draws = iter([b"\x00" * 4, b"s" * 32, b"\x00" * 4, b"\x00" * 4, b"\x01" * 4, b"t" * 32])
    store = ApiKeys(path, entropy=lambda n: next(draws))
    first, _ = store.create("one")
    second, _ = store.create("two")
    assert (first.id, second.id) == ("key_00000000", "key_01010101")


def test_an_unreadable_place_fails_closed_and_is_logged_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "not-a-folder").write_text("")
    daemon = ApiKeys(tmp_path / "not-a-folder" / "api-keys.json")  # stat fails, but not with "no such file"
    with caplog.at_level(logging.WARNING, logger="orc.node.web.keys"):
        assert daemon.verify("orc_" + "a" * 43) is None and not daemon.exists()
    assert len(caplog.records) == 1
