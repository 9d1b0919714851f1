"""The metrics read from the running node at scrape time: peers by state, admission lanes, runner
restarts, availability and identity; absent before the daemon runs, and never failing the scrape."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

from metrics_helpers import samples, scrape, value

from orc.node.daemon.startup import Running
from orc.node.links.peer_events import LinkState
from orc.node.metrics import NodeMetrics
from orc.node.metrics.sources import PEER_STATES
from orc.node.models.catalog import Catalog
from orc.node.models.runners import RunnerRuntime, RunnerSettings
from orc.node.protocol.ids import NodeId
from orc.node.protocol.messages import PeerView
from orc.node.trust.membership import Membership
from orc.node.trust.store import IdentityStore
from orc.node.worker.served import LaneLoad
from orc.node.worker.service import NodeService

SMOL = "smollm2-135m-instruct"
SCRAPED = {"orc_node_info": "gauge", "orc_peers": "gauge", "orc_admission_slots": "gauge",
           "orc_admission_running": "gauge", "orc_admission_queue_depth": "gauge", "orc_admission_leases": "gauge",
           "orc_models_unavailable": "gauge", "orc_runner_restarts": "counter"}


def peer(state: str, number: int) -> PeerView:
    return PeerView(None, state, f"10.0.0.{number}:7733", None, state != "discovered", 0, NodeId(f"n{number}"))


class Restarts:
    """A runtime that restarts runners (`RunnerRuntime`'s `restart_counts`)."""

    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = counts

    def restart_counts(self) -> dict[str, int]:
        return dict(self.counts)


@dataclass
class FakeService:
    lane_loads: tuple[LaneLoad, ...]
    membership: object = field(default_factory=lambda: SimpleNamespace(
        identity=SimpleNamespace(node_id="abcdefghijklmnopqrst", name="attic")))
    broken: bool = False

    def lanes(self) -> tuple[LaneLoad, ...]:
        if self.broken:
            raise RuntimeError("admission state torn")
        return self.lane_loads


@dataclass
class FakeRunning:
    service: FakeService
    runtimes: dict[str, object]
    views: list[PeerView]
    broken_peers: bool = False

    def peers(self) -> tuple[PeerView, ...]:  # the daemon passes peering.views
        if self.broken_peers:
            raise RuntimeError("peer table busy")
        return tuple(self.views)


def fake() -> FakeRunning:
    lanes = (LaneLoad(SMOL, "llama_cpp", 4, 3, 2, 1, ""),
             LaneLoad("gemma3-270m", "llama_cpp", 1, 0, 0, 0, "its runner crashed 3 times in 10 minutes"),
             LaneLoad(SMOL, "mlx", 1, 1, 0, 0, ""))
    views = [peer("verified", 1), peer("verified", 2), peer("degraded", 3), peer("discovered", 4)]
    return FakeRunning(FakeService(lanes), {"llama_cpp": Restarts({SMOL: 2}), "script": object()}, views)


def test_before_the_daemon_runs_the_scrape_still_renders_without_the_node_families():
    metrics = NodeMetrics(running=lambda: None)
    families = scrape(metrics)
    assert "orc_placements" in families and not set(SCRAPED) & set(families)


def test_the_running_nodes_state_is_read_at_each_scrape():
    running = fake()
    metrics = NodeMetrics(running=lambda: running)
    families = scrape(metrics)
    assert {name: families[name].type for name in SCRAPED} == SCRAPED
    assert samples(metrics, "orc_peers") == {(("state", state),): count for state, count in
                                             {"discovered": 1, "verified": 2, "degraded": 1, "dead": 0,
                                              "gone": 0}.items()}
    assert set(PEER_STATES) == {"discovered", "verified", "degraded", "dead", "gone"}
    smol = {"model": SMOL, "runtime": "llama_cpp"}
    assert value(metrics, "orc_admission_slots", **smol) == 4
    assert value(metrics, "orc_admission_running", **smol) == 3
    assert value(metrics, "orc_admission_queue_depth", **smol) == 2
    assert value(metrics, "orc_admission_leases", **smol) == 1
    assert value(metrics, "orc_admission_running", model=SMOL, runtime="mlx") == 1
    assert samples(metrics, "orc_models_unavailable") == {
        (("model", SMOL), ("runtime", "llama_cpp")): 0, (("model", "gemma3-270m"), ("runtime", "llama_cpp")): 1,
        (("model", SMOL), ("runtime", "mlx")): 0}
    assert samples(metrics, "orc_runner_restarts_total") == {(("model", SMOL), ("runtime", "llama_cpp")): 2}
    [info] = scrape(metrics)["orc_node_info"].samples
    assert info.value == 1 and info.labels["node_id"] == "abcdefghijklmnopqrst" and info.labels["name"] == "attic"
    assert info.labels["version"]

    # Nothing is copied: the next scrape sees the state as it is then.
    running.views.append(peer("dead", 5))
    running.runtimes["llama_cpp"].counts[SMOL] = 3
    assert value(metrics, "orc_peers", state="dead") == 1
    assert value(metrics, "orc_runner_restarts_total", model=SMOL, runtime="llama_cpp") == 3


def test_a_failing_source_is_left_out_logged_once_and_back_when_it_works(caplog):
    running = fake()
    running.broken_peers = True
    metrics = NodeMetrics(running=lambda: running)
    metrics.placed("b")
    with caplog.at_level(logging.INFO, logger="orc.node.metrics.scrape"):
        for _ in range(3):
            families = scrape(metrics)
            assert "orc_peers" not in families
            assert "orc_admission_slots" in families and "orc_placements" in families  # the rest still renders
        running.broken_peers = False
        assert value(metrics, "orc_peers", state="verified") == 2
    messages = [r.getMessage() for r in caplog.records if r.name == "orc.node.metrics.scrape"]
    assert len(messages) == 2 and "peers failed" in messages[0] and "works again" in messages[1]

    running.service.broken = True  # a torn source yields none of its families, not some of them
    families = scrape(metrics)
    assert not {"orc_admission_slots", "orc_admission_running", "orc_models_unavailable"} & set(families)
    assert "orc_peers" in families


def test_a_running_accessor_that_raises_still_leaves_the_pushed_metrics():
    def running():
        raise RuntimeError("start-up state torn")

    metrics = NodeMetrics(running=running)
    metrics.placed("b")
    assert value(metrics, "orc_placements_total", node="b") == 1


def test_the_daemons_running_parts_are_what_the_scrape_reads(tmp_path):
    """The real `Running` (a NodeService, a RunnerRuntime, peering's views) satisfies the sources."""
    store = IdentityStore(tmp_path / "identity")
    membership = Membership(store, store.init_mesh("attic", datetime(2026, 11, 21, 12, 0, tzinfo=timezone.utc)))
    entry = Catalog(tmp_path / "models").prepare(SMOL)
    runtime = RunnerRuntime("llama_cpp", RunnerSettings(threads=1))  # starts no runner until used
    service = NodeService(membership=membership, runtimes={"llama_cpp": runtime}, served=[entry],
                          addresses=lambda: ("10.0.0.1:7733",), known_peers=lambda: ())
    views = (peer("verified", 1),)
    running = Running(service=service, runtimes={"llama_cpp": runtime}, peers=lambda: views,
                      placer=None)  # type: ignore[arg-type]  # a scrape never reads the placer
    metrics = NodeMetrics(running=lambda: running)
    slots = runtime.capacity(entry)
    assert value(metrics, "orc_admission_slots", model=SMOL, runtime="llama_cpp") == slots >= 1
    assert value(metrics, "orc_admission_running", model=SMOL, runtime="llama_cpp") == 0
    assert value(metrics, "orc_models_unavailable", model=SMOL, runtime="llama_cpp") == 0
    assert value(metrics, "orc_peers", state="verified") == 1
    assert "orc_runner_restarts" in scrape(metrics)  # no restart yet: the family, without samples
    assert samples(metrics, "orc_runner_restarts_total") == {}
    [info] = scrape(metrics)["orc_node_info"].samples
    assert info.labels["node_id"] == membership.identity.node_id and info.labels["name"] == "attic"


def test_every_state_of_the_peer_link_machine_is_a_label():
    assert {state.value for state in LinkState} == set(PEER_STATES)


def test_the_documentation_lists_every_metric_and_no_other():
    """docs/api.md's Metrics section names each metric as a query would: counters with
    `_total`, histograms by their base name."""
    text = (Path(__file__).resolve().parents[3] / "docs" / "api.md").read_text()
    documented = set(re.findall(r"^\| `(orc_[a-z_]+)` \|", text, re.MULTILINE))
    families = scrape(NodeMetrics(running=fake))
    exposed = {f"{name}_total" if family.type == "counter" else name
               for name, family in families.items() if not name.endswith("_created")}
    assert documented == exposed
