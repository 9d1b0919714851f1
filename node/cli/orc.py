"""`orc`: run ensembles and inspect models, ensembles and runs.

Exit codes (docs/cli.md): 0 every agent succeeded; 1 the run finished with failed agents;
2 invalid input (ensemble, flags, files); 3 the mesh cannot run it (no node has the model).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from orc.node.cli.errors import fail, guarded
from orc.node.cli.help_text import reflow_help
from orc.node.cli.options import DebugOption, HomeOption, JsonOption, open_orc, version_option
from orc.node.cli.orc_ensembles import ensembles_app
from orc.node.cli.orc_models import models_app
from orc.node.cli.orc_ray import ray_address, ray_engine
from orc.node.cli.phrasing import date, duration, plural
from orc.node.cli.terminal import echo

app = typer.Typer(
    name="orc",
    help="Run ensembles of small models and scripts on your own devices.\n\n"
    "Start with 'orc ensembles list', then 'orc run NAME \"your input\"'.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
OnOption = typer.Option(None, "--on", metavar="ray://HEAD:PORT",
                        help="Run on a Ray cluster (its head's port; docs/ray.md) instead of the mesh.")
runs_app = typer.Typer(help="Journaled runs: list, show, resume.", no_args_is_help=True)
app.add_typer(ensembles_app, name="ensembles")
app.add_typer(models_app, name="models")
app.add_typer(runs_app, name="runs")

@app.callback()
def _main(version: bool = version_option("orc")) -> None:
    # No docstring: the app's help above is what `orc --help` shows.
    pass


# ---------------------------------------------------------------- run

def _read_input(positional: Optional[str], text: Optional[str], file: Optional[Path],
                default_task: Optional[str], stdin: bool = True) -> object:
    """Input precedence: positional > --input > -f FILE > stdin > the ensemble's default_task."""
    if positional is not None:
        return positional
    if text is not None:
        return text
    if file is not None:
        limit = 16 << 20  # a larger input would not fit any small model's context anyway
        try:
            with open(file, "rb") as stream:
                data = stream.read(limit + 1)
        except FileNotFoundError:
            fail(2, f"input file {file} not found")
        except IsADirectoryError:
            fail(2, f"input file {file} is a folder")
        except OSError as error:
            fail(2, f"cannot read input file {file}: {error.strerror or error}")
        if len(data) > limit:
            fail(2, f"input file {file} is larger than 16 MiB")
        return data.decode("utf-8", errors="replace")
    if stdin and sys.stdin is not None and not sys.stdin.isatty():  # None when stdin is closed
        try:
            data = sys.stdin.read(16 << 20)
        except (OSError, ValueError):
            data = ""
        if data.strip():
            return data
    if default_task is not None:
        return default_task
    fail(2, "no input: pass it as an argument, --input TEXT, -f FILE or on stdin "
            "(this ensemble has no default_task)")
    raise AssertionError


