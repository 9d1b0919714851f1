"""orc's Python API: load an ensemble, run it, iterate its events. The CLI is built on it.

    from orc.node.api import Orc

    orc = Orc()                                   # or Orc(home="/path/to/home")
    spec = orc.load("fan-out-review")             # a name or a path; validated whole
    async for event in orc.run(spec, "input"):    # RunBegan, AgentBegan, TokenStreamed, ...
        ...
    result = orc.run_sync(spec, "input")          # or just the RunResult

Everything runs on this machine's models (the embedded mode), each in a runner process this
`Orc` starts and stops when the run ends: `Orc` is the embedded composition root. What it reads from the home and the caller's folder is a
`orc.node.coordinator.workspace.Workspace`, the same the daemon builds for each run it coordinates.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING

from orc.node.coordinator.journal_lock import holding, journal_in_use
from orc.node.coordinator.journal_replay import journal_state
from orc.node.coordinator.local import LOCAL_NODE_ID
from orc.node.coordinator.workspace import Workspace
from orc.node.protocol.events import RunBegan, RunFinished, RunProgress, RunResult
from orc.node.home import Home
from orc.scheduler.ensemble import EnsembleSpec
from orc.scheduler.errors import RunNotFound, SchedulerError
from orc.scheduler.journal import JournalContents, read_journal
from orc.scheduler.loader import EnsembleLibrary, load_ensemble
from orc.scheduler.profiles import Profiles
from orc.scheduler.run import AgentSucceeded, RunState

if TYPE_CHECKING:  # imported where an engine or runtimes are made: `orc run` through a daemon needs neither
    from orc.node.coordinator.agent_errors import ScriptRunner
    from orc.node.coordinator.engine import BoundRun, Engine
    from orc.node.coordinator.placing import Placer
    from orc.node.models.runners import RunnerRuntime
    from orc.node.models.runtimes.base import ModelRuntime

# Candidates named when a run-id prefix matches several runs: enough to pick from, short
# enough for one message.
MAX_CANDIDATES_SHOWN = 8


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    ensemble: str
    status: str  # the end record's status; "running" or "interrupted" for a journal without one
    started_at: float
    finished_at: float | None
    agents: int
    completed: int


class Orc:
    """One orc home on this machine: its catalog, profiles, ensembles and run journals."""

    def __init__(self, home: str | Path | Home | None = None, *, cwd: Path | None = None,
                 n_threads: int | None = None, seed: int | None = None,
                 runtimes: dict[str, ModelRuntime] | None = None) -> None:
        self.home = home if isinstance(home, Home) else Home.locate(home)
        self.cwd = (cwd or Path.cwd()).absolute()
        self.workspace = Workspace(self.home, self.cwd)
        self.catalog = self.workspace.catalog
        self.project = self.workspace.project
        self._n_threads = n_threads
        self._seed = seed
        self._runtimes: dict[str, ModelRuntime] | None = runtimes  # shared with a daemon: models stay loaded
        # Runtimes this Orc built itself: their runner processes stop when each run ends.
        self._own_runtimes: dict[str, RunnerRuntime] = {}

    # ---- ensembles ----

    @property
    def library(self) -> EnsembleLibrary:
        return self.workspace.library

    def locate(self, name_or_path: str) -> Path:
        """The ensemble file for a name or a path (raises EnsembleNotFound); a relative path is
        relative to this Orc's `cwd`."""
        return self.workspace.locate(name_or_path)

    def load(self, name_or_path: str) -> EnsembleSpec:
        """Load and validate an ensemble (raises EnsembleInvalid / EnsembleNotFound)."""
        return self.workspace.load(name_or_path)

    @property
    def profiles(self) -> Profiles:
        return self.workspace.profiles

    # ---- running ----

    def engine(self, *, journal: bool = True, placer: Placer | None = None, node_id: str = LOCAL_NODE_ID,
               local: bool = False, shipped_scripts: ScriptRunner | None = None) -> Engine:
        """An engine for this home and folder. Without `placer`, it runs everything on this
        machine's `runtimes()`; with one, LLM agents go where it places them and `node_id` is the
        coordinating node's id. `journal`: keep journals under `home.runs_dir`."""
        return self.workspace.engine(runtimes=self.runtimes() if placer is None else {}, placer=placer,
                                     node_id=node_id, local=local, seed=self._seed, journal=journal,
                                     shipped_scripts=shipped_scripts)

    def runtimes(self) -> dict[str, ModelRuntime]:
        """The model runtimes (built on first use; raises ConfigInvalid for a bad config.yaml)."""
        if self._runtimes is None:
            from orc.node.config import read_node_config
            from orc.node.models.runtimes.factory import build_runtimes

            config = read_node_config(self.home.config_file)
            self._own_runtimes = build_runtimes(config.llama_cpp, self.home.config_file, n_threads=self._n_threads,
                                                slots=config.admission.slots, state_dir=self.home.state_dir)
            self._runtimes = dict(self._own_runtimes)
        return self._runtimes

    async def close_runners(self) -> None:
        """Stop the runner processes of the runtimes this Orc built (not those it was given).

        `run` and `resume` call it when their stream ends: a runner belongs to the event loop
        that started it, and each `asyncio.run` (each `run_sync`) has its own.
        """
        await asyncio.gather(*(runtime.close() for runtime in self._own_runtimes.values()))

    async def run(self, spec: EnsembleSpec, run_input: object) -> AsyncIterator[RunProgress]:
        """Run `spec` on `run_input`, yielding progress; the last event is RunFinished.

        Raises RunRefused from the first iteration if `spec` cannot run on this machine."""
        engine = self.engine()
        try:
            bound = await _bound(engine, spec)
            async for event in self.holding_journal(engine.run(bound, run_input)):
                yield event
        finally:
            await self.close_runners()

    async def holding_journal(self, events: AsyncIterator[RunProgress]) -> AsyncIterator[RunProgress]:
        """`events`, with the run's journal marked in use (`journal_in_use`) from its RunBegan
        until the stream ends: `orc runs show` then tells a running run from an interrupted one."""
        with contextlib.ExitStack() as held:
            async for event in events:
                if isinstance(event, RunBegan):
                    # This home's journal of that run, not a path from the event: the event may
                    # come from a daemon, and only a file of this home is ours to open.
                    held.enter_context(holding(self.home.journal_path(event.run_id)))
                yield event

    def run_sync(self, spec: EnsembleSpec, run_input: object) -> RunResult:
        """Run to completion and return the result (blocks; for scripts and notebooks)."""

        async def collect() -> RunResult:
            async for event in self.run(spec, run_input):
                if isinstance(event, RunFinished):
                    return event.result
            raise AssertionError("run ended without RunFinished")

        return asyncio.run(collect())

    # ---- run journals ----

    def journal_file(self, run_id: str) -> Path:
        """The journal of the run `run_id`, or of the one run whose id starts with it (raises
        RunNotFound; for a prefix several runs share, the message lists them)."""
        path = self.home.journal_path(run_id)
        if path.is_file():
            return path
        safe = run_id and all(c.isalnum() or c in "-_" for c in run_id)  # no glob characters, no '/'
        matches = sorted(self.home.runs_dir.glob(f"{run_id}*.journal")) if safe else []
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise RunNotFound(f"no run '{run_id}' under {self.home.runs_dir} (see 'orc runs list')")
        shown = ", ".join(m.stem for m in matches[:MAX_CANDIDATES_SHOWN])
        more = f" and {len(matches) - MAX_CANDIDATES_SHOWN} more" if len(matches) > MAX_CANDIDATES_SHOWN else ""
        raise RunNotFound(f"'{run_id}' starts {len(matches)} run ids: {shown}{more}; give more of the id")

    def journal(self, run_id: str) -> JournalContents:
        return read_journal(self.journal_file(run_id))

    def interrupted(self, contents: JournalContents) -> bool:
        """A run whose journal has no end and that nothing runs any more (its coordinator was
        killed, or the machine went down): `orc runs resume` continues it."""
        return contents.finished is None and not journal_in_use(self.home.journal_path(contents.header.run_id))

    def spec_of(self, contents: JournalContents) -> EnsembleSpec:
        """The ensemble a journaled run used, reloaded from where it was read."""
        source = contents.header.source
        if source and Path(source).is_file():
            return load_ensemble(Path(source), self.library)
        return self.load(contents.header.ensemble)

    def run_state(self, run_id: str) -> tuple[JournalContents, RunState]:
        contents = self.journal(run_id)
        return contents, journal_state(contents, self.spec_of(contents))

    async def resume(self, run_id: str) -> AsyncIterator[RunProgress]:
        """Continue a journaled run: completed agents are reused, the rest runs again."""
        contents = self.journal(run_id)
        engine = self.engine()
        try:
            bound = await _bound(engine, self.spec_of(contents))
            async for event in self.holding_journal(engine.run(bound, contents.header.input, resume=contents)):
                yield event
        finally:
            await self.close_runners()

    def runs(self) -> list[RunSummary]:
        """Every journaled run, newest first; unreadable journals are skipped."""
        summaries = []
        if not self.home.runs_dir.is_dir():
            return []
        for path in self.home.runs_dir.glob("*.journal"):
            try:
                contents = read_journal(path)
            except (SchedulerError, OSError):  # one damaged or vanished journal must not hide the others
                continue
            done = {e.agent for e in contents.events if isinstance(e, AgentSucceeded)}
            end = contents.finished
            status = end.status if end else ("running" if journal_in_use(path) else "interrupted")
            summaries.append(RunSummary(
                contents.header.run_id, contents.header.ensemble, status,
                contents.header.started_at, end.at if end else None,
                len(contents.header.agents) or len({e.agent for e in contents.events}), len(done),
            ))
        return sorted(summaries, key=lambda s: s.started_at, reverse=True)


async def _bound(engine: Engine, spec: EnsembleSpec) -> BoundRun:
    # Binding may hash a model file the first time (hundreds of MB): off the loop.
    return await asyncio.to_thread(engine.preflight, spec)
