"""The placer's connections to its peers: dialled on first use, by node id, from the address the
peer last gave; dropped when it dies or is revoked; and fire-and-forget calls (a lease given back,
an execution abandoned) kept alive until they end."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from orc.node.coordinator.generations import PeerLink, PeerState
from orc.node.protocol.errors import NodeError

log = logging.getLogger(__name__)


class Unreachable(Exception):
    """No address is known for the node: it never described itself or was forgotten."""


class PeerLinks:
    """One `PeerLink` per peer, made by `dial(node_id, address)` when first needed."""

    def __init__(self, peers: Callable[[], Iterable[PeerState]], dial: Callable[[str, str], PeerLink]) -> None:
        self._peers = peers
        self._dial = dial
        self._links: dict[str, PeerLink] = {}
        self._tasks: set[asyncio.Future[object]] = set()

    def get(self, node_id: str) -> PeerLink:
        """The link to `node_id`, dialled now if there is none; `Unreachable` without an address."""
        link = self._links.get(node_id)
        if link is None:
            address = next((p.address or (p.description.addresses[0] if p.description and p.description.addresses
                                          else None)
                            for p in self._peers() if p.node_id == node_id), None)
            if address is None:
                raise Unreachable(f"no address known for node {node_id}")
            link = self._links[node_id] = self._dial(node_id, address)
        return link

    def alive(self, node_id: str) -> bool:
        """Whether the peer still beats (a pulled cable never closes a stream)."""
        return any(p.node_id == node_id and p.alive for p in self._peers())

    def cancel_soon(self, node_id: str, call_id: str, what: str) -> asyncio.Future[object]:
        """Ask `node_id` to cancel `call_id` (an execution or a lease) without waiting for it;
        a node that is gone has nothing to stop, so failures are only logged (DEBUG)."""
        return self.background(self.cancel(node_id, call_id, what))

    async def cancel(self, node_id: str, call_id: str, what: str) -> None:
        """Ask `node_id` to cancel `call_id`, logging (DEBUG) rather than raising if it cannot."""
        try:
            await self.get(node_id).cancel(call_id, timeout=1.0)
        except (NodeError, OSError, Unreachable) as error:
            log.debug("%s %s on %s: %s", what, call_id, node_id, error)

    def forget(self, node_id: str) -> None:
        """Drop the connection to a peer (it died or was revoked); the next call dials afresh."""
        link = self._links.pop(node_id, None)
        if link is not None:
            self.background(link.close())

    def background(self, work: Awaitable[object]) -> asyncio.Future[object]:
        """Run `work` without waiting for it, holding a reference until it is done."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        links, self._links = list(self._links.values()), {}
        await asyncio.gather(*(link.close() for link in links), return_exceptions=True)
