"""Joining: the retry schedule (pure, driven with `now`) and the real joiner against a real join server."""

from __future__ import annotations

import asyncio
import socket
from datetime import datetime, timezone

import pytest

from orc.node.links.static import Endpoint
from orc.node.trust.store import IdentityStore
from orc.node.daemon.joining import (
    MAX_CANDIDATES,
    RETRY_FIRST,
    RETRY_MAX,
    JoinFailed,
    JoinPlan,
    join_mesh,
)
from orc.node.trust.membership import Membership


# ---- the schedule ----

def test_a_new_join_server_is_due_at_once_and_a_known_one_keeps_its_schedule() -> None:
    plan = JoinPlan().found("10.0.0.1", 7734, 5.0)
    assert plan.next_due().next_at == 5.0
    plan = plan.failed(plan.next_due(), "connection refused", 5.1)
    assert plan.found("10.0.0.1", 7734, 5.2) is plan  # mDNS repeating itself does not reset the backoff


def test_failures_back_off_from_half_a_second_doubling_to_a_cap() -> None:
    plan, now, waits = JoinPlan().found("10.0.0.1", 7734, 0.0), 0.0, []
    for _ in range(7):
        due = plan.next_due()
        now = due.next_at
        plan = plan.failed(due, "connection refused", now)
        waits.append(plan.next_due().next_at - now)
    assert waits == [RETRY_FIRST, 1.0, 2.0, 4.0, RETRY_MAX, RETRY_MAX, RETRY_MAX]


def test_the_earliest_due_server_goes_first_and_another_mesh_is_never_tried_again() -> None:
    plan = JoinPlan().found("10.0.0.1", 7734, 0.0).found("10.0.0.2", 7734, 0.0)
    first = plan.next_due()
    assert first.host == "10.0.0.1"
    plan = plan.failed(first, "connection refused", 0.0)
    assert plan.next_due().host == "10.0.0.2"
    plan = plan.failed(plan.next_due(), "not the mesh of this token", 0.1, retry=False)
    assert plan.next_due().host == "10.0.0.1"
    plan = plan.failed(plan.next_due(), "connection refused", 0.6)
    assert plan.next_due().host == "10.0.0.1"


def test_the_report_names_every_address_tried_and_its_last_error() -> None:
    assert "no node of that mesh" in JoinPlan().report()
    plan = JoinPlan().found("10.0.0.1", 7734, 0.0).found("fd00::2", 7734, 0.0).found("10.0.0.3", 7734, 0.0)
    plan = plan.failed(plan.candidates[0], "timed out", 0.0).failed(plan.candidates[0], "connection refused", 1.0)
    plan = plan.failed(plan.candidates[1], "not the mesh of this token", 0.0, retry=False)
    report = plan.report()
    assert "10.0.0.1:7734 (2 times, last: connection refused)" in report
    assert "[fd00::2]:7734 (1 time, last: not the mesh of this token)" in report
    assert "10.0.0.3" not in report  # found but never tried


def test_forged_adverts_cannot_make_the_joiner_dial_without_bound() -> None:
    plan = JoinPlan()
    for i in range(MAX_CANDIDATES + 50):
        plan = plan.found(f"10.0.{i // 250}.{i % 250 + 1}", 7734, 0.0)
    assert len(plan.candidates) == MAX_CANDIDATES


# ---- the real joiner ----

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def inviter(tmp_path):
    store = IdentityStore(tmp_path / "inviter")
    identity = store.init_mesh("inviter", datetime.now(timezone.utc))
    return Membership(store, identity)


class Backend:
    def __init__(self, membership: Membership) -> None:
        self.membership = membership

    async def join(self, secret: str, csr_pem: bytes, name: str, peer_address: str):
        return self.membership.join(secret, csr_pem, name, peer_address)


async def serve_join(membership: Membership, port: int):
    from orc.node.rpc.servers import start_join_server

    authority = membership.identity.authority
    server, _ = await start_join_server(Backend(membership), [f"127.0.0.1:{port}"], authority.key_pem,
                                        authority.certificate_pem)
    return server


def test_a_joiner_keeps_trying_until_the_join_server_opens(inviter, tmp_path) -> None:
    token, _ = inviter.invite(600)
    port = free_port()

    async def scenario():
        joining = asyncio.create_task(join_mesh(IdentityStore(tmp_path / "joiner"), token.text, "joiner",
                                                peers=[Endpoint("127.0.0.1", port - 1)], mdns=False, timeout=60))
        await asyncio.sleep(1.5)  # the inviter is still starting: its join server is not there yet
        assert not joining.done()
        server = await serve_join(inviter, port)
        try:
            return await asyncio.wait_for(joining, 60)
        finally:
            await server.stop(None)

    identity = asyncio.run(scenario())
    assert identity.mesh_id == inviter.identity.mesh_id
    assert IdentityStore(tmp_path / "joiner").load().node_id == identity.node_id


def test_a_join_that_finds_nothing_says_what_it_tried_and_how_often(inviter, tmp_path) -> None:
    token, _ = inviter.invite(600)
    port = free_port()
    with pytest.raises(JoinFailed) as failure:
        asyncio.run(join_mesh(IdentityStore(tmp_path / "joiner"), token.text, "joiner",
                              peers=[Endpoint("127.0.0.1", port - 1)], mdns=False, timeout=3))
    message = str(failure.value)
    assert f"127.0.0.1:{port} (" in message and "times, last:" in message  # retried, not tried once
    assert not IdentityStore(tmp_path / "joiner").exists()


def test_a_wrong_token_fails_at_once_without_retrying(inviter, tmp_path) -> None:
    from orc.node.trust.tokens import JoinToken, new_secret

    inviter.invite(600)
    wrong = JoinToken(inviter.identity.authority.pin, new_secret())
    port = free_port()

    async def scenario():
        server = await serve_join(inviter, port)
        try:
            await join_mesh(IdentityStore(tmp_path / "joiner"), wrong.text, "joiner",
                            peers=[Endpoint("127.0.0.1", port - 1)], mdns=False, timeout=60)
        finally:
            await server.stop(None)

    with pytest.raises(JoinFailed, match="refused"):
        asyncio.run(scenario())
    assert inviter.invitations.failed_tries == 1  # one wrong try, not one per retry
