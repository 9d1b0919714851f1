"""What the authorizer does with a refused call: a sampled log line and, when called for, closed
connections. A fake clock and a recording gate stand in for time and the front door."""

from __future__ import annotations

import asyncio
import logging

from orc.node.protocol.ids import NodeId
from orc.node.rpc.authorization import DEFAULT_REFUSAL_BURST, Authorizer
from orc.node.trust.rate_limits import RateLimits
from orc.node.protocol.errors import RateLimited, Revoked, Unauthenticated
from orc.node.rpc.log_sampling import SampledLog

REVOKED, FLOODER = NodeId("r" * 20), NodeId("f" * 20)
PEER = "ipv4:127.0.0.1:40001"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class RecordingGate:
    """A ConnectionGate that records what the authorizer asks it to close."""

    def __init__(self) -> None:
        self.closed_connections: list[str] = []
        self.closed_nodes: list[NodeId] = []

    def authenticated(self, peer: str, node_id: NodeId) -> bool:
        return True

    def close_connection(self, peer: str) -> None:
        self.closed_connections.append(peer)

    def close_node(self, node_id: NodeId) -> int:
        self.closed_nodes.append(node_id)
        return 1

    def source(self, peer: str) -> str:
        return "10.0.0.9:5555"


def refusal_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "orc.node.rpc.authorization"]


def test_a_revoked_node_calling_thousands_of_times_writes_two_lines_and_loses_its_connections(caplog) -> None:
    clock, gate = Clock(), RecordingGate()
    authorizer = Authorizer(lambda _: True, clock=clock, gate=gate)

    async def scenario() -> None:
        for call in range(6000):  # 6,000 refused calls in 5 s
            clock.now = 1000.0 + call * 5 / 6000
            authorizer.refused(PEER, REVOKED, Revoked(f"node {REVOKED} has been revoked"), "/orc.v1.Node/Describe",
                               clock.now)
        clock.now = 1061.0
        authorizer.report_refusals()

    caplog.set_level(logging.INFO, logger="orc.node.rpc.authorization")
    asyncio.run(scenario())
    lines = refusal_lines(caplog)
    assert len(lines) == 2, lines
    assert "refused /orc.v1.Node/Describe from " + REVOKED in lines[0] and "10.0.0.9:5555" in lines[0]
    assert lines[1] == f"refused 5999 more call(s) from {REVOKED} in the last minute"
    # Every refusal of a revoked caller closes its connection and every other one it has.
    assert gate.closed_connections == [PEER] * 6000 and set(gate.closed_nodes) == {REVOKED}


def test_the_summary_comes_by_itself_a_minute_later() -> None:
    clock, gate = Clock(), RecordingGate()
    # A short window, so that the event loop's own timer reports it during the test.
    authorizer = Authorizer(lambda _: True, clock=clock, gate=gate, refusal_log=SampledLog(window_s=0.05))

    async def scenario() -> list[str]:
        records: list[str] = []
        handler = logging.Handler()
        handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
        logger = logging.getLogger("orc.node.rpc.authorization")
        logger.addHandler(handler)
        try:
            for _ in range(3):
                authorizer.refused(PEER, REVOKED, Revoked("revoked"), "/orc.v1.Node/Watch", clock.now)
            clock.now += 1.0
            await asyncio.sleep(0.3)
        finally:
            logger.removeHandler(handler)
        return records

    records = asyncio.run(scenario())
    assert records[-1] == f"refused 2 more call(s) from {REVOKED} in the last minute"


def test_a_caller_that_keeps_calling_past_its_rate_loses_its_connections(caplog) -> None:
    clock, gate = Clock(), RecordingGate()
    authorizer = Authorizer(lambda _: False, clock=clock, gate=gate,
                            refusal_limits=RateLimits(rate=1, burst=DEFAULT_REFUSAL_BURST))

    async def scenario() -> None:
        for _ in range(int(DEFAULT_REFUSAL_BURST)):
            authorizer.refused(PEER, FLOODER, RateLimited("slow down"), "/orc.v1.Node/Offer", clock.now)
        assert gate.closed_nodes == [] and gate.closed_connections == []  # an honest burst is only refused
        authorizer.refused(PEER, FLOODER, RateLimited("slow down"), "/orc.v1.Node/Offer", clock.now)
        assert gate.closed_nodes == [FLOODER] and gate.closed_connections == [PEER]
        clock.now += 60  # it calmed down: refused again, but not cut off
        gate.closed_nodes.clear()
        gate.closed_connections.clear()
        authorizer.refused(PEER, FLOODER, RateLimited("slow down"), "/orc.v1.Node/Offer", clock.now)
        assert gate.closed_nodes == []

    caplog.set_level(logging.INFO, logger="orc.node.rpc.authorization")
    asyncio.run(scenario())
    assert len(refusal_lines(caplog)) == 2  # the first of each minute


def test_an_unauthenticated_call_closes_its_connection_only() -> None:
    gate = RecordingGate()
    authorizer = Authorizer(lambda _: False, gate=gate)

    async def scenario() -> None:
        authorizer.refused(PEER, None, Unauthenticated("no certificate"), "/orc.v1.Node/Describe", 0.0)

    asyncio.run(scenario())
    assert gate.closed_connections == [PEER] and gate.closed_nodes == []
