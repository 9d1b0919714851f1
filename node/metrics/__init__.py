"""What the node counts and measures, exposed as Prometheus metrics (`orc_*`) at `/metrics`.

Parts of the node report what they observe through small observer methods; state that already
lives somewhere (peers, admission, runners) is read when Prometheus scrapes, not copied.
"""

from orc.node.metrics.observers import UNOBSERVED, PlacementObserver, RpcObserver, Unobserved
from orc.node.metrics.registry import ENDPOINTS, NodeMetrics
from orc.node.metrics.sources import RunningSources

__all__ = ["ENDPOINTS", "UNOBSERVED", "NodeMetrics", "PlacementObserver", "RpcObserver", "RunningSources",
           "Unobserved"]
