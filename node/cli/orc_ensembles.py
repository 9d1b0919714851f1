"""`orc ensembles`: list, validate, show and graph the ensembles this folder and home can run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from orc.node.cli.errors import guarded
from orc.node.cli.options import DebugOption, HomeOption, JsonOption, open_orc
from orc.node.cli.phrasing import cut, plural
from orc.node.cli.terminal import echo

ensembles_app = typer.Typer(help="List, validate, show and graph ensembles.", no_args_is_help=True)


@ensembles_app.command("list")
def ensembles_list(as_json: bool = JsonOption, home: Optional[Path] = HomeOption, debug: bool = DebugOption) -> None:
    """List the ensembles orc can find, in the order names resolve."""
    from orc.scheduler.errors import SchedulerError
    from orc.scheduler.loader import load_ensemble

    with guarded(debug):
        orc = open_orc(home)
        rows = []
        for name, path in orc.library.entries():
            try:
                spec = load_ensemble(path, orc.library)
                rows.append({"name": name, "agents": len(spec.agents), "description": spec.description.strip(),
                             "path": str(path), "valid": True})
            except SchedulerError as error:
                rows.append({"name": name, "agents": 0, "description": _first_problem(error),
                             "path": str(path), "valid": False})
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
            return
        if not rows:
            typer.echo("no ensembles found; looked in: " + ", ".join(str(f) for f in orc.library.folders), err=True)
            return
        width = max(len(r["name"]) for r in rows)
        for row in rows:
            summary = row["description"].splitlines()[0] if row["description"] else ""
            if row["valid"]:
                echo(f"{row['name']:<{width}}  {plural(row['agents'], 'agent'):>9}  {cut(summary, 80)}")
            else:
                # The problem, not a description: 'orc ensembles validate NAME' lists them all.
                echo(f"{row['name']:<{width}}  {'INVALID':>9}  {cut(summary, 80)}")


def _first_problem(error: Exception) -> str:
    """An invalid ensemble's first problem, without the file name the row already shows."""
    from orc.scheduler.errors import EnsembleInvalid

    if not isinstance(error, EnsembleInvalid) or not error.problems:
        return str(error).splitlines()[0]
    first = error.problems[0]
    text = (f"agent '{first.agent}': " if first.agent else "") + first.message
    more = len(error.problems) - 1
    return text + (f" (and {plural(more, 'more problem')}: 'orc ensembles validate')" if more else "")


@ensembles_app.command("validate")
def ensembles_validate(
    targets: list[str] = typer.Argument(..., help="Ensemble files or names."),
    home: Optional[Path] = HomeOption,
    debug: bool = DebugOption,
) -> None:
    """Check ensembles without running them.

    Structure (keys, types, dependencies, cycles, guards, loops) is an error (exit 2).
    What depends on this machine (scripts, profiles, models) is a warning (exit 0).
    """
    from orc.node.coordinator.engine import RunRefused
    from orc.scheduler.errors import EnsembleInvalid, EnsembleNotFound

    with guarded(debug):
        orc = open_orc(home)
        engine = None
        failed = False
        for target in targets:
            try:
                spec = orc.load(target)
            except (EnsembleInvalid, EnsembleNotFound) as error:
                failed = True
                echo(f"error: {error}", err=True)
                continue
            if engine is None:
                engine = orc.engine(journal=False)
            warnings = list(spec.warnings)
            try:
                warnings = list(engine.preflight(spec).warnings)
            except RunRefused as refused:
                structural = [p for p in refused.problems if "fallback cycle" in p.message]
                if structural:
                    failed = True
                    for problem in structural:
                        echo(f"error: {problem}", err=True)
                    continue
                warnings += [f"{p} (orc run would refuse this)" for p in refused.problems]
            for warning in warnings:
                echo(f"warning: {warning}", err=True)
            typer.echo(f"ok: {spec.source} ({spec.name}, {plural(len(spec.agents), 'agent')})")
        raise typer.Exit(2 if failed else 0)


@ensembles_app.command("show")
def ensembles_show(name: str = typer.Argument(..., help="Ensemble name or path."), as_json: bool = JsonOption,
                   home: Optional[Path] = HomeOption, debug: bool = DebugOption) -> None:
    """Show an ensemble's agents: what each does, what it depends on, its guards."""
    from orc.node.cli.describe import describe_ensemble, ensemble_json

    with guarded(debug):
        spec = open_orc(home).load(name)
        if as_json:
            typer.echo(json.dumps(ensemble_json(spec), indent=2, default=str))
        else:
            typer.echo(describe_ensemble(spec))


@ensembles_app.command("graph")
def ensembles_graph(name: str = typer.Argument(..., help="Ensemble name or path."),
                    home: Optional[Path] = HomeOption, debug: bool = DebugOption) -> None:
    """Print the ensemble's DAG as Mermaid text (paste it into a ```mermaid block)."""
    from orc.scheduler.dag import to_mermaid

    with guarded(debug):
        typer.echo(to_mermaid(open_orc(home).load(name)), nl=False)
