"""What a scrape reads from the running node, as the small shapes it needs (duck typing).

The daemon's `orc.node.daemon.startup.Running` satisfies `RunningSources`: its `service` is the
`NodeService` (whose `lanes()` gives `LaneLoad`s), its `runtimes` the `RunnerRuntime`s, its
`peers` the peering's view. The metrics package sits below all of them, so it names only what
it reads here and never imports their classes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol, runtime_checkable

from orc.node.protocol.messages import PeerView

# The states of a peer link (orc.node.links.peer_events.LinkState), each reported even when no
# peer is in it, so a query for `orc_peers{state="degraded"}` finds 0 rather than nothing. No
# peer is ever "gone" in the table (gone means forgotten); it is listed for queries written so.
PEER_STATES = ("discovered", "verified", "degraded", "dead", "gone")


class LaneSource(Protocol):
    """One served model variant's admission lane now (`orc.node.worker.served.LaneLoad`)."""

    @property
    def model(self) -> str: ...  # the catalog id
    @property
    def runtime(self) -> str: ...  # "llama_cpp", "mlx"
    @property
    def slots(self) -> int: ...  # places that generate at once
    @property
    def running(self) -> int: ...
    @property
    def queued(self) -> int: ...
    @property
    def leases(self) -> int: ...  # live Offer reservations
    @property
    def unavailable(self) -> str: ...  # why it cannot run here now; empty when it can


class IdentitySource(Protocol):
    @property
    def node_id(self) -> str: ...
    @property
    def name(self) -> str: ...


class MembershipSource(Protocol):
    @property
    def identity(self) -> IdentitySource: ...


class ServiceSource(Protocol):
    """The node's service: who it is and its admission lanes."""

    @property
    def membership(self) -> MembershipSource: ...

    def lanes(self) -> tuple[LaneSource, ...]: ...


@runtime_checkable
class RestartCounting(Protocol):
    """A runtime whose runners are restarted after they die (`RunnerRuntime`)."""

    def restart_counts(self) -> Mapping[str, int]:
        """Restarts so far by model id."""
        ...


class RunningSources(Protocol):
    """The parts of a running node a scrape reads (`orc.node.daemon.startup.Running`)."""

    @property
    def service(self) -> ServiceSource: ...
    @property
    def runtimes(self) -> Mapping[str, object]: ...  # by runtime name; those RestartCounting are read
    @property
    def peers(self) -> Callable[[], tuple[PeerView, ...]]: ...


__all__ = ["PEER_STATES", "IdentitySource", "LaneSource", "MembershipSource", "RestartCounting", "RunningSources",
           "ServiceSource"]
