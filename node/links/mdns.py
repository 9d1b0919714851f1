"""mDNS advertising and browsing (`_orc._tcp.local.`): the async shell around python-zeroconf.

It announces this node (instance name = node id, never a host or user name; host name
`<node_id>.local.`; TXT from `txt.encode_txt`) and browses for other orc nodes. A node that is
only joining browses without announcing anything (`MdnsDiscovery.browse_only`): until it is a
member it has nothing true to say, and a failed join must leave nothing behind on the LAN. Each found
service is resolved, its TXT decoded as hostile input, and every usable address is handed to
`on_hint` as a `Hint` with source mDNS. What it finds is only a hint: the daemon verifies each
peer with an mTLS `Describe` before trusting it, and never uses mDNS records or their TTLs to
decide whether a peer is alive.

Anyone on the LAN can send mDNS, so the work a flood of bogus services can cause is bounded:
names that are not node ids are ignored unresolved, resolutions are queued up to a cap and run
a few at a time, and bad records are logged and dropped, never raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections import Counter
from collections.abc import Callable
from typing import Protocol

from zeroconf import InterfaceChoice, IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from orc.node.links.errors import MdnsUnavailable
from orc.node.links.peer_events import Hint, Source
from orc.node.links.peer_table import MAX_ADDRESSES_PER_PEER, MAX_PEERS
from orc.node.links.static import Endpoint
from orc.node.links.txt import Advert, decode_txt, encode_txt
from orc.node.protocol.ids import MeshId, NodeId, is_node_id

__all__ = ["SERVICE_TYPE", "Discovery", "MdnsDiscovery"]

log = logging.getLogger(__name__)

SERVICE_TYPE = "_orc._tcp.local."
RESOLVE_TIMEOUT_MS = 3000
# A LAN host announcing thousands of services cannot make us send thousands of queries at
# once: a few resolutions run at a time ...
MAX_CONCURRENT_RESOLUTIONS = 4
# ... and the queue of names waiting for one is bounded (more than the peer table can hold
# would be resolved only to be dropped).
MAX_QUEUED_RESOLUTIONS = MAX_PEERS
_GOODBYE_TIMEOUT = 2.0  # seconds to spend sending goodbye packets on shutdown


class Discovery(Protocol):
    """What the daemon needs from a discovery mechanism: run until cancelled, re-advertise."""

    async def run(self) -> None:
        """Advertise this node and report peers found, until cancelled; then withdraw cleanly."""
        ...

    async def update(self, advert: Advert) -> None:
        """Advertise `advert` from now on (same node id)."""
        ...


class MdnsDiscovery:
    """Advertise one node over mDNS and report the other nodes of its mesh as hints."""

    def __init__(
        self,
        advert: Advert,
        addresses: list[str],
        interfaces: list[str] | None,
        on_hint: Callable[[Hint], None],
    ) -> None:
        """`addresses`: the IPs to advertise; `interfaces`: IPs whose interfaces to use (None: all)."""
        if not addresses:
            raise ValueError("mDNS needs at least one address to advertise")
        encode_txt(advert)  # ValueError now rather than inside the event loop later
        self._advert: Advert | None = advert
        self._mesh_id: MeshId = advert.mesh_id
        self._own_id: NodeId | None = advert.node_id
        self._setup(addresses, interfaces, on_hint)

    @classmethod
    def browse_only(cls, mesh_id: MeshId, interfaces: list[str] | None,
                    on_hint: Callable[[Hint], None]) -> MdnsDiscovery:
        """Report the nodes of `mesh_id` without announcing anything (a node that is joining)."""
        discovery = cls.__new__(cls)
        discovery._advert = None
        discovery._mesh_id = mesh_id
        discovery._own_id = None
        discovery._setup([], interfaces, on_hint)
        return discovery

    def _setup(self, addresses: list[str], interfaces: list[str] | None, on_hint: Callable[[Hint], None]) -> None:
        parsed = [ipaddress.ip_address(a) for a in [*addresses, *(interfaces or [])]]  # ValueError if bad
        self._addresses = [str(ipaddress.ip_address(a)) for a in addresses]
        self._interfaces = interfaces
        self._ip_version = _ip_version({a.version for a in parsed})
        self._on_hint = on_hint
        self._zc: AsyncZeroconf | None = None
        self._info: AsyncServiceInfo | None = None
        # Names waiting for or in resolution -> whether they changed again since it started.
        self._queue: dict[str, bool] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_RESOLUTIONS)
        self.started = asyncio.Event()  # set once this node is announced (if it announces) and browsing runs
        self.dropped: Counter[str] = Counter()  # records dropped, by reason (for status and tests)

    @property
    def announces(self) -> bool:
        return self._advert is not None

    async def run(self) -> None:
        try:
            aiozc = AsyncZeroconf(
                interfaces=self._interfaces if self._interfaces else InterfaceChoice.All,
                ip_version=self._ip_version,
            )
        except OSError as error:
            raise MdnsUnavailable(f"mDNS could not start: {error}") from error
        browser: AsyncServiceBrowser | None = None
        self._zc = aiozc
        try:
            if self._advert is not None:
                await self._announce(aiozc, self._advert)
            browser = AsyncServiceBrowser(aiozc.zeroconf, SERVICE_TYPE, handlers=[self._on_change])
            self.started.set()
            if self._info is not None:
                log.info("mDNS: advertising %s on %s", self._info.name, ", ".join(self._addresses))
            else:
                log.info("mDNS: browsing for mesh %s, announcing nothing", self._mesh_id)
            await asyncio.Future()  # until cancelled
        finally:
            self.started.clear()
            await self._shutdown(aiozc, browser)

    async def _announce(self, aiozc: AsyncZeroconf, announced: Advert) -> None:
        info = self._service_info(announced)
        # The instance name is a hash of our public key, unique by construction: a conflict
        # can only come from someone spoofing us, and yielding the name (RFC 6762 probing)
        # would let anyone hide any node. So announce without probing.
        await aiozc.async_register_service(info, cooperating_responders=True)
        self._info = info
        if self._advert is not None and self._advert != announced:  # update() was called while registering
            await self.update(self._advert)

    async def update(self, advert: Advert) -> None:
        if self._advert is None:
            raise ValueError("a browse-only discovery announces nothing")
        if advert.node_id != self._advert.node_id:
            raise ValueError("an mDNS advert cannot change the node id")
        encode_txt(advert)
        self._advert = advert
        if self._zc is None or self._info is None:
            return  # not announced yet: run() announces the newest advert
        info = self._service_info(advert)
        self._info = info
        await self._zc.async_update_service(info)

    # ---- the shell's pieces ----

    def _service_info(self, advert: Advert) -> AsyncServiceInfo:
        return AsyncServiceInfo(
            SERVICE_TYPE,
            f"{advert.node_id}.{SERVICE_TYPE}",
            port=advert.port,
            properties=encode_txt(advert),
            server=f"{advert.node_id}.local.",
            parsed_addresses=self._addresses,
        )

    async def _shutdown(self, aiozc: AsyncZeroconf, browser: AsyncServiceBrowser | None) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._queue.clear()
        if browser is not None:
            await browser.async_cancel()
        info, self._info, self._zc = self._info, None, None
        if info is not None:
            # Goodbye packets (TTL 0, RFC 6762 section 10.1) so browsers drop us now, not in 75 minutes.
            with contextlib.suppress(Exception):
                goodbye = await aiozc.async_unregister_service(info)
                await asyncio.wait_for(goodbye, _GOODBYE_TIMEOUT)
        await aiozc.async_close()
        log.info("mDNS: stopped")

    def _on_change(self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        """Browser callback (on the event loop): queue a resolution for new or changed services."""
        if state_change is ServiceStateChange.Removed:
            return  # liveness never comes from mDNS
        node_id = _instance_node_id(name)
        if node_id is None:
            self._drop("not a node id", name)
            return
        if node_id == self._own_id:
            return
        if name in self._queue:
            self._queue[name] = True  # changed while queued: resolve once more when done
            return
        if len(self._queue) >= MAX_QUEUED_RESOLUTIONS:
            self._drop("resolution queue full", name)
            return
        self._queue[name] = False
        self._start(zeroconf, name, node_id)

    def _start(self, zeroconf: Zeroconf, name: str, node_id: NodeId) -> None:
        task = asyncio.get_running_loop().create_task(self._resolve(zeroconf, name, node_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resolve(self, zeroconf: Zeroconf, name: str, node_id: NodeId) -> None:
        try:
            async with self._slots:
                info = AsyncServiceInfo(SERVICE_TYPE, name)
                answered = await info.async_request(zeroconf, RESOLVE_TIMEOUT_MS)
            if answered:
                self._found(name, node_id, info)
            else:
                self._drop("no answer", name)
        except asyncio.CancelledError:
            self._queue.pop(name, None)
            raise
        except Exception:  # noqa: BLE001 - zeroconf's boundary: a bad record must not take the browser down
            log.exception("mDNS: resolving %r failed", name)
        if self._queue.pop(name, False):
            self._queue[name] = False
            self._start(zeroconf, name, node_id)

    def _found(self, name: str, node_id: NodeId, info: AsyncServiceInfo) -> None:
        advert = decode_txt(info.properties, port=info.port) if info.port is not None else None
        if advert is None:
            self._drop("malformed TXT", name)
            return
        if advert.node_id != node_id:
            self._drop("TXT names another node", name)
            return
        if advert.mesh_id != self._mesh_id:
            self._drop("other mesh", name)
            return
        addresses = [a for a in info.parsed_scoped_addresses(self._ip_version) if _dialable(a)]
        if not addresses:
            self._drop("no usable address", name)
            return
        for address in addresses[:MAX_ADDRESSES_PER_PEER]:
            hint = Hint(node_id, str(Endpoint(address, advert.port)), Source.MDNS, advert)
            try:
                self._on_hint(hint)
            except Exception:  # noqa: BLE001 - a callback boundary: the browser outlives its listener's bug
                log.exception("mDNS: the hint handler failed for %s", hint)

    def _drop(self, reason: str, name: str) -> None:
        self.dropped[reason] += 1
        log.debug("mDNS: dropped %r: %s", name[:100], reason)


def _instance_node_id(name: str) -> NodeId | None:
    """The node id a service name announces, if it is `<node_id>._orc._tcp.local.`."""
    suffix = "." + SERVICE_TYPE
    if not name.lower().endswith(suffix):
        return None
    instance = name[: -len(suffix)]
    return NodeId(instance) if is_node_id(instance) else None


def _dialable(address: str) -> bool:
    """Not an address a forged record could use to point us at nothing or at everyone."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return not (ip.is_unspecified or ip.is_multicast or ip.is_reserved)  # 255.255.255.255 is reserved


def _ip_version(versions: set[int]) -> IPVersion:
    if versions == {6}:
        return IPVersion.V6Only
    return IPVersion.All if 6 in versions else IPVersion.V4Only
