"""`ray://HOST:PORT`: where a Ray cluster's head listens (its GCS port, `ray start --head --port`).

orc joins the cluster as a Ray driver and hands Ray `HOST:PORT`. It does not use Ray Client
(Ray's own `ray://` on port 10001): Ray Client hands back a plain reference for a streaming
generator instead of its stream (checked with Ray 2.60), and orc streams every token.
"""

from __future__ import annotations

from orc.node.ray.errors import BadAddress

SCHEME = "ray://"
# An address comes from a flag or config.yaml; a host name past DNS's own limit is a typo or junk.
MAX_HOST_CHARS = 253


def parse_address(address: str) -> str:
    """`ray://HOST:PORT` (or `HOST:PORT`) as the `HOST:PORT` Ray's driver connects to; BadAddress otherwise."""
    text = address.strip()
    rest = text.removeprefix(SCHEME)
    host, sep, port = rest.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host  # [::1]:6379
    if not sep or not host or len(host) > MAX_HOST_CHARS or "/" in host or not port.isdigit() \
            or not 0 < int(port) < 65536:
        raise BadAddress(f"Ray address {address!r} is not of the form ray://HOST:PORT "
                         "(the head's port, as 'ray start --head --port PORT' prints it)")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
