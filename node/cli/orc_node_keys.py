"""`orc-node api-key`: the keys that open this node's HTTP API (create, list, revoke).

The commands change the home's keys file only; a running daemon re-reads it at its next request,
so they work the same with the daemon running or stopped.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional

import typer

from orc.node.cli.errors import guarded
from orc.node.cli.options import DebugOption, HomeOption, JsonOption

api_key_app = typer.Typer(
    name="api-key",
    help="The keys that open this node's HTTP API (everything but /health needs one).\n\n"
    "  orc-node api-key create --name laptop    print a new key, once\n\n"
    "  orc-node api-key list                    the keys, without their secrets\n\n"
    "  orc-node api-key revoke laptop           refused from the next request on",
    no_args_is_help=True,
)


def _keys(home: Optional[Path], *, prepare: bool = False) -> Any:
    from orc.node.home import Home
    from orc.node.web.keys import ApiKeys

    located = Home.locate(home)
    if prepare:
        located.prepare()
    return ApiKeys(located.api_keys_file)


def _key_json(key: Any) -> dict[str, Any]:
    return {"id": key.id, "name": key.name, "created_at": key.created_at, "hint": key.hint}


@api_key_app.command("create")
def create(
    name: Optional[str] = typer.Option(None, "--name", help="A name to tell it by: 1-64 letters, digits, '.', '_' "
                                                            "or '-', unique (default: key-N)."),
    as_json: bool = JsonOption,
    home: Optional[Path] = HomeOption,
    debug: bool = DebugOption,
) -> None:
    """Create a key and print it on stdout, once: it is stored only as a hash.

    Clients send it as 'Authorization: Bearer KEY'; OpenAI clients take it as their API key.

    Examples:

      orc-node api-key create --name laptop

      export OPENAI_API_KEY=$(orc-node api-key create --name notebook)

      orc-node api-key create --json     (id, name, created_at, hint and the key)
    """
    with guarded(debug):
        key, secret = _keys(home, prepare=True).create(name)
        if as_json:
            typer.echo(json.dumps({**_key_json(key), "key": secret}, indent=2))
        else:
            typer.echo(secret)
        typer.echo(f"created API key {key.id} ({key.name}); it is shown this once, store it now. Clients send "
                   "'Authorization: Bearer KEY'; OpenAI clients read OPENAI_API_KEY", err=True)


@api_key_app.command("list")
def list_keys(
    as_json: bool = JsonOption,
    home: Optional[Path] = HomeOption,
    debug: bool = DebugOption,
) -> None:
    """List the keys: id, name, when created, and the start of each (never the whole key).

    Examples:

      orc-node api-key list

      orc-node api-key list --json
    """
    with guarded(debug):
        from orc.node.web.keys import SECRET_PREFIX

        keys = _keys(home).list()
        if as_json:
            typer.echo(json.dumps([_key_json(k) for k in keys], indent=2))
            return
        if not keys:
            typer.echo("no API keys; create one with 'orc-node api-key create --name NAME'", err=True)
            return
        width = max(4, *(len(k.name) for k in keys))
        typer.echo(f"{'ID':<12}  {'NAME':<{width}}  {'CREATED':<16}  KEY")
        for k in keys:
            created = time.strftime("%Y-%m-%d %H:%M", time.localtime(k.created_at))
            typer.echo(f"{k.id:<12}  {k.name:<{width}}  {created:<16}  {SECRET_PREFIX}{k.hint}…")


@api_key_app.command("revoke")
def revoke(
    id_or_name: str = typer.Argument(..., metavar="ID_OR_NAME", help="The key's id or name, as 'list' shows it."),
    home: Optional[Path] = HomeOption,
    debug: bool = DebugOption,
) -> None:
    """Revoke a key: a running daemon refuses it from the next request on, no restart needed.

    Examples:

      orc-node api-key revoke laptop

      orc-node api-key revoke key_1a2b3c4d
    """
    with guarded(debug):
        key = _keys(home).revoke(id_or_name)
        typer.echo(f"revoked API key {key.id} ({key.name}); requests with it are refused from now on")
