"""`orc-node`: this device as a node.

This release runs ensembles in-process (`orc run`); the mesh daemon (`orc-node start`, joining,
invitations, revocation) is not part of it yet, so `orc-node` reports on this node only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from orc.node.cli.errors import guarded

app = typer.Typer(
    name="orc-node",
    help="This device as an orc node: its hardware, models and folders.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root() -> None:
    """This device as an orc node: its hardware, models and folders."""


def node_status(home: Optional[Path]) -> tuple[dict[str, Any], str]:
    """This node as the `--json` object, and a one-line hardware summary."""
    from orc.node.catalog import Catalog
    from orc.node.engine import LOCAL_NODE_ID
    from orc.node.hardware import probe
    from orc.node.home import Home

    located = Home.locate(home)
    hardware = probe()
    models = Catalog(located.models_dir).entries()
    return {
        "node_id": LOCAL_NODE_ID,
        "mode": "embedded",
        "mesh_id": None,
        "listen": None,
        "home": {"config": str(located.config_dir), "data": str(located.data_dir), "state": str(located.state_dir)},
        "hardware": {
            "arch": hardware.arch, "cores": hardware.cores, "ram_total_bytes": hardware.ram_total_bytes,
            "ram_available_bytes": hardware.ram_available_bytes, "accelerator": hardware.accelerator,
            "system": hardware.system,
        },
        "models": [{"id": m.id, "runtime": m.runtime, "size_bytes": m.size_bytes, "sha256": m.sha256}
                   for m in models],
        "peers": [],
    }, hardware.summary()


@app.command()
def status(
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON on stdout."),
    home: Optional[Path] = typer.Option(None, "--home", envvar="ORC_HOME", show_envvar=True,
                                        help="orc home folder (config, models, runs)."),
    debug: bool = typer.Option(False, "--debug", help="Show a traceback on errors."),
) -> None:
    """Show this node: id, mode, folders, hardware, models.

    In this release every run is in-process on this machine (embedded mode), so the node
    has no mesh, no listen address and no peers.
    """
    with guarded(debug):
        info, summary = node_status(home)
        if as_json:
            typer.echo(json.dumps(info, indent=2))
            return
        models = ", ".join(m["id"] for m in info["models"]) or "none (add one with 'orc models add PATH')"
        rows = [
            ("node", f"{info['node_id']} (embedded mode: runs execute in-process on this machine)"),
            ("mesh", "none"),
            ("hardware", summary),
            ("models", models),
            ("config", info["home"]["config"]),
            ("data", info["home"]["data"]),
            ("runs", str(Path(info["home"]["state"]) / "runs")),
        ]
        for key, value in rows:
            typer.echo(f"{key:<9} {value}")


def main() -> None:
    """Console entry point."""
    app()


if __name__ == "__main__":
    main()
