"""The errors of `orc.node.links`; each leaf's docstring is written for the user who sees it."""

from __future__ import annotations


class DiscoveryError(Exception):
    """Peer discovery could not do what was asked; the message says why and what to do."""


class BadPeerAddress(DiscoveryError):
    """A peer address must be HOST:PORT, for example `192.168.1.20:7733`, `pi.local:7733` or
    `[fd00::20]:7733` (IPv6 in brackets); without `:PORT` the default port 7733 is used."""


class BadDiscoveryConfig(DiscoveryError):
    """The `discovery:` section of the node config file is invalid. It accepts `peers:` (a list of
    HOST:PORT strings), `advertise:` (`full` or `minimal`) and `mdns:` (`true` or `false`)."""


class MdnsUnavailable(DiscoveryError):
    """mDNS could not start on this machine (no usable network interface, or UDP port 5353 is
    unavailable). Start with `--no-mdns` and name peers with `--peer HOST:PORT` instead."""
