"""`orc-node`: this device as a node of a mesh.

    orc-node init --name attic-pi        create a mesh (its CA and this node's identity)
    orc-node start                       run the daemon in the foreground
    orc-node invite                      print a one-time join token
    orc-node start --join TOKEN          (on another device) join, then run
    orc-node status                      this node, its mesh and its peers
    orc-node revoke NODE_ID              throw a node out of the mesh

Exit codes: 0 ok; 2 invalid input (flags, token, identity files); 3 the mesh or the daemon
cannot be reached, or a join was not admitted.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, List, Optional

import typer

from orc.node.cli.errors import fail, guarded
from orc.node.cli.help_text import reflow_help
from orc.node.cli.options import version_option
from orc.node.cli.orc_node_keys import api_key_app

app = typer.Typer(
    name="orc-node",
    help="This device as a node of an orc mesh.\n\n"
    "First device: 'orc-node init --name NAME', then 'orc-node start'. Others: "
    "'orc-node invite' on the first, then 'orc-node start --join TOKEN' on the new one.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

app.add_typer(api_key_app, name="api-key")

@app.callback()
def _main(version: bool = version_option("orc-node")) -> None:
    # No docstring: the app's help above is what `orc-node --help` shows.
    pass


HomeOption = typer.Option(None, "--home", envvar="ORC_HOME", show_envvar=True,
                          help="orc home folder (config, identity, models, runs).")
DebugOption = typer.Option(False, "--debug", help="Show a traceback on errors (and debug logs for start).")
JsonOption = typer.Option(False, "--json", help="Print machine-readable JSON on stdout.")


def _home(home: Optional[Path]) -> Any:
    from orc.node.home import Home

    return Home.locate(home)


def _control_client(home: Any) -> Any:
    """A client of this home's daemon (waiting for one that is starting), or None when none runs."""
    from orc.node.cli.daemon_link import find_daemon

    return find_daemon(home)


async def _ask(client: Any, method: str, *args: Any) -> Any:
    from orc.node.protocol.errors import DaemonNotRunning

    try:
        return await getattr(client, method)(*args)
    except DaemonNotRunning:
        return _NOT_RUNNING
    finally:
        await client.close()


_NOT_RUNNING = object()


def _daemon_call(home: Any, method: str, *args: Any) -> Any:
    """Call the running daemon; `_NOT_RUNNING` if none answers."""
    client = _control_client(home)
    if client is None:
        return _NOT_RUNNING
    return asyncio.run(_ask(client, method, *args))


def _daemon_or_offline(home: Any, method: str, args: tuple[Any, ...], offline: Any) -> tuple[Any, bool]:
    """(the daemon's reply, True), or with no daemon (`offline()`, False).

    `offline()` changes the identity files, so it runs holding the home's lock shared: a daemon
    cannot start (and load those files) in the middle. A daemon that started between the two
    looks is asked on the second.
    """
    from orc.node.home import offline_change

    for _ in range(2):
        reply = _daemon_call(home, method, *args)
        if reply is not _NOT_RUNNING:
            return reply, True
        with offline_change(home) as held:
            if held:
                return offline(), False
    fail(3, "an orc-node daemon is starting for this home but does not answer yet; try again in a moment")


# ---------------------------------------------------------------- init

@app.command()
def init(
    name: Optional[str] = typer.Option(None, "--name", help="This node's name (default: the host name)."),
    home: Optional[Path] = HomeOption,
    debug: bool = DebugOption,
) -> None:
    """Create a new mesh: its certificate authority and this node's identity.

    Run it once, on the first device. The CA key stays on this device; it signs the
    certificates of the nodes you invite. Then run 'orc-node start'.
    """
    with guarded(debug):
        from datetime import datetime, timezone

        from orc.node.daemon.root import default_node_name
        from orc.node.trust.store import IdentityStore

        located = _home(home)
        located.prepare()
        identity = IdentityStore(located.identity_dir).init_mesh(name or default_node_name(), datetime.now(timezone.utc))
        typer.echo(f"created mesh {identity.mesh_id}")
        typer.echo(f"node      {identity.node_id} ({identity.name}), holds the mesh CA")
        typer.echo(f"identity  {located.identity_dir}")
        typer.echo("next: 'orc-node start', then 'orc-node invite' for each device to add")


# ---------------------------------------------------------------- start

