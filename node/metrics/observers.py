"""What parts of the node tell the metrics as things happen: small role-named seams.

The parts that count (the mesh placer, the peer clients, the mesh server's authorizer) sit in
higher layers and take one of these as an optional parameter; the default observes nothing, so
tests and the embedded mode build them without any metrics. `NodeMetrics` implements all of them.
"""

from __future__ import annotations

from typing import Protocol


class PlacementObserver(Protocol):
    """Told where the mesh placer bound each generation."""

    def placed(self, node: str) -> None:
        """A generation was bound to the node named `node` (a first placement or a failover)."""

    def failed_over(self, node: str) -> None:
        """A generation that failed on the node named `node` was moved to another node."""


class RpcObserver(Protocol):
    """Told about mesh calls that failed, on both sides of the wire."""

    def rpc_failed(self, method: str, code: str) -> None:
        """An outgoing call `method` (e.g. "Offer") to a peer ended with gRPC status `code`
        (its name, e.g. "UNAVAILABLE")."""

    def rpc_rejected(self, reason: str) -> None:
        """This node's mesh server refused an incoming call before serving it; `reason` is the
        refusal's kind ("revoked", "unauthenticated", "rate_limited", "resource_exhausted")."""


class Unobserved:
    """The observer that keeps nothing: the default wherever no metrics are wired."""

    def placed(self, node: str) -> None:
        pass

    def failed_over(self, node: str) -> None:
        pass

    def rpc_failed(self, method: str, code: str) -> None:
        pass

    def rpc_rejected(self, reason: str) -> None:
        pass


UNOBSERVED = Unobserved()

__all__ = ["UNOBSERVED", "PlacementObserver", "RpcObserver", "Unobserved"]
