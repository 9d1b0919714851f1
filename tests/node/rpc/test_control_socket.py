"""The local control socket: owner-only permissions, every call, and clear errors."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from rpc_helpers import FakeControl, description_of, new_member, run

from orc.node.protocol.events import RunBegan, RunFinished, TokenStreamed
from orc.node.protocol.ids import NodeId
from orc.node.rpc.client import ControlClient
from orc.node.protocol.errors import DaemonNotRunning, NotCertificateAuthority, SocketInUse, SocketPathInvalid
from orc.node.rpc.servers import start_control_server
from orc.node.protocol.messages import NodeStatus, PeerView, RunRequest


@pytest.fixture
def state_dir() -> Iterator[Path]:
    # Not pytest's tmp_path: a Unix socket path must stay under ~100 bytes.
    folder = Path(tempfile.mkdtemp(prefix="orc-rpc-", dir="/tmp"))
    try:
        yield folder / "state"
    finally:
        shutil.rmtree(folder)


def _control(mesh, ca_holder: bool = True) -> FakeControl:
    member = new_member(mesh)
    description = description_of(member, mesh)
    peers = (PeerView(description, "verified", "192.168.1.20:7733", 1_700_000_000.0, True, 0, member.node_id),
             PeerView(None, "discovered", "192.168.1.30:7733", None, False, 0))
    return FakeControl(NodeStatus(description, ca_holder, None, 1, 2, "/home/me/orc"), peers)


def test_the_socket_is_owner_only_and_answers_every_call(mesh, state_dir: Path) -> None:
    backend = _control(mesh)
    path = state_dir / "orc-node.sock"

    async def scenario() -> None:
        server = await start_control_server(backend, path)
        try:
            assert stat.S_ISSOCK(path.lstat().st_mode)
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
            async with ControlClient(path) as client:
                assert await client.status() == backend.node_status
                assert await client.peers() == backend.peer_views
                invitation = await client.invite(600)
                assert invitation.token.startswith("orc1-") and invitation.join_address.endswith(":7734")
                assert await client.revoke(NodeId("a" * 20), "lost") == 4
                request = RunRequest("perspectives", "Should we?", "/tmp", seed=3)
                events = [e async for e in client.run(request)]
        finally:
            await server.stop(None)
        assert [type(e) for e in events] == [RunBegan, TokenStreamed, RunFinished]
        assert events[-1].result.deliverable == "Should we?"
        assert ("invite", 600) in backend.calls and ("run", request) in backend.calls

    run(scenario())


def test_refusals_of_the_daemon_reach_the_cli_as_its_errors(mesh, state_dir: Path) -> None:
    path = state_dir / "orc-node.sock"

    async def scenario() -> None:
        server = await start_control_server(_control(mesh, ca_holder=False), path)
        try:
            async with ControlClient(path) as client:
                with pytest.raises(NotCertificateAuthority):
                    await client.invite()
        finally:
            await server.stop(None)

    run(scenario())


def _stale_socket(path: Path) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.close()  # the file stays; nothing listens (a daemon that was killed)


def test_no_daemon_is_a_clear_error(state_dir: Path) -> None:
    path = state_dir / "orc-node.sock"

    async def scenario() -> None:
        with pytest.raises(DaemonNotRunning, match="orc-node start"):
            await ControlClient(path).status()
        _stale_socket(path)
        client = ControlClient(path)
        with pytest.raises(DaemonNotRunning):
            await client.status(timeout=5)
        with pytest.raises(DaemonNotRunning):
            [e async for e in client.run(RunRequest("x", None, "/"))]
        await client.close()

    run(scenario())


def test_a_stale_socket_is_replaced_but_a_live_one_is_left_alone(mesh, state_dir: Path) -> None:
    path = state_dir / "orc-node.sock"
    _stale_socket(path)

    async def scenario() -> None:
        server = await start_control_server(_control(mesh), path)
        try:
            with pytest.raises(SocketInUse):
                await start_control_server(_control(mesh), path)
            async with ControlClient(path) as client:  # the first daemon still answers
                await client.status()
        finally:
            await server.stop(None)

    run(scenario())


def test_unusable_socket_paths_are_refused(mesh, state_dir: Path) -> None:
    state_dir.mkdir(mode=0o700)
    regular = state_dir / "orc-node.sock"
    regular.write_text("not a socket")

    async def scenario() -> None:
        with pytest.raises(SocketPathInvalid, match="not a socket"):
            await start_control_server(_control(mesh), regular)
        with pytest.raises(SocketPathInvalid, match="longer"):
            await start_control_server(_control(mesh), state_dir / ("x" * 120) / "orc-node.sock")

    run(scenario())
    assert regular.read_text() == "not a socket"


def test_a_loose_state_folder_is_tightened(mesh, state_dir: Path) -> None:
    state_dir.mkdir(mode=0o755)
    os.chmod(state_dir, 0o755)

    async def scenario() -> None:
        server = await start_control_server(_control(mesh), state_dir / "orc-node.sock")
        await server.stop(None)

    run(scenario())
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700


def test_daemon_answers_tells_a_live_socket_from_a_stale_one(mesh, state_dir: Path) -> None:
    from orc.node.rpc.client import daemon_answers

    path = state_dir / "orc-node.sock"

    async def scenario() -> None:
        assert not await daemon_answers(path)
        _stale_socket(path)
        assert not await daemon_answers(path)
        server = await start_control_server(_control(mesh), path)
        try:
            assert await daemon_answers(path)
        finally:
            await server.stop(None)

    run(scenario())


def test_a_link_planted_for_the_socket_is_refused_and_never_followed(mesh, state_dir: Path) -> None:
    state_dir.mkdir(mode=0o700)
    victim_dir = state_dir.parent / "victim"
    victim_dir.mkdir()
    victim = victim_dir / "theirs.sock"
    _stale_socket(victim)  # a socket someone else owns: must not be probed, removed or re-moded
    os.chmod(victim, 0o666)
    path = state_dir / "orc-node.sock"
    path.symlink_to(victim)

    async def scenario() -> None:
        with pytest.raises(SocketPathInvalid, match="symbolic link"):
            await start_control_server(_control(mesh), path)

    run(scenario())
    assert path.is_symlink() and stat.S_ISSOCK(victim.lstat().st_mode)
    assert stat.S_IMODE(victim.lstat().st_mode) == 0o666


def test_a_state_folder_that_is_a_link_is_not_chmodded_through(mesh, state_dir: Path) -> None:
    elsewhere = state_dir.parent / "elsewhere"
    elsewhere.mkdir()
    os.chmod(elsewhere, 0o755)
    state_dir.symlink_to(elsewhere)

    async def scenario() -> None:
        with pytest.raises(SocketPathInvalid, match="symbolic link"):
            await start_control_server(_control(mesh), state_dir / "orc-node.sock")

    run(scenario())
    assert stat.S_IMODE(elsewhere.stat().st_mode) == 0o755 and not (elsewhere / "orc-node.sock").exists()


def test_the_socket_is_remoded_only_if_it_is_still_the_daemons(state_dir: Path) -> None:
    from orc.node.rpc import servers

    state_dir.mkdir(mode=0o700)
    target = state_dir / "target"
    target.write_text("")
    os.chmod(target, 0o644)
    link = state_dir / "orc-node.sock"
    link.symlink_to(target)
    with pytest.raises(SocketPathInvalid, match="replaced"):
        servers._chmod_socket(link, 0o600)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
