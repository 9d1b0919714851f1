"""The commands and a daemon that is starting: they wait for it, never run without it or call it stopped.

A daemon holds its home's lock from its first moment and opens its control socket right after;
here the test holds the lock itself and opens a control socket late, so the window between the
two lasts as long as the test needs.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from support import short_tmp

from orc.node.daemon.root import control_socket
from orc.node.home import DaemonLock, Home
from orc.node.protocol.errors import DaemonStarting
from orc.node.rpc.servers import start_control_server
from orc.node.protocol.messages import Invitation

TOKEN = "orc1-" + "a" * 26 + "-" + "b" * 26


class StartingDaemon:
    """A control backend that answers like a daemon still preparing its models."""

    def status(self):
        raise DaemonStarting("the orc-node daemon is starting (preparing its models)")

    def peers(self):
        return ()

    async def invite(self, ttl_seconds: int) -> Invitation:
        return Invitation(TOKEN, time.time() + 600, "10.0.0.7:7734")

    async def revoke(self, node_id, reason) -> int:
        return 1

    async def run(self, request) -> AsyncIterator:
        raise DaemonStarting("not in this test")
        yield


@pytest.fixture
def home() -> Iterator[Path]:
    with short_tmp("orc-cli-") as folder:
        yield folder


async def command(home: Path, module: str, *args: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "ORC_HOME": str(home)}
    return await asyncio.create_subprocess_exec(sys.executable, "-m", f"orc.node.cli.{module}", *args, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


WAITING = "waiting for the orc-node daemon to start…"


async def said_waiting(process: asyncio.subprocess.Process) -> str:
    """What `process` wrote on stderr up to and including the line saying it waits."""
    seen = ""
    while WAITING not in seen:
        line = await process.stderr.readline()
        assert line, f"it ended without waiting: {seen}"
        seen += line.decode()
    return seen


def late_socket(home: Path, *commands: tuple[str, ...]) -> list[tuple[int, str, str]]:
    """Hold the home's lock, start `commands`, open the control socket once each says it waits."""
    located = Home.locate(home)
    lock = DaemonLock.acquire(located)

    async def scenario():
        server = None
        try:
            processes = [await command(home, *c) for c in commands]
            early = [await asyncio.wait_for(said_waiting(p), 60) for p in processes]
            assert all(p.returncode is None for p in processes)  # waiting, not done without the daemon
            server = await start_control_server(StartingDaemon(), control_socket(located))
            results = []
            for process, before in zip(processes, early):
                out, err = await asyncio.wait_for(process.communicate(), 120)
                results.append((process.returncode, out.decode(), before + err.decode()))
            return results
        finally:
            if server is not None:
                await server.stop(None)

    try:
        return asyncio.run(scenario())
    finally:
        lock.release()


def test_commands_wait_for_a_starting_daemon_and_say_so(home) -> None:
    (peers, status, invite) = late_socket(home, ("orc", "peers", "--json"), ("orc_node", "status", "--json"),
                                          ("orc_node", "invite"))
    code, out, err = peers
    assert code == 0 and json.loads(out) == [], err
    assert WAITING in err
    code, out, err = status
    assert code == 0, err
    data = json.loads(out)
    assert data["mode"] == "starting" and "preparing its models" in data["starting"]
    code, out, err = invite
    assert code == 0 and out.strip() == TOKEN, err
    assert "not running" not in err and "join server at 10.0.0.7:7734" in err


def test_invite_with_no_daemon_is_offline_and_says_so(home) -> None:
    env = {**os.environ, "ORC_HOME": str(home)}
    import subprocess

    assert subprocess.run([sys.executable, "-m", "orc.node.cli.orc_node", "init"], env=env,
                          capture_output=True, timeout=60).returncode == 0
    done = subprocess.run([sys.executable, "-m", "orc.node.cli.orc_node", "invite"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("orc1-") and "daemon is not running" in done.stderr
    # The offline change held the home's lock only while it ran.
    DaemonLock.acquire(Home.locate(home), patience=0.0).release()


def test_a_second_start_exits_3_with_one_line(home) -> None:
    import subprocess

    env = {**os.environ, "ORC_HOME": str(home)}
    assert subprocess.run([sys.executable, "-m", "orc.node.cli.orc_node", "init"], env=env,
                          capture_output=True, timeout=60).returncode == 0
    lock = DaemonLock.acquire(Home.locate(home))  # as a running daemon holds it
    try:
        done = subprocess.run([sys.executable, "-m", "orc.node.cli.orc_node", "start", "--no-mdns", "--no-api", "--listen",
                               "127.0.0.1:45931"], env=env, capture_output=True, text=True, timeout=60)
    finally:
        lock.release()
    assert done.returncode == 3, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"orc: error: another orc-node daemon runs for this home (pid {os.getpid()})"]
