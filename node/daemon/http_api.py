"""The daemon's HTTP API (docs/api.md): its settings from config.yaml and the flags, the refusal to
open it beyond loopback without a key, and the server built over the running node's placer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace

from orc.node.config import ApiConfig, listen_endpoint
from orc.node.coordinator.placing import Placer
from orc.node.daemon.errors import ApiPortUnusable, DaemonError
from orc.node.daemon.startup import Running
from orc.node.home import Home
from orc.node.metrics import NodeMetrics
from orc.node.web.runs import RunHub


def api_settings(config: ApiConfig, api: str | None, no_api: bool) -> ApiConfig:
    """config.yaml's `api:` with `--api HOST:PORT` / `--no-api` applied; DaemonError for bad flags."""
    if no_api:
        if api:
            raise DaemonError("--api and --no-api disagree; give one")
        return replace(config, enabled=False)
    if api:
        try:
            return replace(config, enabled=True, listen=listen_endpoint(api))
        except ValueError as error:
            raise DaemonError(f"--api {api!r}: {error}") from None
    return config


async def refuse_a_keyless_open_api(config: ApiConfig, home: Home) -> None:
    """DaemonError if the API would listen beyond loopback while the home has no API key: anyone
    who reaches the port would find an API nobody can use but which still invites guessing, and
    the owner has plainly not set it up yet."""
    from orc.node.web.keys import ApiKeys

    if config.enabled and not config.loopback_only and not await asyncio.to_thread(ApiKeys(home.api_keys_file).exists):
        raise DaemonError(f"the API would listen on {config.listen} (beyond this machine) without any API key; "
                          "create one first with `orc-node api-key create`, or keep it on 127.0.0.1")


async def serve_api(config: ApiConfig, home: Home, placer: Placer, node_id: str, metrics: NodeMetrics, runs: RunHub,
                    running: Callable[[], Running | None], ray_address: str | None = None):  # -> WebServer
    """Start the HTTP API over the running node's placer; ApiPortUnusable if it cannot listen.
    `runs`: the daemon's run hub (the API's ensemble runs and the dashboard's go through it);
    `running()`: the running node, whose description and peers the dashboard shows;
    `ray_address`: the Ray cluster of the config, whose models the dashboard lists."""
    from orc.node.web.app import build_app
    from orc.node.web.gateway import Gateway
    from orc.node.web.guard import Guard
    from orc.node.web.keys import ApiKeys
    from orc.node.web.mesh_view import MeshSnapshot
    from orc.node.web.responses import Drain
    from orc.node.web.server import ApiUnavailable, WebServer

    def mesh() -> MeshSnapshot:
        node = running()
        return MeshSnapshot(node.service.describe(), node.peers()) if node is not None else MeshSnapshot(None, ())

    gateway = Gateway(home=home, placer=placer, node_id=node_id, queue_timeout_s=config.queue_timeout_s)
    guard = Guard(config, ApiKeys(home.api_keys_file), time.monotonic)
    drain = Drain()
    web = WebServer(build_app(gateway=gateway, guard=guard, metrics=metrics, config=config, runs=runs, mesh=mesh,
                              drain=drain, ray_address=ray_address), config, drain)
    try:
        await web.start()
    except ApiUnavailable as error:
        raise ApiPortUnusable(str(error)) from None
    return web
