"""The start-up state the control socket waits on: handed over once, in order, waited for with a bound."""

from __future__ import annotations

import asyncio

import pytest

from orc.node.protocol.errors import DaemonStarting
from orc.node.daemon.startup import Phase, Running, Startup


def test_the_phases_follow_what_was_handed_over() -> None:
    startup = Startup(joining=True)
    assert startup.phase is Phase.STARTING and startup.describe() == "joining the mesh"
    membership, running = object(), Running(service=object(), runtimes={}, peers=tuple, placer=object())
    startup.member(membership)
    assert startup.phase is Phase.PREPARING and startup.membership is membership and startup.running is None
    startup.started(running)
    assert startup.phase is Phase.RUNNING and startup.running is running
    startup.failed(RuntimeError("late"))  # a failure after the start changes nothing
    assert startup.phase is Phase.RUNNING
    with pytest.raises(AssertionError):
        startup.member(object())


def test_waiters_get_what_they_need_as_soon_as_it_exists() -> None:
    async def scenario():
        startup = Startup()
        waiting = asyncio.create_task(startup.wait_running(30))
        membership = asyncio.create_task(startup.wait_membership(30))
        await asyncio.sleep(0)
        startup.member("m")
        assert await membership == "m" and not waiting.done()
        running = Running(service=object(), runtimes={}, peers=tuple, placer=object())
        startup.started(running)
        return await waiting is running

    assert asyncio.run(scenario())


def test_a_wait_is_bounded_and_a_failed_start_ends_it_at_once() -> None:
    async def scenario():
        startup = Startup()
        with pytest.raises(DaemonStarting, match="still starting"):
            await startup.wait_membership(0.05)
        waiting = asyncio.create_task(startup.wait_running(30))
        await asyncio.sleep(0)
        startup.failed(ValueError("--model nope: not in this node's catalog"))
        with pytest.raises(DaemonStarting, match="did not start.*--model nope"):
            await waiting
        assert startup.phase is Phase.FAILED

    asyncio.run(scenario())
