"""A real daemon in this process, held in the middle of its start-up: what answers before it is up.

`Daemon._served` (checking and hashing the model files, assembling a GGUF) is the slow part of
a start; the tests hold it on an event so "still starting" lasts exactly as long as they need.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from support import free_port_pair, short_tmp

from orc.node.daemon.root import Daemon, DaemonOptions, control_socket
from orc.node.links.static import Endpoint
from orc.node.protocol.events import RunFinished
from orc.node.home import Home, HomeLocked, daemon_holds
from orc.node.trust.store import IdentityStore
from orc.node.daemon.joining import join_mesh
from orc.node.rpc.client import ControlClient
from orc.node.protocol.errors import DaemonStarting
from orc.node.protocol.messages import RunRequest
from orc.node.daemon.startup import Phase

SMOL = "smollm2-135m-instruct"
ECHO = "import json, sys\nreq = json.load(sys.stdin)\nprint(json.dumps({'echo': req['input_data']}))\n"


@pytest.fixture
def root() -> Iterator[Path]:
    with short_tmp("orc-up-") as folder:
        yield folder


@pytest.fixture
def held(monkeypatch) -> threading.Event:
    """Hold every daemon's model preparation until the event is set (set again at the end)."""
    release = threading.Event()
    original = Daemon._served

    def slow_served(self, runtimes):
        release.wait(120)
        return original(self, runtimes)

    monkeypatch.setattr(Daemon, "_served", slow_served)
    yield release
    release.set()


def ca_daemon(root: Path, port: int) -> Daemon:
    home = Home.locate(root / "ca")
    IdentityStore(home.identity_dir).init_mesh("ca", datetime.now(timezone.utc))
    return Daemon(home, DaemonOptions(listen=f"127.0.0.1:{port}", mdns=False, models=(SMOL,), no_api=True))


@contextlib.asynccontextmanager
async def serving(daemon: Daemon, held: threading.Event) -> AsyncIterator[ControlClient]:
    """Run `daemon` until the block ends; a client of its control socket as soon as there is one."""
    stop = asyncio.Event()
    running = asyncio.create_task(daemon.run(stop))
    try:
        path = control_socket(daemon.home)
        for _ in range(600):
            if path.exists() or running.done():
                break
            await asyncio.sleep(0.05)
        assert path.exists(), "the control socket never appeared"
        async with ControlClient(path) as client:
            yield client
    finally:
        stop.set()
        held.set()  # a thread checking models cannot be cancelled: let it finish
        await asyncio.wait_for(running, 30)


def test_invitations_work_while_the_models_are_still_being_prepared(root, held) -> None:
    port = free_port_pair()
    daemon = ca_daemon(root, port)

    async def scenario():
        async with serving(daemon, held) as client:
            with pytest.raises(DaemonStarting, match="starting"):
                await client.status()
            assert await client.peers() == ()
            first = await client.invite(600)
            await asyncio.sleep(1.1)  # two invitations a second apart
            second = await client.invite(600)
            assert daemon.startup.phase is Phase.PREPARING  # still: the models are held
            assert first.join_address == second.join_address == f"127.0.0.1:{port + 1}"
            # Both work, concurrently, the later one first.
            joins = [join_mesh(IdentityStore(root / name), invitation.token, name, timeout=60, mdns=False,
                               peers=[Endpoint("127.0.0.1", port)])
                     for name, invitation in (("second", second), ("first", first))]
            joined = await asyncio.gather(*joins)
            assert len({identity.node_id for identity in joined}) == 2
            assert all(identity.mesh_id == daemon.store.load().mesh_id for identity in joined)
            held.set()
            for _ in range(600):
                if daemon.startup.phase is Phase.RUNNING:
                    break
                await asyncio.sleep(0.05)
            status = await client.status()
            assert status.ca_holder and status.description.node_id == daemon.store.load().node_id

    asyncio.run(scenario())


def test_a_run_sent_during_start_up_waits_for_the_node_and_runs_there(root, held) -> None:
    daemon = ca_daemon(root, free_port_pair())
    work = root / "work"
    work.mkdir()
    (work / "echo.py").write_text(ECHO)
    (work / "e.yaml").write_text("name: e\nagents:\n  - {name: s, script: echo.py}\n")

    async def scenario():
        events = []
        async with serving(daemon, held) as client:

            async def collect():
                async for event in client.run(RunRequest(str(work / "e.yaml"), "hello", str(work))):
                    events.append(event)

            run = asyncio.create_task(collect())
            await asyncio.sleep(1.0)
            assert not run.done() and events == []  # waiting for the node, not refused, not run elsewhere
            held.set()
            await asyncio.wait_for(run, 120)
        return events[-1]

    finished = asyncio.run(scenario())
    assert isinstance(finished, RunFinished) and finished.result.status == "completed"
    (name, record), = finished.result.results
    assert record.node_id == daemon.store.load().node_id and record.output == {"echo": "hello"}


def test_a_second_daemon_for_the_same_home_is_refused_at_once(root, held) -> None:
    daemon = ca_daemon(root, free_port_pair())
    second = Daemon(daemon.home, DaemonOptions(listen=f"127.0.0.1:{free_port_pair()}", mdns=False, models=(SMOL,), no_api=True))

    async def scenario():
        async with serving(daemon, held) as client:
            with pytest.raises(HomeLocked, match=f"another orc-node daemon runs for this home \\(pid {os.getpid()}\\)"):
                await second.run(asyncio.Event())
            assert control_socket(daemon.home).exists()  # the first one's socket is left alone
            with pytest.raises(DaemonStarting):
                await client.status()

    asyncio.run(scenario())


def test_a_daemon_stopped_while_starting_stops_cleanly_and_frees_its_home(root, held) -> None:
    port = free_port_pair()
    daemon = ca_daemon(root, port)

    async def scenario():
        stop = asyncio.Event()
        running = asyncio.create_task(daemon.run(stop))
        for _ in range(600):
            if control_socket(daemon.home).exists():
                break
            await asyncio.sleep(0.05)
        async with ControlClient(control_socket(daemon.home)) as client:
            await client.invite(600)  # a join server is open too
        stop.set()
        await asyncio.wait_for(running, 30)
        held.set()  # a thread checking models cannot be cancelled: let it finish

    asyncio.run(scenario())
    assert daemon.startup.phase is Phase.FAILED
    assert not control_socket(daemon.home).exists() and not daemon_holds(daemon.home)
    with socket.socket() as probe:  # the join server is closed
        assert probe.connect_ex(("127.0.0.1", port + 1)) != 0


def test_with_the_join_port_taken_the_join_server_opens_on_another(root, held) -> None:
    from orc.node.trust.certificates import generate_key, make_csr
    from orc.node.trust.tokens import JoinToken
    from orc.node.rpc.client import join

    port = free_port_pair()
    daemon = ca_daemon(root, port)
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", port + 1))
    squatter.listen()

    async def scenario():
        async with serving(daemon, held) as client:
            invitation = await client.invite(600)
            join_port = int(invitation.join_address.rpartition(":")[2])
            assert join_port not in (0, port + 1)
            grant = await join("127.0.0.1", join_port, JoinToken.parse(invitation.token),
                               make_csr(generate_key(), "x"), "x")
            assert grant.ca_certificate_pem

    try:
        asyncio.run(scenario())
    finally:
        squatter.close()
