"""The default home on each platform, from platformdirs' answer for that platform (its classes
for Linux, macOS and Windows, given a home folder and environment), never by running there."""

from __future__ import annotations

from pathlib import Path

import pytest
from platformdirs.macos import MacOS
from platformdirs.unix import Unix
from platformdirs.windows import Windows

from orc.node.home import Home, default_home


@pytest.fixture
def user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "ada"
    folder.mkdir()
    monkeypatch.setenv("HOME", str(folder))
    for kind in ("CONFIG", "DATA", "STATE"):
        monkeypatch.delenv(f"XDG_{kind}_HOME", raising=False)
    return folder


def test_linux_keeps_the_xdg_folders_earlier_orc_used(user: Path) -> None:
    home = default_home("linux", Unix, user)
    assert home == Home(user / ".config" / "orc", user / ".local" / "share" / "orc", user / ".local" / "state" / "orc")


def test_linux_follows_the_xdg_variables(user: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for kind in ("CONFIG", "DATA", "STATE"):
        monkeypatch.setenv(f"XDG_{kind}_HOME", str(tmp_path / kind.lower()))
    home = default_home("linux", Unix, user)
    assert home == Home(tmp_path / "config" / "orc", tmp_path / "data" / "orc", tmp_path / "state" / "orc")


def test_linux_ignores_an_empty_or_relative_xdg_variable(user: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The XDG spec says a relative path is invalid and to be ignored: it would make the home
    # depend on the folder orc was started from.
    monkeypatch.setenv("XDG_CONFIG_HOME", "")
    monkeypatch.setenv("XDG_DATA_HOME", "relative/data")
    home = default_home("linux", Unix, user)
    assert (home.config_dir, home.data_dir) == (user / ".config" / "orc", user / ".local" / "share" / "orc")


def test_macos_puts_everything_in_application_support(user: Path) -> None:
    root = user / "Library" / "Application Support" / "orc"
    assert default_home("darwin", MacOS, user) == Home(root, root, root)


def test_a_mac_keeps_its_existing_home_even_where_xdg_variables_point_elsewhere(
        user: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    # A new Mac follows platformdirs, which reads XDG_*_HOME on macOS as well...
    assert default_home("darwin", MacOS, user).config_dir == tmp_path / "xdg-config" / "orc"
    # ...but one where an earlier orc made its home keeps it: its identity and journals are there.
    earlier = user / "Library" / "Application Support" / "orc"
    earlier.mkdir(parents=True)
    assert default_home("darwin", MacOS, user) == Home(earlier, earlier, earlier)
    # The rule is macOS's alone: on Linux such a folder means nothing.
    assert default_home("linux", Unix, user).config_dir == tmp_path / "xdg-config" / "orc"


def test_windows_puts_everything_in_local_app_data(user: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # platformdirs' documented override of the folder Windows would report for LOCALAPPDATA.
    monkeypatch.setenv("WIN_PD_OVERRIDE_LOCAL_APPDATA", r"C:\Users\ada\AppData\Local")
    monkeypatch.setenv("WIN_PD_OVERRIDE_APPDATA", r"C:\Users\ada\AppData\Roaming")
    home = default_home("win32", Windows, user)
    assert home.config_dir == home.data_dir == home.state_dir
    assert str(home.config_dir).startswith(r"C:\Users\ada\AppData\Local")
    assert str(home.config_dir).endswith("orc")  # not roaming: the identity stays on this machine


def test_locate_without_home_or_orc_home_uses_this_platforms_answer(  # on Linux, where the suite runs
user: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ORC_HOME", raising=False)
    assert Home.locate() == Home(user / ".config" / "orc", user / ".local" / "share" / "orc",
                                 user / ".local" / "state" / "orc")
