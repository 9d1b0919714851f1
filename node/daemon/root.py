"""The composition root of `orc-node start`: the one place real components are built and wired.

    identity ── Membership ── NodeService ──> mesh server (mTLS, Authorizer)
                    │              │
                    │              └──> Control (Unix socket) <── the `orc` CLI
                    ├── join server (while an invitation is pending; CA holders)
                    └── Peering <── mDNS / static peers / peer exchange

Start-up order (docs/architecture.md): lock the home (a second daemon stops here), open the
control socket (the local commands find the daemon from now on and wait, bounded, for what
they need: `orc.node.daemon.startup`), become a member (joining with a token if needed; invitations
work from here), load the runtimes and check the served models, start the mesh server, then
peering, warm-up, renewal and mDNS.

Every part is built whole, in dependency order, in `_start`: nothing is wired into an object after
it is built (parts that must hear of each other subscribe, e.g. the service to peering's
changes). The join server has its own lifetime (`orc.node.daemon.join_server`).

Each long-running part is one `async def run()` started in a task group; a part that fails is
logged and restarted with backoff, so one bad component never takes the node down. SIGTERM and
SIGINT stop everything cleanly (mDNS goodbye, servers drained), during start-up too.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path

from orc.node.config import NodeConfig, NodeConfigInvalid, read_node_config
from orc.node.coordinator.generations import PeerState
from orc.node.coordinator.placer import MeshPlacer
from orc.node.daemon.errors import ApiPortUnusable, DaemonError, ListenPortInUse
from orc.node.daemon.http_api import api_settings, refuse_a_keyless_open_api, serve_api
from orc.node.daemon.join_server import JoinServer
from orc.node.daemon.startup import Running, Startup
from orc.node.daemon.supervision import cancel_all, supervised
from orc.node.home import DaemonLock, Home
from orc.node.links.errors import BadPeerAddress
from orc.node.links.peer_events import Hint, Source
from orc.node.links.peering import Peering
from orc.node.links.static import Advertise, Endpoint, parse_endpoint
from orc.node.links.txt import advert_for
from orc.node.metrics import NodeMetrics
from orc.node.models.catalog import Catalog, CatalogError, ModelEntry
from orc.node.models.runners import RunnerRuntime
from orc.node.models.runtimes.base import ModelRuntime
from orc.node.protocol.description import DEFAULT_PORT
from orc.node.protocol.errors import NodeError
from orc.node.protocol.ids import NodeId
from orc.node.rpc.connector import MtlsConnector
from orc.node.trust.certificates import make_csr
from orc.node.trust.errors import IdentityError
from orc.node.trust.membership import Membership
from orc.node.trust.store import Identity, IdentityStore
from orc.node.web.runs import RunHub
from orc.node.worker.execution_log import ExecutionLog
from orc.node.worker.service import NodeService
from typing_extensions import assert_never

log = logging.getLogger(__name__)

RENEWAL_CHECK_INTERVAL = 600.0  # seconds; certificates live 30 days and renew with 10 left
SHUTDOWN_GRACE = 2.0


@dataclass(frozen=True)
class DaemonOptions:
    """`orc-node start`'s flags."""

    listen: str | None = None  # HOST:PORT; default 0.0.0.0:7733, or the --interface address
    interface: str | None = None  # an IP address of this machine: listen and advertise only there
    join: str | None = None  # a join token, used only if this node is not a member yet
    name: str | None = None  # the node's name when joining (default: the host name)
    peers: tuple[str, ...] = ()  # static peers, HOST:PORT
    models: tuple[str, ...] = ()  # serve only these catalog models (default: all)
    mdns: bool = True
    tags: tuple[str, ...] = ()
    threads: int | None = None  # CPU threads per model
    api: str | None = None  # HOST:PORT of the HTTP API (default: config.yaml's, else 127.0.0.1:7780)
    no_api: bool = False  # serve no HTTP API


def control_socket(home: Home) -> Path:
    return home.control_socket


