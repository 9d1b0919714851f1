"""`orc models`: the models this node can run (list, add, remove, convert)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from orc.node.cli.errors import guarded
from orc.node.cli.options import DebugOption, HomeOption, JsonOption, open_orc

models_app = typer.Typer(help="The models this node can run (the catalog).", invoke_without_command=True)


@models_app.callback()
def models_list(ctx: typer.Context, as_json: bool = JsonOption, home: Optional[Path] = HomeOption,
                on: Optional[str] = typer.Option(None, "--on", metavar="ray://HEAD:PORT",
                                                 help="List a Ray cluster's models instead (docs/ray.md)."),
                debug: bool = DebugOption) -> None:
    """List the local catalog: id, runtime, size, SHA-256 digest (or, with --on, a Ray cluster's
    models: which worker serves which, with how many actors)."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = {"home": home if _typed(ctx, "home") else None}
        return
    if on is not None:
        from orc.node.cli.orc_ray import print_ray_models

        with guarded(debug):
            print_ray_models(on, as_json)
        return
    with guarded(debug):
        entries = open_orc(home).catalog.entries()
        if as_json:
            typer.echo(json.dumps([{"id": e.id, "runtime": e.runtime, "size_bytes": e.size_bytes,
                                    "sha256": e.sha256, "source": e.source, "path": str(e.path),
                                    "chat": e.chat, "description": e.description,
                                    "converted_from": e.converted_from} for e in entries], indent=2))
            return
        if not entries:
            typer.echo("no models; add one with 'orc models add PATH'", err=True)
            return
        width = max(len(e.id) for e in entries)
        typer.echo(f"{'ID':<{width}}  {'RUNTIME':<9}  {'SIZE':>9}  {'SHA-256':<16}  SOURCE")
        for e in entries:
            digest = (e.sha256 or "(not assembled)")[:16]
            typer.echo(f"{e.id:<{width}}  {e.runtime:<9}  {_size(e.size_bytes):>9}  {digest:<16}  {e.source}")


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _typed(ctx: typer.Context, name: str) -> bool:
    """Whether option `name` was typed on the command line (not taken from ORC_HOME or a default)."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"  # typer vendors click: compare by name


def _group_home(ctx: typer.Context, home: Optional[Path]) -> Optional[Path]:
    """`orc models --home DIR add ...` and `orc models add ... --home DIR` mean the same."""
    if _typed(ctx, "home"):
        return home
    return (ctx.obj or {}).get("home") or home


@models_app.command("add")
def models_add(ctx: typer.Context, path: Path = typer.Argument(..., help="A GGUF file or an MLX (mlx-lm) model folder."),
               model_id: Optional[str] = typer.Option(None, "--id", help="Catalog id (default: from the file name)."),
               home: Optional[Path] = HomeOption, debug: bool = DebugOption) -> None:
    """Add a model to this node's catalog (its SHA-256 is computed once).

    A GGUF file runs on llama.cpp, an mlx-lm model folder on MLX. Giving an MLX folder the
    id of a GGUF model (or the other way round) makes it a second variant of that model.
    """
    with guarded(debug):
        try:
            size = path.stat().st_size
        except OSError:
            size = 0  # the catalog reports the problem
        if size > 256 << 20:
            typer.echo(f"computing the SHA-256 of {path} ({_size(size)}); this is done once…", err=True)
        entry = open_orc(_group_home(ctx, home)).catalog.add(path, model_id)
        typer.echo(f"added {entry.id} ({entry.runtime}, {_size(entry.size_bytes)}, sha256 {entry.sha256[:16]}…)")


@models_app.command("remove")
def models_remove(ctx: typer.Context, model_id: str = typer.Argument(..., help="The model's catalog id."),
                  home: Optional[Path] = HomeOption, debug: bool = DebugOption) -> None:
    """Remove a user-added model from the catalog (the file itself is kept)."""
    with guarded(debug):
        for selector in open_orc(_group_home(ctx, home)).catalog.remove(model_id):
            typer.echo(f"removed {selector}")


@models_app.command("convert")
def models_convert(ctx: typer.Context, model_id: str = typer.Argument(..., help="The GGUF model's catalog id."),
                   to: str = typer.Option(..., "--to", help="The target: mlx, q8_0 or q4_0."),
                   new_id: Optional[str] = typer.Option(None, "--id", help="Catalog id of the result (default: "
                                                        "for mlx the same id, as a second variant; for q8_0 and "
                                                        "q4_0 the id with -q8_0 or -q4_0)."),
                   home: Optional[Path] = HomeOption, debug: bool = DebugOption) -> None:
    """Convert a GGUF model of the catalog and register the result.

    --to mlx: an MLX model folder in <home>/models/mlx/ID/; it becomes the model's mlx variant,
    so a Mac serves the same model natively. Only llama-architecture GGUFs (Q4_0, Q4_1, Q8_0 or
    not quantized) convert. Needs mlx-lm: orc's 'mlx' extra.

    --to q8_0 or q4_0: the GGUF requantized by llama.cpp into <home>/models/gguf/NEW_ID.gguf, a
    model of its own (ID-q8_0 or ID-q4_0). On CPUs without AMX, SmolLM2's Q8_0 decodes faster
    than its Q4_1 at the same quality, and Q4_0 much faster at some loss of quality; see
    docs/runtimes.md ("Which quantization") for the measurements. Name the new id in your
    ensembles' model fields to use it.

    Examples:

      orc models convert smollm2-135m-instruct --to mlx

      orc models convert smollm2-135m-instruct --to q8_0
    """
    with guarded(debug):
        done = open_orc(_group_home(ctx, home)).catalog.convert(model_id, to=to, model_id=new_id)
        entry = done.entry
        verb = "converted" if done.created else "already converted"
        typer.echo(f"{verb} {model_id} -> {entry.selector} ({_size(entry.size_bytes)}, "
                   f"sha256 {entry.sha256[:16]}…) in {entry.path}")
