"""Static peer addresses and the `discovery:` config section."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orc.node.links.errors import BadDiscoveryConfig, BadPeerAddress, DiscoveryError
from orc.node.links.static import (
    MAX_STATIC_PEERS,
    Advertise,
    DiscoveryConfig,
    Endpoint,
    discovery_config,
    parse_endpoint,
)


@pytest.mark.parametrize(("text", "expected"), [
    ("192.168.1.20:7733", Endpoint("192.168.1.20", 7733)),
    ("192.168.1.20", Endpoint("192.168.1.20", 7733)),
    ("  10.0.0.1:1  ", Endpoint("10.0.0.1", 1)),
    ("pi.local:8000", Endpoint("pi.local", 8000)),
    ("PI.Local.:65535", Endpoint("pi.local", 65535)),
    ("localhost", Endpoint("localhost", 7733)),
    ("[fd00::20]:7733", Endpoint("fd00::20", 7733)),
    ("[FD00:0::20]", Endpoint("fd00::20", 7733)),
    ("[fe80::1%eth0]:9", Endpoint("fe80::1%eth0", 9)),
    ("host-1.example.org:443", Endpoint("host-1.example.org", 443)),
])
def test_peer_addresses_parse(text: str, expected: Endpoint) -> None:
    assert parse_endpoint(text) == expected


@pytest.mark.parametrize(("text", "hint"), [
    ("", "HOST:PORT"),
    ("   ", "HOST:PORT"),
    ("::1", "brackets"),
    ("fd00::20:7733", "brackets"),
    ("host:0", "1 to 65535"),
    ("host:65536", "1 to 65535"),
    ("host:abc", "1 to 65535"),
    ("host:+80", "1 to 65535"),
    ("host:", "1 to 65535"),
    ("host:٨٠", "1 to 65535"),
    (":7733", "host is missing"),
    ("[::1", "missing ']'"),
    ("[::1]7733", "':PORT'"),
    ("[nothex::g]:1", "not a valid IPv6"),
    ("[10.0.0.1]:1", "not a valid IPv6"),
    ("bad_host:1", "valid host name"),
    ("-lead.example:1", "valid host name"),
    ("a..b:1", "valid host name"),
    ("1.2.3.999:1", "not a valid IPv4"),
    ("1.2.3:1", "not a valid IPv4"),
    ("x" * 400, "HOST:PORT"),
    ("a" * 64 + ".com", "valid host name"),
])
def test_bad_peer_addresses_give_a_clear_error(text: str, hint: str) -> None:
    with pytest.raises(BadPeerAddress) as raised:
        parse_endpoint(text)
    assert hint in str(raised.value)
    assert isinstance(raised.value, DiscoveryError)
    assert "HOST:PORT" in (BadPeerAddress.__doc__ or "")  # the user-facing explanation


def test_non_text_is_a_bad_address_not_a_crash() -> None:
    with pytest.raises(BadPeerAddress):
        parse_endpoint(7733)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.ip_addresses(), st.from_regex(r"[a-z]([a-z0-9-]{0,10}[a-z0-9])?(\.[a-z]{1,8}){0,3}", fullmatch=True)),
       st.integers(1, 65535))
def test_formatting_and_parsing_round_trip(host, port: int) -> None:
    endpoint = Endpoint(str(host) if isinstance(host, (ipaddress.IPv4Address, ipaddress.IPv6Address)) else host, port)
    assert parse_endpoint(str(endpoint)) == endpoint


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=80))
def test_arbitrary_text_parses_or_raises_bad_peer_address(text: str) -> None:
    try:
        endpoint = parse_endpoint(text)
    except BadPeerAddress:
        return
    assert 1 <= endpoint.port <= 65535
    assert parse_endpoint(str(endpoint)) == endpoint


# ---- the config section ----

def test_a_full_section_is_read() -> None:
    root = {"profiles": {}, "discovery": {
        "peers": ["10.0.0.5:7733", "pi.local", "[fd00::5]:9000", "10.0.0.5"], "advertise": "Minimal", "mdns": False}}
    assert discovery_config(root) == DiscoveryConfig(
        peers=(Endpoint("10.0.0.5", 7733), Endpoint("pi.local", 7733), Endpoint("fd00::5", 9000)),
        advertise=Advertise.MINIMAL,
        mdns=False,
    )


def test_defaults_when_missing() -> None:
    assert discovery_config(None) == DiscoveryConfig()
    assert discovery_config({"other": 1}) == DiscoveryConfig(peers=(), advertise=Advertise.FULL, mdns=True)
    assert discovery_config({"discovery": None}) == DiscoveryConfig()


def test_every_problem_is_listed_at_once() -> None:
    section = {"peers": ["ok:1", "bad host", "[::1"], "advertise": "everything", "mdns": "yes", "mdsn": True}
    with pytest.raises(BadDiscoveryConfig) as raised:
        discovery_config({"discovery": section}, "config.yaml")
    message = str(raised.value)
    assert message.startswith("config.yaml: invalid `discovery:` section")
    for expected in ("unknown key(s) mdsn", "peers[1]", "peers[2]", "advertise: must be `full` or `minimal`",
                     "mdns: must be true or false"):
        assert expected in message
    assert "peers[0]" not in message


@pytest.mark.parametrize(("root", "expected"), [
    ([1, 2], "must be a YAML mapping"),
    ({"discovery": ["a"]}, "`discovery:` must be a mapping"),
    ({"discovery": {"peers": "10.0.0.1:7733"}}, "peers: must be a list"),
    ({"discovery": {"peers": {"a": 1}}}, "peers: must be a list"),
    ({"discovery": {"peers": [7733]}}, "peers[0]"),
    ({"discovery": {"peers": [f"10.0.0.{i % 250}:{i + 1}" for i in range(MAX_STATIC_PEERS + 1)]}}, "at most 64"),
    ({"discovery": {"mdns": 1}}, "mdns: must be true or false"),
    ({"discovery": {"advertise": None}}, "advertise:"),
])
def test_bad_sections_are_refused(root: object, expected: str) -> None:
    with pytest.raises(BadDiscoveryConfig) as raised:
        discovery_config(root)
    assert expected in str(raised.value)