@app.command()
def start(
    listen: Optional[str] = typer.Option(None, "--listen", metavar="HOST:PORT",
                                         help="Where the mesh server listens (default 0.0.0.0:7733)."),
    interface: Optional[str] = typer.Option(None, "--interface", metavar="ADDR",
                                            help="Use only the network interface with this IP address "
                                                 "(listen, mDNS and advertised address)."),
    join: Optional[str] = typer.Option(None, "--join", metavar="TOKEN",
                                       help="Join a mesh with a token from 'orc-node invite' first (only needed once)."),
    name: Optional[str] = typer.Option(None, "--name", help="This node's name when joining (default: the host name)."),
    peer: List[str] = typer.Option([], "--peer", metavar="HOST:PORT",
                                   help="A peer to connect to without mDNS (repeatable; also 'discovery.peers' in "
                                        "the config file)."),
    model: List[str] = typer.Option([], "--model", metavar="ID",
                                    help="Serve only this catalog model (repeatable; default: all of them)."),
    no_mdns: bool = typer.Option(False, "--no-mdns", help="Neither advertise nor browse with mDNS."),
    tag: List[str] = typer.Option([], "--tag", metavar="T", help="A tag ensembles can require (repeatable)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads per model (default: all cores, shared by the models generating at once)."),
    api: Optional[str] = typer.Option(None, "--api", metavar="HOST:PORT",
                                      help="Where the HTTP API (OpenAI-compatible, /metrics) listens "
                                           "(default 127.0.0.1:7780; also 'api.listen' in the config file)."),
    no_api: bool = typer.Option(False, "--no-api", help="Serve no HTTP API."),
    home: Optional[Path] = HomeOption,
    debug: bool = DebugOption,
) -> None:
    """Run this node's daemon in the foreground until SIGTERM or Ctrl-C.

    Logs go to stderr. The node serves its models to the mesh over mutual TLS, finds peers
    with mDNS (and --peer), and lets 'orc run' on this device use the mesh. Its HTTP API
    (OpenAI-compatible: /v1/models, /v1/chat/completions; /metrics; /health) listens on
    127.0.0.1:7780 and wants a key from 'orc-node api-key create'.

    Examples:

      orc-node start

      orc-node start --join orc1-... --name kitchen-pi --model smollm2-135m-instruct

      orc-node start --interface 192.168.1.20 --peer 192.168.1.30:7733

      orc-node start --api 0.0.0.0:7780   (after 'orc-node api-key create')
    """
    with guarded(debug, configure_logging=False):
        from orc.node.cli.daemon_process import configure_logging, hand_over
        from orc.node.home import DaemonLock

        configure_logging(debug)
        for tag_value in tag:
            if not re.fullmatch(r"[A-Za-z0-9._-]{1,32}", tag_value):
                fail(2, f"--tag {tag_value!r}: tags are 1-32 letters, digits, '.', '_' or '-'")
        if threads is not None and threads < 1:
            fail(2, "--threads must be at least 1")
        located = _home(home)
        located.prepare()
        # The lock first, before the heavy imports: from this moment `orc run`, `orc-node invite`
        # and friends started next to this command know a daemon is coming and wait for it.
        lock = DaemonLock.acquire(located)  # HomeLocked: another daemon runs, exit 3 (cli.errors)
        if api is not None and no_api:
            fail(2, "--api and --no-api disagree; give one")
        options = dict(listen=listen, interface=interface, join=join, name=name, peers=list(peer),
                       models=list(model), mdns=not no_mdns, tags=list(tag), threads=threads, api=api, no_api=no_api)
        try:
            # The daemon runs in a fresh interpreter (same pid, the lock kept) without typer and
            # what it brings: about 10 MiB less for as long as the daemon runs.
            hand_over(located, lock, options, debug)
        finally:
            lock.release()  # only if the exec failed


# ---------------------------------------------------------------- join

@app.command("join")
def join_command(
    token: str = typer.Argument(..., help="The token 'orc-node invite' printed on a CA-holding node."),
    name: Optional[str] = typer.Option(None, "--name", help="This node's name (default: the host name)."),
    peer: List[str] = typer.Option([], "--peer", metavar="HOST:PORT",
                                   help="The inviting node's address, if mDNS cannot find it (repeatable)."),
    interface: Optional[str] = typer.Option(None, "--interface", metavar="ADDR",
                                            help="Use only the network interface with this IP address."),
    no_mdns: bool = typer.Option(False, "--no-mdns", help="Do not look for the mesh with mDNS."),
    timeout: float = typer.Option(30.0, "--timeout", help="Seconds to keep trying."),
    home: Optional[Path] = HomeOption,
    debug: bool = DebugOption,
) -> None:
    """Join a mesh with a token, without starting the daemon (exits non-zero if refused)."""
    with guarded(debug):
        from orc.node.daemon.root import default_node_name, parse_peer
        from orc.node.trust.store import IdentityStore
        from orc.node.trust.tokens import JoinToken
        from orc.node.daemon.joining import join_mesh

        JoinToken.parse(token)  # a mistyped token is reported before anything else
        located = _home(home)
        located.prepare()
        store = IdentityStore(located.identity_dir)
        if store.exists():
            fail(2, f"this node is already in mesh {store.load().mesh_id}; move {located.identity_dir} away "
                    "to join another")
        endpoints = [parse_peer(p) for p in peer]
        identity = asyncio.run(join_mesh(store, token, name or default_node_name(), peers=endpoints, mdns=not no_mdns,
                                         interfaces=[interface] if interface else None, timeout=timeout))
        typer.echo(f"joined mesh {identity.mesh_id} as node {identity.node_id} ({identity.name})")
        typer.echo("next: 'orc-node start'")