@app.command()
def run(
    ensemble: str = typer.Argument(..., help="Ensemble name (see 'orc ensembles list') or path to a YAML file."),
    input_arg: Optional[str] = typer.Argument(None, metavar="[INPUT]", help="The input text."),
    input_text: Optional[str] = typer.Option(None, "--input", "-i", help="The input text."),
    file: Optional[Path] = typer.Option(None, "--file", "-f", help="Read the input from a file."),
    as_json: bool = JsonOption,
    explain: bool = typer.Option(False, "--explain", help="Print where each agent will run, and why, first."),
    local: bool = typer.Option(False, "--local", help="Run in-process on this machine's models only."),
    on: Optional[str] = OnOption,
    watch: Optional[str] = typer.Option(None, "--watch", help="Stream this agent's tokens (default: the first to start)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress on stderr."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Sampling seed, for reproducible output."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads per model (default: all cores, shared by the models generating at once)."),
    home: Optional[Path] = HomeOption,
    debug: bool = DebugOption,
) -> None:
    """Run an ensemble and print its deliverable.

    Input comes from INPUT, else --input, else -f FILE, else stdin, else the ensemble's
    default_task. Progress goes to stderr, the deliverable to stdout.

    Examples:

      orc run perspectives "Should we rewrite the billing service in Rust?"

      orc run document-digest -f notes.txt --json

      git diff | orc run ./review.yaml

      orc run perspectives --on ray://10.0.0.5:6379
    """
    with guarded(debug), contextlib.ExitStack() as stack:
        orc = open_orc(home, seed=seed, n_threads=threads)
        spec = orc.load(ensemble)  # invalid ensembles are refused here, naming file and agent
        if watch is not None:
            _check_watch(watch, spec)
        run_input = _read_input(input_arg, input_text, file, spec.default_task)
        cluster = ray_address(orc, on, local)
        client = None if local or cluster else _daemon(orc)
        if cluster is not None:
            # A Ray cluster: the embedded engine, its generations placed on the cluster's actors.
            engine = ray_engine(orc, cluster, threads, stack)
            bound = engine.preflight(spec)
            warnings = list(bound.warnings)
            events = engine.run(bound, run_input, explain=explain)
        elif client is None:
            # Embedded mode: no daemon, this machine's models only.
            engine = orc.engine()
            bound = engine.preflight(spec)
            warnings = list(bound.warnings)
            events = engine.run(bound, run_input, explain=explain)
        else:
            from orc.node.protocol.messages import RunRequest

            # The daemon binds the ensemble to the mesh; what the command line resolved (the
            # file, the folder) it takes as given.
            warnings = list(spec.warnings) + list(orc.profiles.warnings)
            request = RunRequest(reference=_reference(spec), input=_as_text(run_input), cwd=str(orc.cwd),
                                 seed=seed, explain=explain)
            events = _closing(client, request)
        if not quiet:
            for warning in warnings:
                echo(f"warning: {warning}", err=True)
        result = _drive(orc, events, show=not (quiet or as_json), watch=watch)
        _print_result(result, as_json)
        if quiet and not as_json:
            _report_failures(result)
        raise typer.Exit(result.exit_code)


@app.command()
def plan(
    ensemble: str = typer.Argument(..., help="Ensemble name (see 'orc ensembles list') or path to a YAML file."),
    input_arg: Optional[str] = typer.Argument(None, metavar="[INPUT]", help="The input (its size shapes the estimates)."),
    input_text: Optional[str] = typer.Option(None, "--input", "-i", help="The input text."),
    file: Optional[Path] = typer.Option(None, "--file", "-f", help="Read the input from a file."),
    as_json: bool = JsonOption,
    on: Optional[str] = OnOption,
    home: Optional[Path] = HomeOption,
    debug: bool = DebugOption,
) -> None:
    """Show where each agent would run and why, without running anything.

    For every agent: the candidate nodes with their estimated finish
    times (queue, model load, prompt, generation, network), the node
    chosen, and why every other node was ruled out (no such model,
    memory does not fit, local_only, missing tag, dead, model unavailable:
    its runner kept crashing there, distrusted: caught lying to this node
    about its speed or results).

    Needs the daemon ('orc-node start'); without it, everything runs on
    this machine. Exits 3 if some agent has no node that can run it.

    Examples:

      orc plan triage

      orc plan ./review.yaml -f patch.diff --json
    """
    from orc.node.cli.render import plan_json, render_plan

    with guarded(debug), contextlib.ExitStack() as stack:
        orc = open_orc(home)
        spec = orc.load(ensemble)
        given = input_arg is not None or input_text is not None or file is not None or spec.default_task is not None
        run_input = _read_input(input_arg, input_text, file, spec.default_task, stdin=False) if given else None
        cluster = ray_address(orc, on, False)
        client = None if cluster else _daemon(orc)
        if cluster is not None:
            # The Ray cluster's actors, as many as its workers' orc-model resources ask for.
            engine = ray_engine(orc, cluster, None, stack, journal=False)
            planned = engine.forecast(engine.preflight(spec), run_input)
        elif client is None:
            # No daemon: the same forecast, with this machine as the only node.
            engine = orc.engine(journal=False)
            planned = engine.forecast(engine.preflight(spec), run_input)
        else:
            planned = asyncio.run(_daemon_plan(client, spec, run_input, orc.cwd))
        if as_json:
            typer.echo(json.dumps(plan_json(planned, spec), indent=2, ensure_ascii=False))
        else:
            echo(render_plan(planned, spec=spec))
        unplaceable = [p.agent for p in planned.agents if p.kind == "llm" and not p.candidates]
        if unplaceable:
            raise typer.Exit(3)


