"""config.yaml read once: every section parsed from one mapping, one error naming the file,
the key and the fix, and the daemon refusing a bad file before it opens anything."""

from __future__ import annotations

from pathlib import Path

import pytest
from orc.node.config import (
    NodeConfig,
    NodeConfigInvalid,
    parse_node_config,
    read_node_config,
)
from orc.node.links.static import Advertise, DiscoveryConfig, Endpoint
from orc.node.models.runtimes.extra_buffers import ExtraBuffers, LlamaCppConfig
from orc.node.worker.admission_config import AdmissionConfig
from orc.scheduler.profiles import ConfigInvalid

FULL = """\
model_profiles:
  fast: {model: smollm2-135m-instruct}
discovery:
  peers: ["10.0.0.5:7733", pi.local]
  advertise: minimal
  mdns: false
admission:
  slots: 2
  queue: 0
llama_cpp:
  extra_buffers: off
"""


def test_every_section_comes_from_one_read(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(FULL)
    assert read_node_config(path) == NodeConfig(
        discovery=DiscoveryConfig((Endpoint("10.0.0.5", 7733), Endpoint("pi.local", 7733)), Advertise.MINIMAL, False),
        admission=AdmissionConfig(slots=2, queue=0),
        llama_cpp=LlamaCppConfig(ExtraBuffers.OFF),  # YAML 1.1's bare `off` is False: read as off
    )


@pytest.mark.parametrize("text", ["", "# only a comment\n", "model_aliases: {}\n"])
def test_no_file_an_empty_one_or_other_keys_mean_the_defaults(tmp_path: Path, text: str) -> None:
    assert read_node_config(tmp_path / "absent.yaml") == NodeConfig()
    path = tmp_path / "config.yaml"
    path.write_text(text)
    assert read_node_config(path) == NodeConfig()


def test_the_problems_of_every_section_come_in_one_error() -> None:
    root = {"discovery": {"mdns": "yes"}, "admission": {"slots": 99}, "llama_cpp": {"extra_buffers": "fast"}}
    with pytest.raises(NodeConfigInvalid) as caught:
        parse_node_config(root, "/h/config.yaml")
    lines = str(caught.value).splitlines()
    assert lines[0].startswith("/h/config.yaml: invalid `discovery:` section")
    assert any("mdns: must be true or false" in line for line in lines)
    assert any(line.startswith("/h/config.yaml: admission: slots: must be a whole number from 1 to 16")
               for line in lines)
    assert lines[-1].startswith("/h/config.yaml: llama_cpp.extra_buffers must be auto, on or off, not 'fast'")
    assert isinstance(caught.value, ConfigInvalid)  # exit 2 at the command line


@pytest.mark.parametrize(("content", "words"), [
    (b"discovery: [unclosed\n", "invalid YAML"),
    (b"\xff\xfe not text", "cannot read"),
    (b"- a list\n- not a mapping\n", "must be a YAML mapping"),
    # The file is hand-written: a megabyte of it is a mistake, not a setting.
    (b"#" * (1 << 20) + b"\n", "larger than"),
])
def test_an_unusable_file_is_one_error_naming_it(tmp_path: Path, content: bytes, words: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(content)
    with pytest.raises(NodeConfigInvalid, match=words) as caught:
        read_node_config(path)
    assert str(path) in str(caught.value)


def test_a_folder_where_the_file_should_be_is_one_error(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.mkdir()
    with pytest.raises(NodeConfigInvalid, match="cannot read"):
        read_node_config(path)


@pytest.mark.parametrize("text", ["discovery:\n  advertise: loud\n", "admission:\n  queue: -1\n",
                                  "llama_cpp:\n  extra_buffers: fast\n"])
def test_the_daemon_refuses_a_bad_section_when_built_before_it_opens_anything(tmp_path: Path, text: str) -> None:
    from orc.node.daemon.root import Daemon, DaemonError, DaemonOptions, control_socket
    from orc.node.home import Home

    (tmp_path / "home").mkdir()
    home = Home.locate(tmp_path / "home")
    home.config_file.write_text(text)
    with pytest.raises(DaemonError, match=str(home.config_file)):
        Daemon(home, DaemonOptions(mdns=False))
    assert not control_socket(home).exists()


def test_the_api_section_is_read_whole() -> None:
    config = parse_node_config({"api": {
        "listen": "0.0.0.0:8080", "enabled": True, "tls_certificate": "/etc/orc/cert.pem", "tls_key": "/etc/orc/key.pem",
        "allow_keyless_loopback": True, "metrics_keyless_loopback": True, "max_body_bytes": 4096,
        "max_concurrent": 2, "requests_per_minute": 10, "queue_timeout_seconds": 5}}, "config.yaml").api
    assert config.listen == Endpoint("0.0.0.0", 8080) and not config.loopback_only
    assert config.tls_certificate == Path("/etc/orc/cert.pem") and config.tls_key == Path("/etc/orc/key.pem")
    assert config.allow_keyless_loopback and config.metrics_keyless_loopback
    assert (config.max_body_bytes, config.max_concurrent, config.requests_per_minute, config.queue_timeout_s) == \
        (4096, 2, 10, 5.0)


def test_the_api_defaults_to_loopback_port_7780_with_keys() -> None:
    config = parse_node_config(None, "config.yaml").api
    assert config.enabled and config.listen == Endpoint("127.0.0.1", 7780) and config.loopback_only
    assert not config.allow_keyless_loopback and config.tls_certificate is None
    assert parse_node_config({"api": {"listen": "[::1]"}}, "c").api.loopback_only


@pytest.mark.parametrize("section,words", [
    ({"listen": "nowhere:port"}, "listen"),
    ({"listen": 7780}, "listen"),
    ({"tls_certificate": "/c.pem"}, "go together"),
    ({"allow_keyless_loopback": "yes"}, "allow_keyless_loopback"),
    ({"max_body_bytes": 10}, "max_body_bytes"),
    ({"max_concurrent": 0}, "max_concurrent"),
    ({"requests_per_minute": True}, "requests_per_minute"),
    ({"queue_timeout_seconds": 99999}, "queue_timeout_seconds"),
    ({"port": 7780}, "unknown key 'port'"),
    ("on", "must be a mapping"),
])
def test_a_bad_api_setting_is_named(section: object, words: str) -> None:
    with pytest.raises(NodeConfigInvalid) as raised:
        parse_node_config({"api": section}, "config.yaml")
    assert "api" in str(raised.value) and words in str(raised.value)