# ---------------------------------------------------------------- invite

def _parse_duration(text: str) -> float:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text.lower())
    if not match:
        fail(2, f"--ttl {text!r}: give a duration like 90s, 15m, 2h or 1d")
    value = float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    if not 1 <= value <= 7 * 86400:
        fail(2, f"--ttl {text!r}: an invitation lasts between 1 second and 7 days")
    return value


@app.command()
def invite(
    ttl: str = typer.Option("15m", "--ttl", help="How long the token stays valid (90s, 15m, 2h)."),
    home: Optional[Path] = HomeOption,
    debug: bool = DebugOption,
) -> None:
    """Print a one-time join token for a new device (run it on the node that created the mesh).

    The token works once, expires after --ttl, and stops working for everyone after three
    wrong tries. On the new device: 'orc-node start --join TOKEN'.
    """
    with guarded(debug):
        seconds = _parse_duration(ttl)
        located = _home(home)

        def offline() -> Any:
            from orc.node.trust.store import IdentityStore
            from orc.node.trust.membership import Membership

            store = IdentityStore(located.identity_dir)
            return Membership(store, store.load()).invite(seconds)

        reply, by_daemon = _daemon_or_offline(located, "invite", (int(seconds),), offline)
        if not by_daemon:
            token, expires_at = reply
            typer.echo(token.text)
            typer.echo(f"valid until {_clock(expires_at)}; the daemon is not running: the join server opens "
                       "when you run 'orc-node start'", err=True)
            return
        typer.echo(reply.token)
        typer.echo(f"valid until {_clock(reply.expires_at)}, once; join server at {reply.join_address}. "
                   "On the new device: orc-node start --join TOKEN", err=True)


def _clock(unix: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(unix))


# ---------------------------------------------------------------- revoke

@app.command()
def revoke(
    node_id: str = typer.Argument(..., help="The node to throw out (its id, as 'orc peers' shows it)."),
    reason: str = typer.Option("", "--reason", help="Why, for the log (at most 200 characters)."),
    home: Optional[Path] = HomeOption,
    debug: bool = DebugOption,
) -> None:
    """Revoke a node: every peer refuses its calls within seconds (run it on a CA-holding node)."""
    with guarded(debug):
        located = _home(home)
        node_id = node_id.strip().lower()

        def offline() -> int:
            from orc.node.trust.store import IdentityStore
            from orc.node.trust.membership import Membership

            store = IdentityStore(located.identity_dir)
            return Membership(store, store.load()).revoke(node_id, reason)

        seq, by_daemon = _daemon_or_offline(located, "revoke", (node_id, reason), offline)
        if not by_daemon:
            typer.echo(f"revoked {node_id} (revocation log entry {seq}); peers learn it when this daemon starts")
            return
        typer.echo(f"revoked {node_id} (revocation log entry {seq}); peers learn it within seconds")


# ---------------------------------------------------------------- status

