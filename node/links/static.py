"""Static peers and the `discovery:` settings: what the user writes, parsed and checked.

mDNS does not cross VLANs, VPNs or Wi-Fi client isolation, so peers can be named by address:
`--peer HOST:PORT` (repeatable) or, in the node config file,

    discovery:
      peers: ["192.168.1.20:7733", "pi.local", "[fd00::20]:7733"]
      advertise: full        # or minimal: no hardware summary and no model ids in mDNS TXT
      mdns: true             # false: advertise and browse nothing on the LAN

An address is only a hint: the peer it reaches is identified by its certificate before it is
trusted (see `orc.node.links.peer_table`).
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from orc.node.protocol.description import DEFAULT_PORT
from orc.node.links.errors import BadDiscoveryConfig, BadPeerAddress

__all__ = [
    "MAX_STATIC_PEERS",
    "Advertise",
    "DiscoveryConfig",
    "Endpoint",
    "discovery_config",
    "parse_endpoint",
]

# The peer table keeps every static peer forever and dials each one with backoff; a config file
# listing thousands would mostly measure how fast we can fail to connect. 64 is far beyond any
# home mesh and keeps the dial loop bounded.
MAX_STATIC_PEERS = 64

# RFC 1123 host names: dot-separated labels of letters, digits and inner hyphens.
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_PORT = re.compile(r"[0-9]{1,5}")
_MAX_ADDRESS_TEXT = 300  # longer than any host name (253) plus port; rejects junk before parsing


@dataclass(frozen=True, order=True)
class Endpoint:
    """A host (IPv4, IPv6 or DNS name, lowercased) and a TCP port."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_endpoint(text: str, default_port: int = DEFAULT_PORT) -> Endpoint:
    """`HOST:PORT`, `HOST`, `[IPV6]:PORT` or `[IPV6]` -> Endpoint; raises BadPeerAddress."""
    if not isinstance(text, str):
        raise BadPeerAddress(f"a peer address must be text, not {type(text).__name__}")
    raw = text.strip()
    if not raw or len(raw) > _MAX_ADDRESS_TEXT:
        raise BadPeerAddress(f"{_show(text)} is not a peer address: expected HOST:PORT, e.g. 192.168.1.20:7733")
    if raw.startswith("["):
        host_text, closed, rest = raw[1:].partition("]")
        if not closed:
            raise BadPeerAddress(f"{_show(text)}: missing ']' after the IPv6 address")
        if rest and not rest.startswith(":"):
            raise BadPeerAddress(f"{_show(text)}: expected ':PORT' after ']'")
        host = _ipv6(host_text, text)
        port_text = rest[1:] if rest else None
    elif raw.count(":") > 1:
        raise BadPeerAddress(f"{_show(text)}: write an IPv6 address in brackets, e.g. [fd00::20]:{default_port}")
    else:
        host_text, colon, port_text_or_empty = raw.partition(":")
        host = _host(host_text, text)
        port_text = port_text_or_empty if colon else None
    port = default_port if port_text is None else _port(port_text, text)
    return Endpoint(host, port)


def _host(text: str, whole: str) -> str:
    if not text:
        raise BadPeerAddress(f"{_show(whole)}: the host is missing")
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        pass
    name = text.lower().removesuffix(".")
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise BadPeerAddress(f"{_show(whole)}: {_show(text)} is neither an IPv4 address nor a valid host name")
    if all(label.isdigit() for label in labels):
        raise BadPeerAddress(f"{_show(whole)}: {_show(text)} is not a valid IPv4 address")
    return name


def _ipv6(text: str, whole: str) -> str:
    try:
        return str(ipaddress.IPv6Address(text))
    except ValueError:
        raise BadPeerAddress(f"{_show(whole)}: {_show(text)} is not a valid IPv6 address") from None


def _port(text: str, whole: str) -> int:
    if not _PORT.fullmatch(text) or not 1 <= int(text) <= 65535:
        raise BadPeerAddress(f"{_show(whole)}: the port must be a number from 1 to 65535")
    return int(text)


def _show(text: object) -> str:
    shown = repr(text)
    return shown if len(shown) <= 80 else shown[:77] + "..."


class Advertise(enum.Enum):
    FULL = "full"  # protocol, ids, revocation seq, coarse hardware, loaded model ids
    MINIMAL = "minimal"  # protocol, ids, revocation seq only: nothing about the machine


@dataclass(frozen=True)
class DiscoveryConfig:
    peers: tuple[Endpoint, ...] = ()
    advertise: Advertise = Advertise.FULL
    mdns: bool = True


_KNOWN_KEYS = ("peers", "advertise", "mdns")


def discovery_config(root: object, source: str = "the config file") -> DiscoveryConfig:
    """The `discovery:` section of a parsed node config; raises BadDiscoveryConfig listing every problem."""
    if root is None:
        return DiscoveryConfig()
    if not isinstance(root, Mapping):
        raise BadDiscoveryConfig(f"{source}: the file must be a YAML mapping (key: value lines)")
    section = root.get("discovery")
    if section is None:
        return DiscoveryConfig()
    if not isinstance(section, Mapping):
        raise BadDiscoveryConfig(f"{source}: `discovery:` must be a mapping with peers, advertise and mdns")
    problems: list[str] = []
    unknown = sorted(str(key) for key in section if key not in _KNOWN_KEYS)
    if unknown:
        problems.append(f"unknown key(s) {', '.join(unknown)} (known: {', '.join(_KNOWN_KEYS)})")
    peers = _config_peers(section.get("peers"), problems)
    advertise = Advertise.FULL
    if "advertise" in section:
        value = section["advertise"]
        if isinstance(value, str) and value.strip().lower() in {a.value for a in Advertise}:
            advertise = Advertise(value.strip().lower())
        else:
            problems.append(f"advertise: must be `full` or `minimal`, not {_show(value)}")
    mdns = True
    if "mdns" in section:
        value = section["mdns"]
        if isinstance(value, bool):
            mdns = value
        else:
            problems.append(f"mdns: must be true or false, not {_show(value)}")
    if problems:
        raise BadDiscoveryConfig(f"{source}: invalid `discovery:` section:\n  - " + "\n  - ".join(problems))
    return DiscoveryConfig(peers, advertise, mdns)


def _config_peers(value: object, problems: list[str]) -> tuple[Endpoint, ...]:
    if value is None:
        return ()
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable) or isinstance(value, Mapping):
        problems.append("peers: must be a list of HOST:PORT strings")
        return ()
    items = list(value)
    if len(items) > MAX_STATIC_PEERS:
        problems.append(f"peers: at most {MAX_STATIC_PEERS} static peers, not {len(items)}")
        return ()
    peers: list[Endpoint] = []
    for index, item in enumerate(items):
        try:
            endpoint = parse_endpoint(item)
        except BadPeerAddress as error:
            problems.append(f"peers[{index}]: {error}")
            continue
        if endpoint not in peers:
            peers.append(endpoint)
    return tuple(peers)
