"""What the `orc` and `orc-node` commands share: the common options, `--version`, and the API."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

HomeOption = typer.Option(None, "--home", envvar="ORC_HOME", help="orc home folder (config, models, runs).",
                          show_envvar=True)
DebugOption = typer.Option(False, "--debug", help="Show a traceback on errors.")
JsonOption = typer.Option(False, "--json", help="Print machine-readable JSON on stdout.")

def version_text(program: str) -> str:
    """`PROGRAM VERSION`, the version from the installed distribution's metadata."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{program} {version('orc-mesh')}"
    except PackageNotFoundError:
        return f"{program} (version unknown: orc-mesh is not installed, only its source is on the path)"


def version_option(program: str) -> Any:
    """The `--version` option of `program`: prints `version_text(program)` and exits 0."""

    def show(value: bool) -> None:
        if value:
            typer.echo(version_text(program))
            raise typer.Exit(0)

    return typer.Option(False, "--version", callback=show, is_eager=True, help=f"Print {program}'s version and exit.")


def open_orc(home: Optional[Path], **kwargs: Any) -> Any:
    """The embedded API over `home` (imported late: `orc --help` stays fast)."""
    from orc.node.api import Orc

    return Orc(home, **kwargs)
