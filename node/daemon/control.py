"""The daemon's side of the local control socket: what the `orc` and `orc-node` commands ask of it.

Only the owner of the home can reach it (a 0600 Unix socket in a 0700 folder), so it trusts
its caller like the command line itself; it still validates everything, because a bad request
must never take the daemon down.

It answers from the moment the daemon has locked its home, before the node is fully up
(`orc.node.daemon.startup`): an invitation needs only the membership, a run waits (bounded) for the
running node, and status says "starting" until then.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from orc.node.coordinator.engine import RunRefused
from orc.node.protocol.events import RunProgress
from orc.node.home import Home
from orc.node.protocol.errors import DaemonStarting, InvalidRequest, MeshCannotRun
from orc.node.protocol.messages import Invitation, NodeStatus, PeerView, RunRequest
from orc.node.daemon.startup import Startup
from orc.scheduler.errors import SchedulerError
from orc.scheduler.profiles import ConfigInvalid

if TYPE_CHECKING:
    from orc.node.daemon.join_server import JoinServer

log = logging.getLogger(__name__)


# How long a call made during start-up waits for the part it needs. The membership comes
# within moments (or after a join, itself bounded by its timeout); the running node after the
# models are checked, which the first time can mean assembling and hashing hundreds of MB.
MEMBERSHIP_WAIT = 60.0
RUNNING_WAIT = 300.0


class ControlService:
    """Status, peers, invitations, revocation and runs for the local command line."""

    def __init__(self, *, home: Home, startup: Startup, join_server: JoinServer) -> None:
        self.home = home
        self._startup = startup
        self._join_server = join_server

    def status(self) -> NodeStatus:
        running = self._startup.running
        membership = self._startup.membership
        if running is None or membership is None:
            raise DaemonStarting(f"the orc-node daemon is starting ({self._startup.describe()})")
        peers = running.peers()
        return NodeStatus(description=running.service.describe(), ca_holder=membership.identity.is_authority,
                          join_address=self._join_server.address(),
                          peers_verified=sum(1 for p in peers if p.verified and p.state in ("verified", "degraded")),
                          peers_known=len(peers), home=str(self.home.data_dir))

    def peers(self) -> tuple[PeerView, ...]:
        """Every peer known so far: none while the node is starting."""
        running = self._startup.running
        return running.peers() if running is not None else ()

    async def invite(self, ttl_seconds: int) -> Invitation:
        membership = await self._startup.wait_membership(MEMBERSHIP_WAIT)
        token, expires_at = membership.invite(float(ttl_seconds) if ttl_seconds else None)
        address = await self._join_server.open()
        log.info("invitation issued, valid until %s", expires_at)
        return Invitation(token.text, expires_at, address)

    async def revoke(self, node_id: str, reason: str) -> int:
        membership = await self._startup.wait_membership(MEMBERSHIP_WAIT)
        return membership.revoke(node_id, reason)

    async def run(self, request: RunRequest) -> AsyncIterator[RunProgress]:
        """Coordinate a run for the local CLI (or only forecast it, or resume one), streaming its events.

        Invalid input raises InvalidRequest (exit 2); an ensemble the mesh cannot run raises
        MeshCannotRun (exit 3), both before anything ran.
        """
        from orc.node.api import Orc

        cwd = Path(request.cwd)
        if not cwd.is_absolute() or not cwd.is_dir():
            raise InvalidRequest(f"the working folder {request.cwd!r} does not exist on this node")
        running = await self._startup.wait_running(RUNNING_WAIT)
        membership = self._startup.membership
        assert membership is not None  # the node runs only once it is a member
        orc = Orc(self.home, cwd=cwd, seed=request.seed, runtimes=dict(running.runtimes))
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
            engine.node_id = membership.identity.node_id
            engine.mesh = running.mesh
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
