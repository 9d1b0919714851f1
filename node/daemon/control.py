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
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Protocol

from orc.node.coordinator.engine import Engine, RunRefused
from orc.node.coordinator.workspace import Workspace
from orc.node.daemon.startup import Startup
from orc.node.home import Home
from orc.node.protocol.errors import DaemonStarting, InvalidRequest, MeshCannotRun
from orc.node.protocol.events import RunProgress
from orc.node.protocol.messages import Invitation, NodeStatus, PeerView, RunRequest
from orc.scheduler.errors import SchedulerError
from orc.scheduler.journal import JournalContents, read_journal
from orc.scheduler.loader import load_ensemble
from orc.scheduler.profiles import ConfigInvalid

log = logging.getLogger(__name__)


# How long a call made during start-up waits for the part it needs. The membership comes
# within moments (or after a join, itself bounded by its timeout); the running node after the
# models are checked, which the first time can mean assembling and hashing hundreds of MB.
MEMBERSHIP_WAIT = 60.0
RUNNING_WAIT = 300.0


class EngineFactory(Protocol):
    """Builds the engine that coordinates one run asked for from `folder` (the caller's working
    folder: its project's profiles, ensembles and scripts apply). Called once the node runs;
    raises ConfigInvalid for a config file that cannot be read."""

    def __call__(self, *, folder: Path, seed: int | None, local: bool) -> Engine: ...


def mesh_engines(home: Home, startup: Startup) -> EngineFactory:
    """The daemon's engines: each coordinates its run on the mesh, as this node."""
    def build(*, folder: Path, seed: int | None, local: bool) -> Engine:
        running, membership = startup.running, startup.membership
        assert running is not None and membership is not None, "engines are built once the node runs"
        return Workspace(home, folder).engine(runtimes={}, placer=running.placer,
                                              node_id=membership.identity.node_id, local=local, seed=seed)

    return build


class ControlService:
    """Status, peers, invitations, revocation and runs for the local command line."""

    def __init__(self, *, home: Home, startup: Startup, engines: EngineFactory,
                 open_join_server: Callable[[], Awaitable[str]], join_address: Callable[[], str | None],
                 watch_run: Callable[[AsyncIterator[RunProgress]], AsyncIterator[RunProgress]] = lambda events: events,
                 api_address: Callable[[], str | None] = lambda: None) -> None:
        """`open_join_server()` opens the join server (or finds it open) and returns its address;
        `join_address()` is that address while it is open, else None. `watch_run(events)` passes
        a run's events on, observing them (the daemon's run hub, with the node's metrics inside it:
        the dashboard sees the run, and may cancel it, which ends the stream with `Cancelled`);
        `api_address()` is where the HTTP API serves, once it does."""
        self.home = home
        self._startup = startup
        self._engines = engines
        self._open_join_server = open_join_server
        self._join_address = join_address
        self._watch_run = watch_run
        self._api_address = api_address

    def status(self) -> NodeStatus:
        running = self._startup.running
        membership = self._startup.membership
        if running is None or membership is None:
            raise DaemonStarting(f"the orc-node daemon is starting ({self._startup.describe()})")
        peers = running.peers()
        return NodeStatus(description=running.service.describe(), ca_holder=membership.identity.is_authority,
                          join_address=self._join_address(),
                          peers_verified=sum(1 for p in peers if p.verified and p.state in ("verified", "degraded")),
                          peers_known=len(peers), home=str(self.home.data_dir), api_address=self._api_address())

    def peers(self) -> tuple[PeerView, ...]:
        """Every peer known so far: none while the node is starting."""
        running = self._startup.running
        return running.peers() if running is not None else ()

    async def invite(self, ttl_seconds: int) -> Invitation:
        membership = await self._startup.wait_membership(MEMBERSHIP_WAIT)
        token, expires_at = membership.invite(float(ttl_seconds) if ttl_seconds else None)
        address = await self._open_join_server()
        log.info("invitation issued, valid until %s", expires_at)
        return Invitation(token.text, expires_at, address)

    async def revoke(self, node_id: str, reason: str) -> int:
        membership = await self._startup.wait_membership(MEMBERSHIP_WAIT)
        return membership.revoke(node_id, reason)

    async def run(self, request: RunRequest) -> AsyncIterator[RunProgress]:
        """Coordinate a run for the local CLI (or only forecast it, or resume one), streaming its events.

        The command line resolved the ensemble: `reference` is the absolute path of its file and
        `cwd` the caller's folder; nothing is looked up against the daemon's own folder. Invalid
        input raises InvalidRequest (exit 2); an ensemble the mesh cannot run raises
        MeshCannotRun (exit 3), both before anything ran.
        """
        folder = _absolute(request.cwd, "the working folder")
        ensemble = _absolute(request.reference, "the ensemble file")
        if not folder.is_dir():
            raise InvalidRequest(f"the working folder {request.cwd!r} does not exist on this node")
        if not ensemble.is_file():
            raise InvalidRequest(f"the ensemble file {request.reference!r} does not exist on this node")
        await self._startup.wait_running(RUNNING_WAIT)
        resume: JournalContents | None = None
        try:
            # Building the engine reads the profiles and the catalog; reading the ensemble and
            # binding it to the mesh can hash a model file the first time (hundreds of MB): all
            # off the loop, which serves the mesh meanwhile.
            engine = await asyncio.to_thread(self._engines, folder=folder, seed=request.seed, local=request.local)
            if request.resume is not None:
                resume = await asyncio.to_thread(read_journal, self._journal(request.resume))
            spec = await asyncio.to_thread(load_ensemble, ensemble, engine.library)
            bound = await asyncio.to_thread(engine.preflight, spec)
        except RunRefused as error:
            raise (MeshCannotRun if error.exit_code == 3 else InvalidRequest)(str(error)) from None
        except (SchedulerError, ConfigInvalid, OSError) as error:
            raise InvalidRequest(str(error)) from None
        if resume is not None:
            run_input = resume.header.input
        else:
            run_input = request.input if request.input is not None else spec.default_task
        if request.plan:
            yield engine.forecast(bound, run_input)
            return
        async for event in self._watch_run(engine.run(bound, run_input, resume=resume, explain=request.explain)):
            yield event

    def _journal(self, run_id: str) -> Path:
        """The journal of run `run_id` (the full id: the command line resolved a prefix)."""
        if not run_id or not all(c.isalnum() or c in "-_" for c in run_id):  # no '/', no '..'
            raise InvalidRequest(f"{run_id!r} is not a run id")
        path = self.home.journal_path(run_id)
        if not path.is_file():
            raise InvalidRequest(f"no run '{run_id}' in {self.home.runs_dir}")
        return path


def _absolute(text: str, what: str) -> Path:
    path = Path(text)
    if not path.is_absolute():
        raise InvalidRequest(f"{what} must be an absolute path, not {text!r} (the daemon runs in its own folder)")
    return path