def node_status(home: Optional[Path]) -> tuple[dict[str, Any], str]:
    """This node as the `--json` object, and a one-line hardware summary."""
    from orc.node.models.catalog import Catalog
    from orc.node.coordinator.placing import LOCAL_NODE_ID
    from orc.node.models.hardware import probe
    from orc.node.trust.store import IdentityStore

    from orc.node.protocol.errors import DaemonStarting

    located = _home(home)
    folders = {"config": str(located.config_dir), "data": str(located.data_dir), "state": str(located.state_dir)}
    starting: str | None = None
    try:
        status = _daemon_call(located, "status")
    except DaemonStarting as error:  # it answers, but is not up yet: show what the home holds
        status, starting = _NOT_RUNNING, str(error)
    if status is not _NOT_RUNNING:
        from orc.node.protocol.json_views import description_json, peer_json

        peers = _daemon_call(located, "peers")
        description = status.description
        info = {
            **description_json(description),
            "mode": "daemon",
            "listen": list(description.addresses),
            "ca_holder": status.ca_holder,
            "join_address": status.join_address,
            "api": status.api_address,
            "home": folders,
            "peers": [peer_json(p) for p in (peers if peers is not _NOT_RUNNING else ())],
        }
        return info, description.hardware.summary()
    hardware = probe()
    store = IdentityStore(located.identity_dir)
    identity = store.load() if store.exists() else None
    models = Catalog(located.models_dir).entries()
    mode = "starting" if starting else "stopped" if identity else "embedded"
    return {
        "node_id": identity.node_id if identity else None if starting else LOCAL_NODE_ID,
        "name": identity.name if identity else None,
        "mode": mode,
        **({"starting": starting} if starting else {}),
        "mesh_id": identity.mesh_id if identity else None,
        "ca_holder": identity.is_authority if identity else False,
        "listen": None,
        "home": folders,
        "hardware": {
            "arch": hardware.arch, "cores": hardware.cores, "ram_total_bytes": hardware.ram_total_bytes,
            "ram_available_bytes": hardware.ram_available_bytes, "accelerator": hardware.accelerator,
            "system": hardware.system,
        },
        "models": [{"id": m.id, "runtime": m.runtime, "size_bytes": m.size_bytes, "sha256": m.sha256,
                    "loaded": False} for m in models],
        "peers": [],
    }, hardware.summary()


@app.command()
def status(
    as_json: bool = JsonOption,
    home: Optional[Path] = HomeOption,
    debug: bool = DebugOption,
) -> None:
    """Show this node: id, mesh, listen address, hardware, models and peers.

    With the daemon running, it reports the live node; while it starts, 'starting' and what
    it is doing; otherwise what is stored in the home ('embedded' if this device has not
    joined a mesh: 'orc run' then works on its own).
    """
    with guarded(debug):
        info, summary = node_status(home)
        if as_json:
            typer.echo(json.dumps(info, indent=2))
            return
        mode = info["mode"]
        if mode == "embedded":
            node = f"{info['node_id']} (embedded mode: not in a mesh; 'orc-node init' or 'orc-node start --join TOKEN')"
        elif info["node_id"] is None:
            node = "not yet in a mesh (the daemon is joining one)"
        else:
            node = f"{info['node_id']} ({info['name']})" + (", holds the mesh CA" if info.get("ca_holder") else "")
        models = ", ".join(_model_text(m) for m in info["models"]) or "none (add one with 'orc models add PATH')"
        rows = [
            ("node", node),
            ("mesh", info["mesh_id"] or "none"),
            ("daemon", "running, listening on " + ", ".join(info["listen"]) if mode == "daemon"
             else info["starting"] if mode == "starting"
             else "not running ('orc-node start')" if mode == "stopped" else "none"),
            ("hardware", summary),
            ("models", models),
        ]
        if info.get("join_address"):
            rows.append(("join", f"open at {info['join_address']} (an invitation is pending)"))
        if mode == "daemon":
            rows.append(("api", f"{info['api']}/v1 (OpenAI-compatible; keys: 'orc-node api-key')" if info.get("api")
                         else "off"))
        if mode == "daemon":
            live = [p for p in info["peers"] if p["state"] in ("verified", "degraded")]
            rows.append(("peers", f"{len(live)} live of {len(info['peers'])} known"
                         + "".join(f"\n          {p['node_id'] or '?'} {p.get('name') or ''} {p['address']} "
                                   f"{p['state']}" for p in info["peers"])))
        rows += [
            ("config", info["home"]["config"]),
            ("data", info["home"]["data"]),
            ("runs", str(Path(info["home"]["state"]) / "runs")),
        ]
        from orc.node.cli.terminal import echo

        for key, value in rows:
            echo(f"{key:<9} {value}")  # peers' names and addresses: made safe on a terminal


def _model_text(model: dict[str, Any]) -> str:
    text = model["id"]
    if model.get("loaded"):
        speed = model.get("decode_tokens_per_s")
        text += f" (loaded{f', {speed:.0f} tok/s' if speed else ''})"
    return text


# Last, once every command is registered: docstrings wrap to the terminal in `--help`.
reflow_help(app)


def main() -> None:
    """Console entry point."""
    # gRPC's C core logs its own copy of errors orc already reports in one line; --debug and an
    # explicit GRPC_VERBOSITY bring them back.
    if "--debug" not in sys.argv:
        os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    app()


if __name__ == "__main__":
    main()
