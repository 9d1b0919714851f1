"""The daemon's flags and config file: bad input is a DaemonError (exit 2), a bug stays a bug."""

from __future__ import annotations

from pathlib import Path

import pytest

from orc.node.daemon import root
from orc.node.daemon.root import DaemonError, DaemonOptions
from orc.node.home import Home


def test_a_bad_peer_or_listen_address_is_invalid_input() -> None:
    with pytest.raises(DaemonError, match="--peer 'pi.local:99999'"):
        root.parse_peer("pi.local:99999")
    with pytest.raises(DaemonError, match="--listen"):
        root._listen_endpoint(DaemonOptions(listen="[fd00::1"))


def test_a_bad_discovery_section_is_invalid_input(tmp_path: Path) -> None:
    home = Home.locate(tmp_path)
    home.config_file.parent.mkdir(parents=True, exist_ok=True)
    home.config_file.write_text("discovery:\n  mdns: sometimes\n", encoding="utf-8")
    with pytest.raises(DaemonError, match="discovery"):
        root._node_config(home)


def test_a_bug_while_reading_flags_is_not_called_invalid_input(monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    def broken(*args: object, **kwargs: object) -> object:
        raise TypeError("a bug")

    monkeypatch.setattr(root, "parse_endpoint", broken)
    monkeypatch.setattr(root, "read_node_config", broken)
    with pytest.raises(TypeError):
        root.parse_peer("pi.local:7733")
    with pytest.raises(TypeError):
        root._listen_endpoint(DaemonOptions(listen="0.0.0.0:7733"))
    with pytest.raises(TypeError):
        root._node_config(Home.locate(tmp_path))