async def _daemon_plan(client: Any, spec: Any, run_input: object, cwd: Path) -> Any:
    """The daemon's forecast of `spec` (it has the mesh); exit 3 if it sends none."""
    from orc.node.protocol.events import RunPlanned
    from orc.node.protocol.messages import RunRequest

    request = RunRequest(reference=_reference(spec), input=_as_text(run_input), cwd=str(cwd), plan=True)
    async for event in _closing(client, request):
        if isinstance(event, RunPlanned):
            return event
    fail(3, "the daemon sent no plan")


def _reference(spec: Any) -> str:
    """The ensemble as the daemon must find it: the absolute path of the file this command
    loaded. The daemon runs in its own folder; it never looks a name or a relative path up."""
    return str(spec.source.absolute())


def _check_watch(watch: str, spec: Any) -> None:
    """`--watch NAME` must name an agent of the ensemble (or an agent nested in one of them)."""
    from orc.node.cli.phrasing import plural
    from orc.scheduler.errors import did_you_mean

    names = [agent.name for agent in spec.agents]
    top = watch.split("/", 1)[0].split("[", 1)[0]
    if top in names:
        return
    hint = did_you_mean(top, names)
    fail(2, f"--watch {watch!r}: {spec.name} has no agent of that name"
            + (f"; {hint}" if hint else "")
            + f" ({plural(len(names), 'agent')}: {', '.join(names)})")


def _as_text(value: object) -> Optional[str]:
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value)


def _daemon(orc: Any) -> Any:
    """A client for this home's daemon, or None when none runs (embedded mode).

    A daemon that is starting counts as running: the command waits for its socket (bounded)
    and the daemon holds the run until its models are ready, so nothing silently runs in-process.
    """
    from orc.node.cli.daemon_link import find_daemon

    return find_daemon(orc.home)


async def _closing(client: Any, request: Any) -> Any:
    try:
        async for event in client.run(request):
            yield event
    finally:
        await client.close()


def _report_failures(result: Any) -> None:
    """Even when quiet, say which agents failed: exit 1 alone explains nothing."""
    from orc.scheduler.run import AgentStatus

    failed = [(name, r.error) for name, r in result.results if r.status is AgentStatus.FAILED]
    for name, error in failed:
        echo(f"orc: agent '{name}' failed: {error}", err=True)


def _drive(orc: Any, events: Any, *, show: bool, watch: Optional[str]) -> Any:
    """Consume a run's events, showing progress on stderr (live on a terminal, plain lines
    otherwise); the run's result."""
    from orc.node.cli.render import progress_view, render_plan
    from orc.node.cli.terminal import is_terminal
    from orc.node.protocol.events import RunFinished, RunPlanned

    view = progress_view(sys.stderr, watch=watch, terminal=is_terminal(sys.stderr)) if show else None

    async def consume() -> Any:
        result = None
        stream = orc.holding_journal(events)
        try:
            async for event in stream:
                if view is not None:
                    view.show(event)
                elif isinstance(event, RunPlanned):  # asked for with --explain: shown even when quiet
                    echo(render_plan(event), err=True)
                if isinstance(event, RunFinished):
                    result = event.result
        finally:
            await stream.aclose()
            await events.aclose()
            await orc.close_runners()  # an embedded run's runner processes end with it
        return result

    try:
        result = asyncio.run(consume())
    finally:
        if view is not None:
            view.close()  # a live region leaves the terminal as it found it, also on Ctrl-C
    if result is None:
        fail(1, "the run ended without a result")
    return result


def _print_result(result: Any, as_json: bool) -> None:
    from orc.node.cli.render import render_deliverable

    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2, ensure_ascii=False, default=str))
    else:
        text = render_deliverable(result.deliverable)
        if text:
            echo(text)


# ---------------------------------------------------------------- peers

@app.command()
def peers(as_json: bool = JsonOption, home: Optional[Path] = HomeOption, debug: bool = DebugOption) -> None:
    """List the other nodes of the mesh as this node's daemon sees them.

    For each: node id, name, address, hardware, models (measured decode tokens/s when
    loaded), load, when it was last heard from, and whether its identity is verified.
    """
    with guarded(debug):
        from orc.node.cli.daemon_link import find_daemon
        from orc.node.cli.peers import peers_table
        from orc.node.home import Home
        from orc.node.protocol.json_views import peer_json

        client = find_daemon(Home.locate(home))
        if client is None:
            fail(3, "no orc-node daemon runs for this home; start it with 'orc-node start' "
                    "(peers are only known to a running node)")

        async def ask() -> Any:
            try:
                return await client.peers()
            finally:
                await client.close()

        found = asyncio.run(ask())
        if as_json:
            typer.echo(json.dumps([peer_json(p) for p in found], indent=2))
            return
        if not found:
            typer.echo("no peers yet (mDNS finds nodes of this mesh on the LAN; add others with "
                       "'orc-node start --peer HOST:PORT')", err=True)
            return
        for line in peers_table(found):
            echo(line)


