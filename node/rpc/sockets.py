"""The sockets a node listens on, and the open files it may hold.

A listening socket is bound WITHOUT SO_REUSEPORT, so a second daemon on the same port fails
at once (`PortInUse`) instead of sharing the port with the first. The open-file limit is raised
to the hard limit at start: each connection costs a file, and the usual soft limit of 1024 is
soon reached by a busy node.
"""

from __future__ import annotations

import errno
import logging
import resource
import socket
import sys
from collections.abc import Callable

from orc.node.protocol.errors import Unavailable

log = logging.getLogger(__name__)

# What an unlimited RLIMIT_NOFILE counts as (the connection budget needs a number).
UNLIMITED_FILES = 1 << 20


class PortInUse(Unavailable):
    """Another program (another orc-node?) already listens on that port."""


class AddressNotHere(Unavailable):
    """That address is not one of this machine's, so nothing can listen on it."""


def raise_open_file_limit(limits: Callable[[], tuple[int, int]] | None = None,
                          set_limits: Callable[[tuple[int, int]], None] | None = None) -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit, as far as the kernel allows;
    return the soft limit now in force.

    The usual soft limit (1024) is far below what a node holding many connections needs, and
    the hard limit is what the administrator allows. macOS reports an unlimited hard limit but
    refuses more than its own cap (kern.maxfilesperproc), with ValueError: lower values are
    tried until one is accepted. `limits` and `set_limits` stand in for the `resource` calls in
    tests.
    """
    get = limits or (lambda: resource.getrlimit(resource.RLIMIT_NOFILE))
    put = set_limits or (lambda pair: resource.setrlimit(resource.RLIMIT_NOFILE, pair))
    soft, hard = get()
    if soft == resource.RLIM_INFINITY:
        return UNLIMITED_FILES
    target = UNLIMITED_FILES if hard == resource.RLIM_INFINITY else hard
    while target > soft:
        try:
            put((target, hard))
        except (ValueError, OSError):
            target //= 2  # macOS: above kern.maxfilesperproc; try lower
            continue
        log.info("open-file limit raised from %d to %d", soft, target)
        return target
    log.info("open-file limit is %d (the hard limit allows no more)", soft)
    return soft


def listening_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port WITHOUT SO_REUSEPORT: one port, one daemon."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise AddressNotHere(f"cannot listen on {host}:{port}: {error.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        if sys.platform.startswith("linux"):
            # Lets a restarted daemon bind while its old connections sit in TIME_WAIT. Linux never
            # lets two sockets listen on one address with it (BSD and macOS do, so not there).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # "::" takes IPv4 too, as gRPC does
        sock.bind(address)
        sock.setblocking(False)
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise PortInUse(f"port {port} on {host} is in use") from None
        if error.errno == errno.EADDRNOTAVAIL:
            raise AddressNotHere(f"cannot listen on {host}:{port}: that address is not on this machine") from None
        raise Unavailable(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    return sock
