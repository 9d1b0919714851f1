"""The run engine: binds ensembles, forecasts their placement, and runs them.

Built whole by a composition root (the embedded `orc.node.api.Orc`, or the daemon's control
service through its engine factory): the node it coordinates for, the placer (the daemon's mesh,
or None for this machine alone), the clock and the source of randomness all come in. A run goes

    EnsembleSpec --preflight--> BoundRun --run--> RunBegan, AgentBegan, ..., RunFinished

`preflight` (`binding`) decides everything that depends on this machine, once; `run` journals
the run and hands it to the run loop (`run_loop`), whose agents do their work in `agent_kinds`
(prompts from `prompts`, limits from `limits`); a resume replays the journal (`journal_replay`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from types import MappingProxyType

from orc.node.coordinator.agent_kinds import AgentKinds, ScriptRunner
from orc.node.coordinator.binding import Binder, BoundRun, RunRefused
from orc.node.coordinator.budget import Meter, spent_before
from orc.node.coordinator.forecasting import forecast_run
from orc.node.coordinator.journal_replay import resumed_state
from orc.node.coordinator.placing import LocalPlacer, Placer
from orc.node.coordinator.run_loop import Coordinator, RunContext, drive
from orc.node.models.catalog import Catalog
from orc.node.models.runtimes.base import ModelRuntime
from orc.node.models.runtimes.script import run_script
from orc.node.protocol.events import AgentEnded, RunBegan, RunPlanned, RunProgress
from orc.scheduler.ensemble import EnsembleSpec
from orc.scheduler.journal import JournalContents, JournalWriter, RunHeader
from orc.scheduler.loader import EnsembleLibrary
from orc.scheduler.profiles import Profiles
from orc.scheduler.run import AgentStatus, Usage, derive_run_id, initial_state

RUN_ID_NONCE_BYTES = 8  # two runs of one ensemble started in the same second still get distinct ids


class Engine:
    """Runs bound ensembles for one coordinating node; complete once constructed."""

    def __init__(
        self,
        *,
        catalog: Catalog,
        profiles: Profiles,
        library: EnsembleLibrary,
        runs_dir: Path | None,
        node_id: str,
        placer: Placer | None,
        clock: Callable[[], float],
        entropy: Callable[[int], bytes],
        local: bool = False,
        runtimes: Mapping[str, ModelRuntime] = MappingProxyType({}),
        project_dir: Path | None = None,
        workdir: Path | None = None,
        seed: int | None = None,
        scripts: ScriptRunner = run_script,
        shipped_scripts: ScriptRunner | None = None,
    ) -> None:
        """
        `placer`: the mesh LLM agents are placed on (this node included); None: this machine's
        `runtimes` only. `local`: with a mesh, every generation stays on this node (`--local`).
        `runs_dir`: where journals go (None: no journal). `clock`: wall-clock seconds, for the
        journal and the events. `entropy(n)`: n random bytes, for run ids. `workdir`: the
        folder scripts run in (the caller's). `scripts`: runs a script agent's file.
        `shipped_scripts`: runs the scripts of ensembles that allow shipping them
        (`ship_scripts: true`) elsewhere; None: every script runs through `scripts`.
        """
        self.node_id = node_id
        self.library = library
        self.local = local
        self._runs_dir = runs_dir
        self._clock = clock
        self._entropy = entropy
        self._placer: Placer = placer if placer is not None else LocalPlacer(catalog, runtimes, node_id)
        self._binder = Binder(catalog=catalog, profiles=profiles, library=library, runtimes=runtimes, mesh=placer,
                              local=local, project_dir=project_dir)
        self._here = Coordinator(node_id, places_later=placer is not None, clock=clock)
        self._ships_scripts = shipped_scripts is not None
        self._kinds = AgentKinds(placer=self._placer, binder=self._binder, here=self._here, local=local, seed=seed,
                                 workdir=workdir or Path.cwd(), scripts=scripts, shipped=shipped_scripts)

    def preflight(self, spec: EnsembleSpec) -> BoundRun:
        """`spec` bound to this machine and its mesh (its `warnings` are for the user), or RunRefused.

        Missing scripts, profiles and nested ensembles exit 2; models nobody has exit 3. The
        first look at a model may hash its file: call it off the event loop.
        """
        return self._binder.bind(spec)

    def forecast(self, bound: BoundRun, run_input: object) -> RunPlanned:
        """Where every agent of `bound` would run if the run started now, and why."""
        return forecast_run(bound, run_input, self._placer, self.node_id, self.local, self._clock(),
                            ships_scripts=self._ships_scripts)

    async def run(self, bound: BoundRun, run_input: object, *, resume: JournalContents | None = None,
                  explain: bool = False) -> AsyncIterator[RunProgress]:
        """Run `bound` on `run_input` (or continue the journaled run `resume`), yielding progress.

        With `explain`, the forecast (RunPlanned) comes first. The last event is always
        `RunFinished`. Closing the iterator early cancels every running agent; the journal
        keeps what had finished.
        """
        spec = bound.spec
        if explain:
            yield self.forecast(bound, run_input)
        now = self._clock()
        writer: JournalWriter | None = None
        if resume is not None:
            run_id = resume.header.run_id
            state = resumed_state(resume, spec)
            if self._runs_dir is not None:
                writer = await asyncio.to_thread(JournalWriter.reopen, self._runs_dir / f"{run_id}.journal")
        else:
            run_id = derive_run_id(spec.name, now, self._entropy(RUN_ID_NONCE_BYTES))
            state = initial_state(run_id, spec, run_input, now)
            if self._runs_dir is not None:
                header = RunHeader(run_id, spec.name, str(spec.source) if spec.source else None, run_input, now,
                                   spec.names)
                writer = await asyncio.to_thread(JournalWriter.create, self._runs_dir / f"{run_id}.journal", header)
        yield RunBegan(run_id, spec.name, spec.names, writer.path if writer else None, now, resumed=resume is not None)
        for name, record in state.agents.items():
            if record.status is AgentStatus.COMPLETED:
                yield AgentEnded(name, record, reused=True)
        queue: asyncio.Queue[object] = asyncio.Queue()
        # A resume starts with what the journal shows was spent; its seconds count afresh.
        meter = Meter(spec.budget, self._clock, now, spent_before(resume) if resume is not None else Usage())
        context = RunContext(run_id, "", 0, now, queue.put_nowait, meter)
        try:
            async for event in drive(state, bound, context, queue, writer, self._kinds.attempt, self._here):
                yield event
        finally:
            if writer is not None:
                writer.close()


__all__ = ["BoundRun", "Engine", "RunRefused"]
