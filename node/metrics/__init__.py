"""What the node counts and measures, exposed as Prometheus metrics (`orc_*`) at `/metrics`.

Parts of the node report what they observe through small observer methods; state that already
lives somewhere (peers, admission, runners) is read when Prometheus scrapes, not copied.
"""

import importlib
from typing import TYPE_CHECKING, Any

from orc.node.metrics.observers import UNOBSERVED, PlacementObserver, RpcObserver, Unobserved

if TYPE_CHECKING:
    from orc.node.metrics.registry import ENDPOINTS, NodeMetrics
    from orc.node.metrics.sources import RunningSources

# Imported on first use: the observers are all a client (`orc run`, `orc peers`) needs, and the
# registry brings prometheus_client, about 40 ms of every command's start.
_LATER = {"ENDPOINTS": "registry", "NodeMetrics": "registry", "RunningSources": "sources"}


def __getattr__(name: str) -> Any:
    module = _LATER.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = ["ENDPOINTS", "UNOBSERVED", "NodeMetrics", "PlacementObserver", "RpcObserver", "RunningSources",
           "Unobserved"]
