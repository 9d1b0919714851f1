"""What the HTTP API asks of the node: the models of the mesh, the ensembles this node can run,
one generation placed on the mesh, one ensemble run (or the resume of one).

A model request becomes one `Generation` handed to the node's placer, the same one the agents of
`orc run` go through: placed on the best node of the mesh, with failover, under the same fair
shares and admission. An `ensemble/NAME` request becomes a run coordinated by this node, with a
journal (`orc runs show RUN_ID` finds it), through the same engine as `orc run`.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from orc.node.coordinator.binding import RunRefused
from orc.node.coordinator.generations import Generation, MeshEvent
from orc.node.coordinator.placing import Placer
from orc.node.coordinator.workspace import Workspace
from orc.node.home import Home
from orc.node.models.catalog import CatalogError
from orc.node.models.runtimes.base import ChatMessage, GenerationParams
from orc.node.protocol.events import RunProgress
from orc.scheduler.ensemble import Placement
from orc.scheduler.errors import RunNotFound, SchedulerError
from orc.scheduler.journal import read_journal
from orc.scheduler.loader import EnsembleLibrary, load_ensemble
from orc.scheduler.profiles import ConfigInvalid

# A request's generation may be tried on this many nodes (the first and two failovers), as an
# agent without `retries:` is.
ATTEMPTS = 3
# An ensemble name as the API accepts it: a name from the library, never a path (a client must
# not make the node read files outside its ensemble folders).
ENSEMBLE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# A run id as the API accepts it: what the engine derives, never a path.
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")


class GatewayError(Exception):
    """A request the node cannot serve; the subclass says how the API answers."""


class UnknownModel(GatewayError):
    """No live node of the mesh serves this model, and no ensemble has this name."""


class EnsembleUnusable(GatewayError):
    """The ensemble exists but cannot run (invalid file, a model nobody serves)."""

    def __init__(self, message: str, mesh_cannot_run: bool) -> None:
        super().__init__(message)
        self.mesh_cannot_run = mesh_cannot_run


@dataclass(frozen=True)
class MeshModel:
    """A model of the mesh as `/v1/models` lists it."""

    id: str
    nodes: tuple[str, ...]  # names of the live nodes that serve it now
    runtimes: tuple[str, ...]


class Gateway:
    """The node seen from its HTTP API: built whole by the daemon once the node runs."""

    def __init__(self, *, home: Home, placer: Placer, node_id: str, queue_timeout_s: float,
                 entropy: Callable[[int], bytes] = os.urandom) -> None:
        """`placer`: the node's (`MeshPlacer`; a `LocalPlacer` in tests of the API alone);
        `queue_timeout_s`: how long a generation may wait for a node to start it."""
        self.home = home
        self._placer = placer
        self._node_id = node_id
        self._queue_timeout_s = queue_timeout_s
        self._entropy = entropy
        # Ensembles resolve as `orc run` from the home's data folder resolves them: the home's
        # ensembles folder and the shipped examples (docs/api.md).
        self._folder = home.data_dir

    # ---- what there is ----

    def models(self) -> tuple[MeshModel, ...]:
        """Every model some live node serves (unavailable ones left out), sorted by id."""
        nodes: dict[str, set[str]] = {}
        runtimes: dict[str, set[str]] = {}
        for node in self._placer.view().nodes:
            if not node.alive:
                continue
            for held in node.models:
                if held.unavailable:
                    continue
                nodes.setdefault(held.id, set()).add(node.name)
                runtimes.setdefault(held.id, set()).add(held.runtime)
        return tuple(MeshModel(model_id, tuple(sorted(nodes[model_id])), tuple(sorted(runtimes[model_id])))
                     for model_id in sorted(nodes))

    def ensembles(self) -> tuple[str, ...]:
        """The names of the ensembles this node's API runs (files are not checked here)."""
        return tuple(sorted({name for name, _ in self._workspace().library.entries() if ENSEMBLE_NAME.fullmatch(name)}))

    def ensemble_files(self) -> tuple[tuple[str, Path], ...]:
        """(name, file) of each ensemble `ensembles()` names."""
        return tuple((name, path) for name, path in self._workspace().library.entries() if ENSEMBLE_NAME.fullmatch(name))

    @property
    def library(self) -> EnsembleLibrary:
        """Where the API's ensemble names (and nested ensembles) resolve."""
        return self._workspace().library

    def serves(self, model: str) -> bool:
        """Some live node serves `model` ("ID" or "ID@RUNTIME")."""
        return self._placer.offers(model)

    # ---- doing ----

    def request_id(self) -> str:
        return self._entropy(12).hex()

    async def generate(self, request_id: str, index: int, model: str, messages: Sequence[ChatMessage],
                       params: GenerationParams) -> AsyncIterator[MeshEvent]:
        """Place and perform one generation (sample `index` of request `request_id`): where it runs
        (`Bound`), when it starts (`Working`), its tokens, its end. Raises UnknownModel, and
        the placer's NoNode (NoRoom when no node started it in time). Closing the iterator cancels
        the generation on its node."""
        if not self.serves(model):
            raise UnknownModel(model)
        sha256 = await asyncio.to_thread(self._local_sha256, model)
        generation = Generation(run_id=f"api-{request_id}", agent=f"sample[{index}]", model=model, sha256=sha256,
                                messages=tuple(messages), params=params, placement=Placement(), rank=0.0,
                                attempts=ATTEMPTS, wait_s=self._queue_timeout_s)
        events = self._placer.generate(generation)
        try:
            async for event in events:
                yield event
        finally:
            await events.aclose()  # type: ignore[attr-defined]

    async def run(self, ensemble: str, run_input: str,
                  seed: int | None) -> tuple[tuple[str, ...], AsyncIterator[RunProgress]]:
        """Start ensemble `ensemble` on `run_input`, coordinated by this node and journaled: its
        sinks (the agents whose outputs are the deliverable) and its progress, `RunBegan` first and
        `RunFinished` last. Raises UnknownModel for a name that is no ensemble here and
        EnsembleUnusable, both before anything runs."""
        if not ENSEMBLE_NAME.fullmatch(ensemble):
            raise UnknownModel(f"ensemble/{ensemble}")
        try:
            engine, bound = await asyncio.to_thread(self._bind, ensemble, seed)
        except RunRefused as error:
            raise EnsembleUnusable(str(error), error.exit_code == 3) from None
        except (SchedulerError, ConfigInvalid, OSError) as error:
            raise EnsembleUnusable(str(error), False) from None
        return bound.spec.sinks(), engine.run(bound, run_input)

    async def resume(self, run_id: str) -> AsyncIterator[RunProgress]:
        """Continue the journaled run `run_id` (its completed agents kept, the others run again),
        as `orc runs resume` does; its ensemble is the file the journal names. Raises
        RunNotFound, and EnsembleUnusable when the ensemble cannot run any more, before
        anything runs. Resumed from the home's folder: profiles of the folder an `orc run` came
        from do not apply."""
        try:
            engine, bound, contents = await asyncio.to_thread(self._bind_journal, run_id)
        except RunRefused as error:
            raise EnsembleUnusable(str(error), error.exit_code == 3) from None
        except RunNotFound:
            raise
        except (SchedulerError, ConfigInvalid, OSError) as error:
            raise EnsembleUnusable(str(error), False) from None
        return engine.run(bound, contents.header.input, resume=contents)

    def _bind_journal(self, run_id: str):  # -> (Engine, BoundRun, JournalContents)
        path = self.home.journal_path(run_id)
        if not RUN_ID.fullmatch(run_id) or not path.is_file():
            raise RunNotFound(f"no run '{run_id}' under {self.home.runs_dir}")
        contents = read_journal(path)
        workspace = self._workspace()
        source = contents.header.source
        if source and Path(source).is_file():
            spec = load_ensemble(Path(source), workspace.library)
        else:
            spec = load_ensemble(workspace.library.resolve(contents.header.ensemble), workspace.library)
        engine = workspace.engine(runtimes={}, placer=self._placer, node_id=self._node_id)
        return engine, engine.preflight(spec), contents

    def _bind(self, ensemble: str, seed: int | None):  # -> (Engine, BoundRun)
        workspace = self._workspace()
        path = dict(workspace.library.entries()).get(ensemble)
        if path is None:
            raise UnknownModel(f"ensemble/{ensemble}")
        engine = workspace.engine(runtimes={}, placer=self._placer, node_id=self._node_id, seed=seed)
        spec = load_ensemble(path, workspace.library)
        return engine, engine.preflight(spec)

    def _workspace(self) -> Workspace:
        return Workspace(self.home, Path(self._folder))

    def _local_sha256(self, model: str) -> str | None:
        """The weights this node has under `model`, if any: peers must serve the same ones."""
        try:
            entry = Workspace(self.home, Path(self._folder)).catalog.get(model)
        except CatalogError:
            return None
        return entry.sha256 if entry else None


def conversation_input(messages: Sequence[ChatMessage]) -> str:
    """An ensemble's input from a conversation: the last user turn alone when that is all there is
    to say, else the whole conversation as a transcript (docs/api.md)."""
    turns = [m for m in messages if m.role != "system"]
    if len(turns) == 1 and turns[0].role == "user" and not any(m.role == "system" for m in messages):
        return turns[0].content
    return "\n\n".join(f"{m.role}: {m.content}" for m in messages)
