"""The metrics read from the running node at each scrape: peers, admission lanes, runners, identity.

This state already lives in its owners (the peering's table, the service's admission, the
runtimes); copying it into gauges on every change would be a second truth that drifts. The
collector reads it when Prometheus asks instead. Before the daemon has started (`running()`
returns None) these families are simply absent; the rest of the scrape still renders.

A scrape must never fail because one source did: each source is read on its own, and one that
raises is logged (once, until it works again) and left out of that scrape.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from importlib import metadata

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from orc.node.metrics.sources import PEER_STATES, RestartCounting, RunningSources

log = logging.getLogger(__name__)

_DISTRIBUTION = "orc-mesh"


def _version() -> str:
    try:
        return metadata.version(_DISTRIBUTION)
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


class RunningCollector(Collector):
    """Yields the scrape-time families from `running()` (None while the daemon starts)."""

    def __init__(self, running: Callable[[], RunningSources | None]) -> None:
        self._running = running
        self._failing: set[str] = set()  # sources whose failure was logged and has not recovered
        self._version = _version()

    def collect(self) -> Iterator[Metric]:
        try:
            running = self._running()
        except Exception:  # noqa: BLE001 - a scrape boundary: the other families still render
            self._failed("running")
            return
        self._recovered("running")
        if running is None:
            return
        for name, read in (("node", self._node), ("peers", self._peers), ("lanes", self._lanes),
                           ("runners", self._runners)):
            try:
                families = list(read(running))  # whole or not at all: no half-filled family
            except Exception:  # noqa: BLE001 - a scrape boundary: one source failing skips only its families
                self._failed(name)
                continue
            self._recovered(name)
            yield from families

    def _failed(self, source: str) -> None:
        if source not in self._failing:
            self._failing.add(source)
            log.warning("metrics: reading the node's %s failed; left out of the scrape until it works",
                        source, exc_info=True)

    def _recovered(self, source: str) -> None:
        if source in self._failing:
            self._failing.discard(source)
            log.info("metrics: reading the node's %s works again", source)

    # ---- the sources ----

    def _node(self, running: RunningSources) -> Iterator[Metric]:
        identity = running.service.membership.identity
        info = GaugeMetricFamily("orc_node_info", "This node: its id, name and orc version (always 1).",
                                 labels=["node_id", "name", "version"])
        info.add_metric([str(identity.node_id), str(identity.name), self._version], 1)
        yield info

    def _peers(self, running: RunningSources) -> Iterator[Metric]:
        counts = dict.fromkeys(PEER_STATES, 0)
        for peer in running.peers():
            # States come from this node's own peer table, not from the peers: a closed set.
            counts[peer.state] = counts.get(peer.state, 0) + 1
        family = GaugeMetricFamily("orc_peers", "Peers this node knows, by link state.", labels=["state"])
        for state, count in counts.items():
            family.add_metric([state], count)
        yield family

    def _lanes(self, running: RunningSources) -> Iterator[Metric]:
        labels = ["model", "runtime"]
        slots = GaugeMetricFamily("orc_admission_slots", "Generations of the model this node runs at once.",
                                  labels=labels)
        active = GaugeMetricFamily("orc_admission_running", "Generations of the model running now.", labels=labels)
        queued = GaugeMetricFamily("orc_admission_queue_depth", "Admitted generations waiting for a slot.",
                                   labels=labels)
        leases = GaugeMetricFamily("orc_admission_leases", "Places held for coordinators by live Offer leases.",
                                   labels=labels)
        unavailable = GaugeMetricFamily(
            "orc_models_unavailable", "1 while the model cannot run here (its runner kept crashing), else 0.",
            labels=labels)
        for lane in running.service.lanes():
            key = [lane.model, lane.runtime]
            slots.add_metric(key, lane.slots)
            active.add_metric(key, lane.running)
            queued.add_metric(key, lane.queued)
            leases.add_metric(key, lane.leases)
            unavailable.add_metric(key, 1 if lane.unavailable else 0)
        yield from (slots, active, queued, leases, unavailable)

    def _runners(self, running: RunningSources) -> Iterator[Metric]:
        family = CounterMetricFamily("orc_runner_restarts", "Runner processes started again after one died.",
                                     labels=["model", "runtime"])
        for name, runtime in sorted(running.runtimes.items()):
            if isinstance(runtime, RestartCounting):
                for model, count in sorted(runtime.restart_counts().items()):
                    family.add_metric([model, name], count)
        yield family


__all__ = ["RunningCollector"]
