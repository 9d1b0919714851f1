"""The mDNS shell's defences, with resolution replaced by a recording fake.

The real thing (python-zeroconf between network namespaces) is tested in
tests/mesh/test_mdns_netns.py; these tests pin down what a flood of bogus services and bad
records can and cannot make the shell do.
"""

from __future__ import annotations

import asyncio
import functools

import pytest
from zeroconf import ServiceStateChange

from orc.node.links import mdns
from orc.node.links.mdns import (
    MAX_CONCURRENT_RESOLUTIONS,
    MAX_QUEUED_RESOLUTIONS,
    SERVICE_TYPE,
    Discovery,
    MdnsDiscovery,
)
from orc.node.links.peer_events import Hint, Source
from orc.node.links.txt import Advert, encode_txt
from orc.node.protocol.description import PROTOCOL_VERSION
from orc.node.protocol.ids import MeshId, NodeId

SELF = NodeId("selfselfselfselfself")
MESH = MeshId("meshmeshmeshmesh")
ADVERT = Advert(PROTOCOL_VERSION, SELF, MESH, 7733, 0, None, None, False, 0, None)


def node(i: int) -> NodeId:
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    return NodeId("n" * 16 + "".join(alphabet[(i >> (5 * k)) & 31] for k in range(4)))


def txt_for(node_id: NodeId, mesh: MeshId = MESH) -> dict[bytes, bytes]:
    record = encode_txt(Advert(PROTOCOL_VERSION, node_id, mesh, 7000, 2, None, None, False, 5, None))
    return {k.encode(): v.encode() for k, v in record.items()}


class FakeInfo:
    """Stands in for AsyncServiceInfo: answers from `RECORDS`, or blocks until released."""

    records: dict[str, tuple[dict[bytes, bytes | None], int | None, list[str]]] = {}
    release: asyncio.Event
    active = 0
    peak = 0
    requested: list[str] = []

    def __init__(self, type_: str, name: str) -> None:
        self.name = name
        self.properties: dict[bytes, bytes | None] = {}
        self.port: int | None = None
        self._addresses: list[str] = []

    async def async_request(self, zc, timeout: float) -> bool:
        cls = type(self)
        cls.requested.append(self.name)
        cls.active += 1
        cls.peak = max(cls.peak, cls.active)
        try:
            if self.name not in cls.records:
                await cls.release.wait()
                return False
            self.properties, self.port, self._addresses = cls.records[self.name]
            return True
        finally:
            cls.active -= 1

    def parsed_scoped_addresses(self, version) -> list[str]:
        return self._addresses


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> type[FakeInfo]:
    FakeInfo.records, FakeInfo.active, FakeInfo.peak, FakeInfo.requested = {}, 0, 0, []
    FakeInfo.release = asyncio.Event()
    monkeypatch.setattr(mdns, "AsyncServiceInfo", FakeInfo)
    return FakeInfo


def in_loop(test):
    """Run an async test body in a fresh event loop (no async pytest plugin needed)."""
    @functools.wraps(test)
    def run(*args, **kwargs):
        return asyncio.run(test(*args, **kwargs))
    return run


def discovery(hints: list[Hint]) -> MdnsDiscovery:
    return MdnsDiscovery(ADVERT, ["10.0.0.9"], None, hints.append)


def added(d: MdnsDiscovery, name: str) -> None:
    d._on_change(None, SERVICE_TYPE, name, ServiceStateChange.Added)


async def settle(d: MdnsDiscovery) -> None:
    while d._tasks:
        await asyncio.gather(*list(d._tasks))


def service(node_id: str) -> str:
    return f"{node_id}.{SERVICE_TYPE}"


def test_it_is_a_discovery() -> None:
    assert isinstance(discovery([]), MdnsDiscovery)
    d: Discovery = discovery([])  # the daemon's seam; checked by type checkers
    assert callable(d.run) and callable(d.update)


@pytest.mark.parametrize(("addresses", "interfaces"), [([], None), (["not-an-ip"], None), (["10.0.0.1"], ["eth0?"])])
def test_bad_construction_is_refused(addresses, interfaces) -> None:
    with pytest.raises(ValueError):
        MdnsDiscovery(ADVERT, addresses, interfaces, lambda hint: None)


@in_loop
async def test_good_records_become_hints_for_each_usable_address(fake) -> None:
    hints: list[Hint] = []
    d = discovery(hints)
    a = node(1)
    fake.records[service(a)] = (txt_for(a), 7000,
                                ["10.0.0.1", "0.0.0.0", "224.0.0.251", "fd00::1", "10.0.0.2", "10.0.0.3", "10.0.0.4"])
    added(d, service(a))
    await settle(d)
    assert [h.address for h in hints] == ["10.0.0.1:7000", "[fd00::1]:7000", "10.0.0.2:7000", "10.0.0.3:7000"]
    assert all(h.node_id == a and h.source is Source.MDNS and h.advert.catalog_version == 5 for h in hints)


@in_loop
async def test_bad_records_are_dropped_and_counted(fake) -> None:
    hints: list[Hint] = []
    d = discovery(hints)
    a, b, c, e = node(1), node(2), node(3), node(4)
    fake.records[service(a)] = ({b"v": b"1", b"id": a.encode()}, 7000, ["10.0.0.1"])  # an older protocol
    fake.records[service(b)] = (txt_for(c), 7000, ["10.0.0.2"])  # TXT names another node
    fake.records[service(c)] = (txt_for(c, MeshId("othermeshothermm")), 7000, ["10.0.0.3"])  # other mesh
    fake.records[service(e)] = (txt_for(e), 7000, ["0.0.0.0"])  # nowhere to dial
    for name in (service(a), service(b), service(c), service(e)):
        added(d, name)
    added(d, service("Not-A-Node-Id"))
    added(d, "x" * 300 + "._orc._tcp.local.")
    added(d, service(SELF))  # ourselves
    await settle(d)
    assert hints == []
    assert d.dropped == {"malformed TXT": 1, "TXT names another node": 1, "other mesh": 1,
                         "no usable address": 1, "not a node id": 2}
    assert sorted(fake.requested) == sorted(service(n) for n in (a, b, c, e))  # junk names never resolved


