"""How far the daemon's start-up has come, as something the control socket can wait on.

The daemon opens its control socket before the slow parts of its start-up (joining a mesh,
preparing and hashing models), so the local commands find it at once. What they ask for may
need a part that does not exist yet; they wait for it here, bounded, instead of being refused:

    STARTING ──member──> PREPARING ──running──> RUNNING
        │                    │
        └──────failed────────┴──────> FAILED   (the daemon exits with that error)

`member` hands over the node's `Membership` (invitations and revocations work from then on);
`running` hands over the `Running` parts (status, peers and runs). Each is set once, in order.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from orc.node.protocol.errors import DaemonStarting
from orc.node.protocol.messages import PeerView

if TYPE_CHECKING:
    from orc.node.coordinator.placer import MeshPlacer
    from orc.node.models.runtimes.base import ModelRuntime
    from orc.node.trust.membership import Membership
    from orc.node.worker.service import NodeService


class Phase(enum.Enum):
    STARTING = "starting"  # the home is locked and the control socket open; identity next (maybe a join)
    PREPARING = "preparing its models"  # a member; loading runtimes, checking model files, starting servers
    RUNNING = "running"
    FAILED = "failed"


@dataclass(frozen=True)
class Running:
    """The parts of a started node the control socket answers with."""

    service: NodeService
    runtimes: Mapping[str, ModelRuntime]
    peers: Callable[[], tuple[PeerView, ...]]
    placer: MeshPlacer


class Startup:
    """The start-up state: set by the daemon as parts come up, awaited by the control service."""

    def __init__(self, joining: bool = False) -> None:
        self.joining = joining  # STARTING includes a join through a token
        self._membership: Membership | None = None
        self._running: Running | None = None
        self._failure: BaseException | None = None
        self._changed = asyncio.Event()

    @property
    def phase(self) -> Phase:
        if self._failure is not None:
            return Phase.FAILED
        if self._running is not None:
            return Phase.RUNNING
        return Phase.PREPARING if self._membership is not None else Phase.STARTING

    def describe(self) -> str:
        """The phase in words, for "the daemon is starting (…)"."""
        if self.phase is Phase.STARTING and self.joining:
            return "joining the mesh"
        return self.phase.value

    @property
    def membership(self) -> Membership | None:
        return self._membership

    @property
    def running(self) -> Running | None:
        return self._running

    # ---- the daemon's side ----

    def member(self, membership: Membership) -> None:
        assert self._membership is None and self._failure is None, "membership is handed over once"
        self._membership = membership
        self._wake()

    def started(self, running: Running) -> None:
        assert self._membership is not None and self._running is None, "running follows membership, once"
        self._running = running
        self._wake()

    def failed(self, error: BaseException) -> None:
        """The start-up ended without a running node (an error, or a stop while starting)."""
        if self._running is None and self._failure is None:
            self._failure = error
            self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # ---- the waiting side ----

    async def wait_membership(self, timeout: float) -> Membership:
        """The membership once it exists; DaemonStarting after `timeout` s or if the start-up failed."""
        await self._wait(lambda: self._membership is not None, timeout)
        assert self._membership is not None
        return self._membership

    async def wait_running(self, timeout: float) -> Running:
        """The running parts once they exist; DaemonStarting after `timeout` s or if the start-up failed."""
        await self._wait(lambda: self._running is not None, timeout)
        assert self._running is not None
        return self._running

    async def _wait(self, ready: Callable[[], bool], timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not ready():
            if self._failure is not None:
                raise DaemonStarting(f"the orc-node daemon did not start ({str(self._failure) or 'it was stopped'}); "
                                     "see its log")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise DaemonStarting(f"the orc-node daemon is still starting ({self.describe()}) after "
                                     f"{timeout:.0f} s; try again when 'orc-node status' says it runs")
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass


__all__ = ["Phase", "Running", "Startup"]
