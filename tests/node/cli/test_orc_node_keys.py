"""`orc-node api-key create|list|revoke`: the commands as a user and a script run them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from orc.node.cli.errors import exit_code_for
from orc.node.web.keys import ApiKeys, ApiKeysInvalid, BadApiKeyName, TooManyApiKeys, UnknownApiKey
from support import CliResult, assert_one_clean_error

SECRET = re.compile(r"orc_[A-Za-z0-9_-]{43}")


def api_key(home: Path, *args: str, via_flag: bool = False) -> CliResult:
    env = {k: v for k, v in os.environ.items() if k != "ORC_HOME"}
    home_args: tuple[str, ...] = ()
    if via_flag:
        home_args = ("--home", str(home))
    else:
        env["ORC_HOME"] = str(home)
    done = subprocess.run([sys.executable, "-m", "orc.node.cli.orc_node", "api-key", *args, *home_args],
                          capture_output=True, text=True, env=env, timeout=120)
    return CliResult(done.returncode, done.stdout, done.stderr)


def test_create_prints_the_key_alone_and_says_once_how_to_use_it(home: Path) -> None:
    done = api_key(home, "create", "--name", "laptop")
    assert done.code == 0, done.stderr
    assert SECRET.fullmatch(done.stdout.rstrip("\n")) and done.stdout.count("\n") == 1  # `$(...)` captures it
    assert "shown this once" in done.stderr and "Authorization: Bearer" in done.stderr
    assert "OPENAI_API_KEY" in done.stderr and done.stdout.strip() not in done.stderr
    key = ApiKeys(home / "api-keys.json").verify(done.stdout.strip())
    assert key is not None and key.name == "laptop"
    assert done.stdout.strip() not in (home / "api-keys.json").read_text()


def test_create_json_then_list_shows_everything_but_the_key(home: Path) -> None:
    created = api_key(home, "create", "--json", via_flag=True).json()
    assert set(created) == {"id", "name", "created_at", "hint", "key"} and created["name"] == "key-1"
    assert SECRET.fullmatch(created["key"]) and created["hint"] == created["key"][4:12]

    listed = api_key(home, "list", "--json")
    assert listed.code == 0 and json.loads(listed.stdout) == [{k: v for k, v in created.items() if k != "key"}]
    text = api_key(home, "list")
    assert text.code == 0 and created["key"] not in text.stdout
    header, row = text.stdout.splitlines()
    assert header.split() == ["ID", "NAME", "CREATED", "KEY"]
    assert row.split()[:2] == [created["id"], "key-1"] and f"orc_{created['hint']}…" in row


def test_an_empty_list_is_not_an_error(home: Path) -> None:
    text = api_key(home, "list")
    assert text.code == 0 and text.stdout == "" and "orc-node api-key create" in text.stderr
    assert api_key(home, "list", "--json").json() == []


def test_revoke_by_name_or_id_and_an_unknown_key_is_exit_2(home: Path) -> None:
    laptop = api_key(home, "create", "--name", "laptop", "--json").json()
    phone = api_key(home, "create", "--name", "phone", "--json").json()
    done = api_key(home, "revoke", "laptop")
    assert done.code == 0 and laptop["id"] in done.stdout and "refused" in done.stdout
    assert api_key(home, "revoke", phone["id"], via_flag=True).code == 0
    store = ApiKeys(home / "api-keys.json")
    assert store.verify(laptop["key"]) is None and store.verify(phone["key"]) is None
    again = api_key(home, "revoke", "laptop")
    assert_one_clean_error(again, 2)
    assert "'laptop'" in again.stderr and "api-key list" in again.stderr


@pytest.mark.parametrize("name,words", [("has space", "letters, digits"), ("a" * 65, "1-64"),
                                        ("key_0123abcd", "looks like a key id")])
def test_a_bad_name_is_exit_2(home: Path, name: str, words: str) -> None:
    done = api_key(home, "create", "--name", name)
    assert_one_clean_error(done, 2)
    assert words in done.stderr and done.stdout == ""


def test_a_taken_name_is_exit_2_and_creates_nothing(home: Path) -> None:
    assert api_key(home, "create", "--name", "laptop").code == 0
    done = api_key(home, "create", "--name", "laptop")
    assert_one_clean_error(done, 2)
    assert "exists already" in done.stderr and done.stdout == ""
    assert len(api_key(home, "list", "--json").json()) == 1


def test_a_damaged_file_is_exit_2_naming_the_file_and_the_fix(home: Path) -> None:
    (home / "api-keys.json").write_text("{broken")
    for args in (("list",), ("create",), ("revoke", "laptop")):
        done = api_key(home, *args)
        assert_one_clean_error(done, 2)
        assert str(home / "api-keys.json") in done.stderr and "move it away" in done.stderr


def test_help_teaches_with_examples(home: Path) -> None:
    group = api_key(home, "--help")
    assert group.code == 0 and all(c in group.stdout for c in ("create", "list", "revoke"))
    create = api_key(home, "create", "--help")
    assert create.code == 0 and "OPENAI_API_KEY=$(orc-node api-key create" in create.stdout


def test_the_key_errors_are_invalid_input() -> None:
    for error in (UnknownApiKey("x"), ApiKeysInvalid("x"), BadApiKeyName("x"), TooManyApiKeys("x")):
        assert exit_code_for(error) == 2