@in_loop
async def test_a_flood_of_services_is_resolved_a_few_at_a_time_from_a_bounded_queue(fake) -> None:
    d = discovery([])
    for i in range(MAX_QUEUED_RESOLUTIONS + 300):
        added(d, service(node(i)))
    assert len(d._queue) == MAX_QUEUED_RESOLUTIONS
    assert d.dropped["resolution queue full"] == 300
    for _ in range(20):
        await asyncio.sleep(0)
    assert fake.active == MAX_CONCURRENT_RESOLUTIONS
    fake.release.set()
    await settle(d)
    assert fake.peak == MAX_CONCURRENT_RESOLUTIONS
    assert d.dropped["no answer"] == MAX_QUEUED_RESOLUTIONS and d._queue == {}


@in_loop
async def test_a_change_during_resolution_is_resolved_again(fake) -> None:
    hints: list[Hint] = []
    d = discovery(hints)
    a = node(1)
    fake.records[service(a)] = (txt_for(a), 7000, ["10.0.0.1"])
    added(d, service(a))
    d._on_change(None, SERVICE_TYPE, service(a), ServiceStateChange.Updated)  # while still queued
    d._on_change(None, SERVICE_TYPE, service(a), ServiceStateChange.Updated)
    await settle(d)
    assert len(hints) == 2 and fake.requested == [service(a), service(a)]
    d._on_change(None, SERVICE_TYPE, service(a), ServiceStateChange.Removed)  # liveness is not mDNS's job
    await settle(d)
    assert len(hints) == 2


@in_loop
async def test_a_failing_hint_handler_does_not_stop_discovery(fake) -> None:
    calls: list[Hint] = []

    def explode(hint: Hint) -> None:
        calls.append(hint)
        raise RuntimeError("boom")

    d = MdnsDiscovery(ADVERT, ["10.0.0.9"], None, explode)
    a, b = node(1), node(2)
    fake.records[service(a)] = (txt_for(a), 7000, ["10.0.0.1"])
    fake.records[service(b)] = (txt_for(b), 7000, ["10.0.0.2"])
    added(d, service(a))
    added(d, service(b))
    await settle(d)
    assert len(calls) == 2


@in_loop
async def test_update_refuses_another_node_id_and_is_stored_before_run() -> None:
    d = discovery([])
    with pytest.raises(ValueError):
        await d.update(Advert(PROTOCOL_VERSION, node(1), MESH, 7733, 0, None, None, False, 0, None))
    newer = Advert(PROTOCOL_VERSION, SELF, MESH, 7733, 9, None, None, False, 3, None)
    await d.update(newer)
    assert d._service_info(newer).properties[b"rs"] == b"9"


class RecordingZeroconf:
    """Stands in for AsyncZeroconf: records what would have been announced on the LAN."""

    made: list[RecordingZeroconf] = []

    def __init__(self, **kwargs) -> None:
        self.registered: list[str] = []
        self.unregistered: list[str] = []
        self.zeroconf = object()
        type(self).made.append(self)

    async def async_register_service(self, info, **kwargs) -> None:
        self.registered.append(info.name)

    async def async_unregister_service(self, info):
        self.unregistered.append(info.name)
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def async_close(self) -> None:
        pass


class RecordingBrowser:
    def __init__(self, zc, service_type, handlers) -> None:
        self.handlers = handlers

    async def async_cancel(self) -> None:
        pass


@pytest.fixture
def lan(monkeypatch: pytest.MonkeyPatch) -> type[RecordingZeroconf]:
    RecordingZeroconf.made = []
    monkeypatch.setattr(mdns, "AsyncZeroconf", RecordingZeroconf)
    monkeypatch.setattr(mdns, "AsyncServiceBrowser", RecordingBrowser)
    return RecordingZeroconf


async def run_briefly(d: MdnsDiscovery) -> None:
    task = asyncio.create_task(d.run())
    await asyncio.wait_for(d.started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@in_loop
async def test_a_node_announces_itself_and_says_goodbye(lan) -> None:
    await run_briefly(discovery([]))
    (zc,) = lan.made
    assert zc.registered == [service(SELF)] and zc.unregistered == [service(SELF)]


@in_loop
async def test_browsing_only_announces_nothing_and_still_finds_the_mesh(lan, fake) -> None:
    hints: list[Hint] = []
    d = MdnsDiscovery.browse_only(MESH, None, hints.append)
    await run_briefly(d)
    (zc,) = lan.made
    assert zc.registered == [] and zc.unregistered == []
    assert not d.announces
    with pytest.raises(ValueError):
        await d.update(ADVERT)
    a, b = node(1), node(2)
    fake.records[service(a)] = (txt_for(a), 7000, ["10.0.0.1"])
    fake.records[service(b)] = (txt_for(b, MeshId("othermeshothermm")), 7000, ["10.0.0.2"])
    added(d, service(a))
    added(d, service(b))
    await settle(d)
    assert [(h.node_id, h.address) for h in hints] == [(a, "10.0.0.1:7000")]
    assert d.dropped == {"other mesh": 1}
