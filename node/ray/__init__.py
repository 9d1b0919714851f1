"""The same ensembles on a Ray cluster: a placer whose nodes are Ray actors.

    address.py   `ray://HOST:PORT` (the cluster's head, as `ray start --head --port` prints it)
    errors.py    what can go wrong reaching or using a cluster (`RayError`)
    actor.py     `ModelActor`: one model on one Ray worker, in orc's own runner process
    cluster.py   the driver's side: connect, read the workers' `orc-model:ID` resources, keep the actors
    placer.py    `RayPlacer`, the engine's `Placer` on a cluster: least loaded actor, warm first

The engine, the run state machine, the journal and the script agents are the ones every run
uses; only where a generation runs differs. docs/ray.md says when to use Ray and how.
`ray` itself is an optional dependency (`pip install 'orc-mesh[ray]'`): it is imported when a
cluster is first used, never by importing this package.
"""

from orc.node.ray.address import parse_address
from orc.node.ray.errors import ClusterUnreachable, RayError, RayNotInstalled

__all__ = ["ClusterUnreachable", "RayError", "RayNotInstalled", "parse_address"]