class Daemon:
    """One running node. Build with `Daemon(home, options)`, then `await run(stop)`."""

    def __init__(self, home: Home, options: DaemonOptions, lock: DaemonLock | None = None) -> None:
        """`lock`: the home's lock, if the caller already took it (else `run` takes it)."""
        self.home = home
        self._lock = lock
        self.options = options
        self.store = IdentityStore(home.identity_dir)
        # The whole config.yaml is checked here, before `run` takes a socket or a port.
        self.node_config = _node_config(home)
        self.config = self.node_config.discovery
        self.admission = self.node_config.admission
        self.listen = _listen_endpoint(options)
        self.peers = tuple(self.config.peers) + tuple(parse_peer(p) for p in options.peers)
        self.mdns_enabled = options.mdns and self.config.mdns
        self.catalog = Catalog(home.models_dir)
        self.api = api_settings(self.node_config.api, options.api, options.no_api)
        self.api_address: str | None = None  # where the HTTP API serves, once it does
        # What the node counts; `/metrics` serves it. Scrapes read the running node's parts.
        self.metrics = NodeMetrics(running=lambda: self.startup.running)
        self.runs = RunHub(time.time, observe=self.metrics.watched_run)  # every run this node coordinates
        self.mesh_port: int | None = None
        self.startup = Startup(joining=bool(options.join) and not self.store.exists())
        self.join_server = JoinServer(
            host=self.listen.host, port=lambda: self.mesh_port or self.listen.port,
            advertised_ip=lambda: self._advertised_ips()[0], membership=lambda: self.startup.membership,
            on_change=self._description_changed)
        self.node: StartedNode | None = None  # the started node's parts, once it runs
        self._junk_renewers: tuple[NodeId, ...] = ()  # CA-claiming peers that answered Renew with junk

    # ---- start-up ----

    async def _identity(self) -> Identity:
        if self.store.exists():
            if self.options.join:
                log.warning("already a member of a mesh; ignoring --join (move %s away to join another)",
                            self.store.folder)
            return self.store.load()
        if not self.options.join:
            return self.store.load()  # raises NotMember with the advice
        from orc.node.daemon.joining import join_mesh

        name = self.options.name or default_node_name()
        log.info("joining the mesh of the token as %s", name)
        return await join_mesh(self.store, self.options.join, name, peers=self.peers, mdns=self.mdns_enabled,
                               interfaces=self._interfaces())

    def _served(self, runtimes: dict[str, ModelRuntime]) -> list[ModelEntry]:
        """The catalog variants this node serves: all of them, or those `--model` names
        (`ID` for every variant of a model, `ID@RUNTIME` for one), on the runtimes it has."""
        from orc.scheduler.model_refs import split_model_ref

        entries = self.catalog.entries()
        wanted = self.options.models
        unknown = [m for m in wanted if not any(_matches(m, e, split_model_ref) for e in entries)]
        if unknown:
            have = ", ".join(sorted({e.selector for e in entries})) or "no models"
            raise DaemonError(f"--model {', '.join(unknown)}: not in this node's catalog (it has {have}); "
                              "see `orc models`")
        served = []
        for entry in entries:
            if wanted and not any(_matches(m, entry, split_model_ref) for m in wanted):
                continue
            if entry.runtime not in runtimes:
                log.warning("model %s is not served: this node has no %s runtime", entry.selector, entry.runtime)
                continue
            try:
                served.append(self.catalog.prepare(entry.selector))
            except (CatalogError, OSError) as error:  # one broken model must not stop the node
                log.warning("model %s is not served: %s", entry.selector, error)
        return served

    def _runtimes(self) -> dict[str, RunnerRuntime]:
        from orc.node.models.runtimes.factory import build_runtimes

        return build_runtimes(self.node_config.llama_cpp, self.home.config_file, n_threads=self.options.threads,
                              slots=self.admission.slots, state_dir=self.home.state_dir)

    def _interfaces(self) -> list[str] | None:
        return [self.options.interface] if self.options.interface else None

    def _advertised_ips(self) -> list[str]:
        host = self.listen.host
        if not _is_wildcard(host):
            return [host]
        return _local_ips()

    def addresses(self) -> tuple[str, ...]:
        port = self.mesh_port or self.listen.port
        return tuple(str(Endpoint(ip, port)) for ip in self._advertised_ips())

    # ---- the run ----

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until `stop` is set. Raises HomeLocked (at once) if another daemon runs for this home."""
        from orc.node.daemon.control import ControlService, mesh_engines
        from orc.node.rpc.servers import start_control_server

        self.home.prepare()
        lock = self._lock or await asyncio.to_thread(DaemonLock.acquire, self.home)
        try:
            control = ControlService(home=self.home, startup=self.startup, engines=mesh_engines(self.home, self.startup),
                                     open_join_server=self.join_server.open, join_address=self.join_server.address,
                                     watch_run=self.runs.watched, api_address=lambda: self.api_address)
            control_server = await start_control_server(control, str(control_socket(self.home)))
            try:
                async with contextlib.AsyncExitStack() as running:
                    if await self._start_unless_stopped(running, stop):
                        await stop.wait()
                    log.info("stopping")
            finally:
                await control_server.stop(SHUTDOWN_GRACE)
                with contextlib.suppress(OSError):
                    control_socket(self.home).unlink()
                log.info("stopped")
        finally:
            lock.release()

    async def _start_unless_stopped(self, running: contextlib.AsyncExitStack, stop: asyncio.Event) -> bool:
        """Start the node (its parts' cleanups go on `running`); False if `stop` came first."""
        starting = asyncio.create_task(self._start(running), name="start-up")
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not starting.done():
                starting.cancel()
            try:
                await starting
            except BaseException as error:
                self.startup.failed(error)
                if not isinstance(error, asyncio.CancelledError):
                    raise
        return not starting.cancelled()

    async def _start(self, running: contextlib.AsyncExitStack) -> None:
        """Build the node's parts in dependency order, each whole, then start its long-running tasks."""
        await refuse_a_keyless_open_api(self.api, self.home)
        identity = await self._identity()
        membership = Membership(self.store, identity)
        self.startup.member(membership)  # invitations and revocations work from here
        running.push_async_callback(self.join_server.close)
        if membership.invitation_open():
            await self.join_server.open()
        # Importing a runtime and checking model files (hashing, assembling a GGUF) take seconds:
        # off the loop, which meanwhile answers the control socket.
        runtimes = await asyncio.to_thread(self._runtimes)
        # Stopped last (pushed first): the servers and tasks that generate stop before their runners.
        running.push_async_callback(_close_runtimes, runtimes)
        served = await asyncio.to_thread(self._served, runtimes)
        connector = MtlsConnector(membership, observer=self.metrics)
        peering = Peering(membership=membership, connector=connector, own_addresses=self.addresses)
        service = NodeService(
            membership=membership, runtimes=runtimes, served=served,
            addresses=self.addresses, known_peers=peering.known_peers, on_inbound=peering.inbound,
            tags=self.options.tags, slots=self.admission.slots, queue_limit=self.admission.queue,
            audit=ExecutionLog(self.home.state_dir / "executions.jsonl"))
        peering.on_change(service.changed)  # our known peers are in our description
        mesh_server, ports = await self._serve_mesh(service, membership)
        self.mesh_port = ports[0]
        running.push_async_callback(lambda: mesh_server.stop(SHUTDOWN_GRACE))
        log.info("node %s (%s) of mesh %s listening on %s", identity.node_id, identity.name, identity.mesh_id,
                 ", ".join(self.addresses()))
        placer = MeshPlacer(service=service, peers=lambda: _peer_states(peering), link=connector.link, clock=time.monotonic,
                            observer=self.metrics)
        running.push_async_callback(placer.close)
        membership.on_revoked(lambda ids: [placer.forget(node_id) for node_id in ids])
        for endpoint in self.peers:
            peering.hint(Hint(None, str(endpoint), Source.STATIC))
        node = StartedNode(membership, service, peering, mesh_server)
        self.node = node
        self.startup.started(Running(service=service, runtimes=runtimes, peers=peering.views, placer=placer))
        if self.api.enabled:
            web = await serve_api(self.api, self.home, placer, identity.node_id, self.metrics, self.runs,
                                  lambda: self.startup.running, ray_address=self.node_config.ray.address)
            self.api_address = web.address
            running.push_async_callback(web.stop)
            running.push_async_callback(self.runs.close)  # first: the page's runs stop, its streams end
        parts: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("peering", peering.run),
            ("warm-up", service.warm_up),
            ("renewal", lambda: self._renewal(node)),
        ]
        if self.mdns_enabled:
            parts.append(("mdns", lambda: self._mdns(node)))
        tasks = [asyncio.create_task(supervised(name, part), name=name) for name, part in parts]
        running.push_async_callback(cancel_all, tasks)

    async def _serve_mesh(self, service: NodeService, membership: Membership):  # -> (FrontedServer, ports)
        """The mesh server behind its front door, whose caps follow the open-file limit (raised
        to the hard limit first: the usual soft limit of 1024 is soon reached by a busy node)."""
        from orc.node.rpc.authorization import Authorizer
        from orc.node.rpc.connections import mesh_limits
        from orc.node.rpc.front_door import FrontDoor
        from orc.node.rpc.servers import start_mesh_server
        from orc.node.rpc.sockets import PortInUse, raise_open_file_limit

        front_door = FrontDoor(mesh_limits(raise_open_file_limit()))
        authorizer = Authorizer(is_revoked=membership.is_revoked, gate=front_door, observer=self.metrics)
        # Ends the revoked nodes' open calls, then closes their connections.
        membership.on_revoked(lambda ids: [authorizer.cut_off(node_id) for node_id in ids])
        identity = membership.identity
        try:
            return await start_mesh_server(service, [str(self.listen)], identity.key_pem, identity.certificate_pem,
                                           identity.ca_certificate_pem, authorizer, front_door)
        except PortInUse:
            raise ListenPortInUse(f"port {self.listen.port} on {self.listen.host} is in use (another orc-node?); "
                                  "stop it or choose another with --listen HOST:PORT") from None

    # ---- mDNS ----

    def advert(self, service: NodeService):  # -> Advert
        minimal = self.config.advertise is Advertise.MINIMAL
        return advert_for(service.describe(), minimal, self.join_server.port, service.version)

    async def _mdns(self, node: StartedNode) -> None:
        from orc.node.links.mdns import MdnsDiscovery

        changed = asyncio.Event()
        node.service.on_change(changed.set)
        discovery = MdnsDiscovery(self.advert(node.service), self._advertised_ips(), self._interfaces(),
                                  node.peering.hint)
        runner = asyncio.create_task(discovery.run())
        try:
            while not runner.done():
                waiter = asyncio.create_task(changed.wait())
                await asyncio.wait({runner, waiter}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                if changed.is_set() and not runner.done():
                    changed.clear()
                    await asyncio.sleep(0.2)  # coalesce bursts (a warm-up changes several fields)
                    changed.clear()
                    await discovery.update(self.advert(node.service))
            await runner  # re-raise its failure for the supervisor
        finally:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await runner

    def _description_changed(self) -> None:
        """The join port is in this node's mDNS advert: re-announce it (once the node runs)."""
        running = self.startup.running
        if running is not None:
            running.service.changed()

    # ---- certificate renewal ----

    async def _renewal(self, node: StartedNode) -> None:
        while True:
            if node.membership.needs_renewal():
                try:
                    await self._renew(node)
                except (DaemonError, NodeError, IdentityError, OSError) as error:  # no peer renewed it
                    log.warning("certificate renewal failed, retrying later: %s", error)
                except Exception:
                    log.exception("certificate renewal failed unexpectedly; retrying later")
            await asyncio.sleep(RENEWAL_CHECK_INTERVAL)

    async def _renew(self, node: StartedNode) -> None:
        from datetime import datetime, timezone

        from orc.node.rpc.client import PeerClient
        from orc.node.trust.renewal import (
            Candidate,
            NotRenewed,
            Renewed,
            remembered_junk,
            renew_from_peers,
        )
        from orc.node.trust.store import Issuer

        membership, peering = node.membership, node.peering
        identity = membership.identity
        if identity.authority is not None:
            certificate = identity.authority.issue_for_key(identity.key.public_key(), datetime.now(timezone.utc))
            membership.install_certificate(certificate)
            log.info("certificate renewed (self-issued by this CA holder)")
            await self._present_new_certificate(node)
            return
        csr = make_csr(identity.key, identity.name)
        candidates = [Candidate(peer.node_id, peer.addresses[0]) for peer in peering.table.live()
                      if peer.description is not None and peer.description.certificate_authority and peer.addresses]

        async def ask(candidate: Candidate) -> bytes:
            async with PeerClient(candidate.node_id, candidate.address, identity.key_pem, identity.certificate_pem,
                                  identity.ca_certificate_pem) as client:
                return await client.renew(csr)

        outcome = await renew_from_peers(identity, candidates, self.store.load_issuer(), self._junk_renewers, ask,
                                         lambda: datetime.now(timezone.utc))
        self._junk_renewers = remembered_junk(self._junk_renewers, outcome)
        match outcome:
            case Renewed(certificate_pem=certificate, granted_by=granted_by, address=address):
                membership.install_certificate(certificate, Issuer(granted_by, address))
                log.info("certificate renewed by %s", granted_by)
                await self._present_new_certificate(node)
            case NotRenewed():
                raise DaemonError(f"no peer renewed the certificate ({outcome})")
            case other:
                assert_never(other)

    async def _present_new_certificate(self, node: StartedNode) -> None:
        """Serve with the renewed certificate: new connections reach a new server, then the old one
        drains, so peers see no gap. Outgoing links pick the new certificate up on their next dial."""
        from orc.node.rpc.credentials import server_credentials

        identity = node.membership.identity
        await node.mesh_server.serve_credentials(
            server_credentials(identity.key_pem, identity.certificate_pem, identity.ca_certificate_pem),
            SHUTDOWN_GRACE)


@dataclass(frozen=True)
class StartedNode:
    """The parts of a started node that its long-running tasks share."""

    membership: Membership
    service: NodeService
    peering: Peering
    mesh_server: object  # FrontedServer: serves the mesh port; renewal swaps its certificate


async def _close_runtimes(runtimes: dict[str, RunnerRuntime]) -> None:
    """Stop every runner process of the node (their models' memory goes back to the OS)."""
    await asyncio.gather(*(runtime.close() for runtime in runtimes.values()))


def _peer_states(peering: Peering) -> tuple[PeerState, ...]:
    """The coordinator's view of its peers: what the table knows plus each one's last beat."""
    states = []
    for peer in peering.table.peers():
        load, at = peering.load_of(peer.node_id)
        states.append(PeerState(peer.node_id, peer.description, peer.live and peer.verified, load, at,
                                peer.addresses[0] if peer.addresses else None))
    return tuple(states)


def _matches(reference: str, entry: ModelEntry, split: Callable[[str], tuple[str, str | None]]) -> bool:
    try:
        model_id, runtime = split(reference)
    except ValueError:
        return False
    return entry.id == model_id and runtime in (None, entry.runtime)


def _node_config(home: Home) -> NodeConfig:
    try:
        return read_node_config(home.config_file)
    except NodeConfigInvalid as error:
        raise DaemonError(str(error)) from None


def parse_peer(text: str) -> Endpoint:
    try:
        return parse_endpoint(text)
    except BadPeerAddress as error:
        raise DaemonError(f"--peer {text!r}: {error}") from None


def _listen_endpoint(options: DaemonOptions) -> Endpoint:
    if options.interface:
        try:
            ipaddress.ip_address(options.interface)
        except ValueError:
            raise DaemonError(f"--interface {options.interface!r}: give an IP address of this machine, "
                              "for example 192.168.1.20") from None
    if options.listen:
        try:
            endpoint = parse_endpoint(options.listen)
        except BadPeerAddress as error:
            raise DaemonError(f"--listen {options.listen!r}: {error}") from None
        if options.interface and not _is_wildcard(endpoint.host) and endpoint.host != options.interface:
            raise DaemonError(f"--listen {options.listen} and --interface {options.interface} disagree; give one")
        if options.interface and _is_wildcard(endpoint.host):
            endpoint = replace(endpoint, host=options.interface)
        return endpoint
    return Endpoint(options.interface or "0.0.0.0", DEFAULT_PORT)


def _is_wildcard(host: str) -> bool:
    return host in ("0.0.0.0", "::", "")


def _local_ips() -> list[str]:
    """This machine's IPv4 addresses, loopback last (only if there is nothing else)."""
    import ifaddr

    found: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str) and ip.ip not in found:
                found.append(ip.ip)
    outside = [ip for ip in found if not ipaddress.ip_address(ip).is_loopback and not ipaddress.ip_address(ip).is_link_local]
    return outside or ["127.0.0.1"]


def default_node_name() -> str:
    import re
    import socket

    name = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:63].strip("-.")
    return name or "node"


__all__ = ["ApiPortUnusable", "Daemon", "DaemonError", "DaemonOptions", "ListenPortInUse", "control_socket",
           "default_node_name", "parse_peer"]