# ---------------------------------------------------------------- runs

@runs_app.command("list")
def runs_list(as_json: bool = JsonOption, home: Optional[Path] = HomeOption, debug: bool = DebugOption) -> None:
    """List journaled runs, newest first."""
    with guarded(debug):
        runs = open_orc(home).runs()
        if as_json:
            typer.echo(json.dumps([r.__dict__ for r in runs], indent=2))
            return
        if not runs:
            typer.echo("no runs yet", err=True)
            return
        for r in runs:
            took = duration(r.finished_at - r.started_at) if r.finished_at else "-"
            agents = f"{r.completed}/{plural(r.agents, 'agent')}"
            echo(f"{r.run_id}  {date(r.started_at)}  {r.status:<22} {took:>8}  {agents:<10}  {r.ensemble}")


@runs_app.command("show")
def runs_show(run_id: str = typer.Argument(..., help="Run id (a unique prefix is enough)."), as_json: bool = JsonOption,
              home: Optional[Path] = HomeOption, debug: bool = DebugOption) -> None:
    """Show one journaled run: input, each agent's result, timing and usage."""
    from orc.node.cli.describe import describe_run, run_json

    with guarded(debug):
        orc = open_orc(home)
        contents, state = orc.run_state(run_id)
        interrupted = orc.interrupted(contents)
        if as_json:
            typer.echo(json.dumps(run_json(contents, state, interrupted=interrupted), indent=2, ensure_ascii=False,
                                  default=str))
        else:
            echo(describe_run(contents, state, interrupted=interrupted))


@runs_app.command("resume")
def runs_resume(run_id: str = typer.Argument(..., help="Run id (a unique prefix is enough)."), as_json: bool = JsonOption,
                quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress on stderr."),
                on: Optional[str] = OnOption,
                home: Optional[Path] = HomeOption, debug: bool = DebugOption) -> None:
    """Finish a run from its journal: completed agents are reused, the others run again."""
    with guarded(debug), contextlib.ExitStack() as stack:
        orc = open_orc(home)
        contents = orc.journal(run_id)
        end = contents.finished
        if end is not None and end.status == "completed":
            # Every agent completed or was skipped: nothing to run, so no model is needed either.
            echo(f"run {contents.header.run_id} ({contents.header.ensemble}) completed {date(end.at)}; "
                 f"nothing to resume ('orc runs show {contents.header.run_id}' shows its results)", err=True)
            raise typer.Exit(0)
        run_id = contents.header.run_id
        cluster = ray_address(orc, on, False)
        client = None if cluster else _daemon(orc)
        if cluster is not None:
            # A run whose driver was lost: its journal is here, its generations go to the cluster.
            engine = ray_engine(orc, cluster, None, stack)
            bound = engine.preflight(orc.spec_of(contents))
            events = engine.run(bound, contents.header.input, resume=contents)
        elif client is None:
            events = orc.resume(run_id)
        else:
            from orc.node.protocol.messages import RunRequest

            # The full run id, and the file of the ensemble it ran: the daemon looks neither up.
            spec = orc.spec_of(contents)
            events = _closing(client, RunRequest(reference=_reference(spec), input=None, cwd=str(orc.cwd),
                                                 resume=run_id))
        result = _drive(orc, events, show=not (quiet or as_json), watch=None)
        _print_result(result, as_json)
        if quiet and not as_json:
            _report_failures(result)
        raise typer.Exit(result.exit_code)


# Last, once every command is registered: docstrings wrap to the terminal in `--help`.
reflow_help(app)


def main() -> None:
    """Console entry point."""
    if "--debug" not in sys.argv:
        os.environ.setdefault("GRPC_VERBOSITY", "NONE")  # orc reports gRPC errors itself, in one line
    try:
        app()
    except BrokenPipeError:
        # The reader of our stdout went away (`orc run ... | head`): not an error worth a message.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)


if __name__ == "__main__":
    main()
