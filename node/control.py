"""The daemon's side of the local control socket: what the `orc` and `orc-node` commands ask of it.

Only the owner of the home can reach it (a 0600 Unix socket in a 0700 folder), so it trusts
its caller like the command line itself; it still validates everything, because a bad request
must never take the daemon down.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from orc.node.engine import RunRefused
from orc.node.events import RunProgress
from orc.node.home import Home
from orc.node.membership import Membership
from orc.node.mesh import Mesh
from orc.node.rpc.errors import InvalidRequest, MeshCannotRun
from orc.node.rpc.types import Invitation, NodeStatus, PeerView, RunRequest
from orc.node.runtimes.base import ModelRuntime
from orc.node.service import NodeService
from orc.scheduler.errors import SchedulerError
from orc.scheduler.profiles import ConfigInvalid

if TYPE_CHECKING:
    from orc.node.daemon import Daemon

log = logging.getLogger(__name__)


class ControlService:
    """Status, peers, invitations, revocation and runs for the local command line."""

    def __init__(self, *, home: Home, membership: Membership, service: NodeService,
                 runtimes: Mapping[str, ModelRuntime], peers: Callable[[], tuple[PeerView, ...]],
                 mesh: Mesh, daemon: "Daemon") -> None:
        self.home = home
        self.membership = membership
        self.service = service
        self.runtimes = runtimes
        self._peers = peers
        self.mesh = mesh
        self._daemon = daemon

    def status(self) -> NodeStatus:
        peers = self._peers()
        join = None
        if self._daemon.join_port is not None:
            join = f"{self._daemon.addresses()[0].rsplit(':', 1)[0]}:{self._daemon.join_port}"
        return NodeStatus(description=self.service.describe(), ca_holder=self.membership.identity.is_authority,
                          join_address=join, peers_verified=sum(1 for p in peers if p.verified and p.state in
                                                                ("verified", "degraded")),
                          peers_known=len(peers), home=str(self.home.data_dir))

    def peers(self) -> tuple[PeerView, ...]:
        return self._peers()

    async def invite(self, ttl_seconds: int) -> Invitation:
        token, expires_at = self.membership.invite(float(ttl_seconds) if ttl_seconds else None)
        address = await self._daemon.open_join_server()
        log.info("invitation issued, valid until %s", expires_at)
        return Invitation(token.text, expires_at, address)

    async def revoke(self, node_id: str, reason: str) -> int:
        return self.membership.revoke(node_id, reason)

    async def run(self, request: RunRequest) -> AsyncIterator[RunProgress]:
        """Coordinate a run for the local CLI (or only forecast it, or resume one), streaming its events.

        Invalid input raises InvalidRequest (exit 2); an ensemble the mesh cannot run raises
        MeshCannotRun (exit 3), both before anything ran.
        """
        from orc.node.api import Orc

        cwd = Path(request.cwd)
        if not cwd.is_absolute() or not cwd.is_dir():
            raise InvalidRequest(f"the working folder {request.cwd!r} does not exist on this node")
        orc = Orc(self.home, cwd=cwd, seed=request.seed, runtimes=dict(self.runtimes))
        resume = None
        try:
            # Reading the ensemble and checking it against the mesh can hash a model file the
            # first time (hundreds of MB): off the loop, which serves the mesh meanwhile.
            if request.resume is not None:
                resume = await asyncio.to_thread(orc.journal, request.resume)
                spec = await asyncio.to_thread(orc.spec_of, resume)
            else:
                spec = await asyncio.to_thread(orc.load, request.reference)
            engine = orc.engine()
            engine.node_id = self.membership.identity.node_id
            engine.mesh = self.mesh
            engine.local = request.local
            await asyncio.to_thread(engine.preflight, spec)
        except RunRefused as error:
            raise (MeshCannotRun if error.exit_code == 3 else InvalidRequest)(str(error)) from None
        except (SchedulerError, ConfigInvalid, OSError) as error:
            raise InvalidRequest(str(error)) from None
        if resume is not None:
            run_input = resume.header.input
        else:
            run_input = request.input if request.input is not None else spec.default_task
        if request.plan or request.explain:
            yield engine.forecast(spec, run_input)
            if request.plan:
                return
        async for event in engine.run(spec, run_input, resume=resume):
            yield event
