"""`orc run --on ray://HEAD:PORT` and `orc plan --on ...`: the engine of an embedded run, given a
Ray cluster as its placer (`orc.node.ray`). The journal is this home's, scripts and `local_only`
agents run on this machine, and the events are the ones every run yields, so the progress
view, `--json` and the exit codes are the mesh's.
"""

from __future__ import annotations

import contextlib
from typing import Any

from orc.node.cli.errors import fail
from orc.node.cli.terminal import echo


def ray_address(orc: Any, on: str | None, local: bool) -> str | None:
    """The cluster a run goes to: `--on`, else the config's `ray: address:` unless `--local`."""
    if on is not None:
        if local:
            fail(2, "--on and --local contradict each other: --local runs on this machine only")
        return on
    if local:
        return None
    from orc.node.config import read_node_config

    return read_node_config(orc.home.config_file).ray.address


def ray_engine(orc: Any, address: str, threads: int | None, stack: contextlib.ExitStack,
               journal: bool = True) -> Any:
    """An engine whose LLM generations run on the cluster at `address` (joined now, left when
    `stack` closes); ClusterUnreachable (exit 3) when no cluster answers there."""
    from orc.node.config import read_node_config
    from orc.node.coordinator.placing import LocalPlacer
    from orc.node.ray.cluster import Cluster, RaySettings
    from orc.node.ray.placer import DRIVER_ID, RayPlacer
    from orc.node.ray.scripts import RayScripts

    configured = read_node_config(orc.home.config_file).ray
    cluster = Cluster(RaySettings(address, threads=threads or configured.threads))
    cluster.connect()
    stack.callback(cluster.close)
    here = LocalPlacer(orc.catalog, orc.runtimes(), DRIVER_ID)  # for agents that must stay on this machine
    return orc.engine(placer=RayPlacer(cluster, here), node_id=DRIVER_ID, journal=journal,
                      shipped_scripts=RayScripts(cluster))


def print_ray_models(address: str, as_json: bool) -> None:
    """`orc models --on`: each model a live worker of the cluster serves, its actors and tags
    (from the workers' resources: nothing is loaded to answer)."""
    import json

    from orc.node.ray.cluster import Cluster, RaySettings

    cluster = Cluster(RaySettings(address))
    cluster.connect()
    try:
        rows = [{"id": model_id, "worker": w.name, "node_id": w.node_id, "actors": count, "tags": sorted(w.tags)}
                for w in cluster.workers() if w.alive for model_id, count in sorted(w.models.items())]
    finally:
        cluster.close()
    if as_json:
        echo(json.dumps(rows, indent=2))
        return
    if not rows:
        echo("no worker of the cluster serves a model; start one with "
             "ray start --resources '{\"orc-model:MODEL_ID\": 1}'", err=True)
        return
    width = max(len(r["id"]) for r in rows)
    echo(f"{'ID':<{width}}  ACTORS  WORKER")
    for r in rows:
        tags = f"  (tags: {', '.join(r['tags'])})" if r["tags"] else ""
        echo(f"{r['id']:<{width}}  {r['actors']:>6}  {r['worker']}{tags}")
