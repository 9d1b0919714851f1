"""`ModelActor`: one model on one Ray worker, run by orc's own runner process.

The actor is a thin shell around the worker's `RunnerRuntime`, the runtime a node daemon uses:
the model runs in a runner process of its own (a native crash takes the runner, not the
actor), and the generations an actor is sent at once are decoded together as the runner
batches them. The worker's own orc home decides what it serves: its catalog (`ORC_HOME` of
the `ray start` that started the worker, else the platform default) and its config.yaml.

Ray imports this module on the worker by name, so orc must be installed there (the same
version as the driver's). Nothing here imports `ray`: the driver wraps the class with
`ray.remote` (`orc.node.ray.cluster`), so the class is tested as is without a cluster.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from orc.node.config import read_node_config
from orc.node.home import Home
from orc.node.models.catalog import Catalog
from orc.node.models.entry import ModelEntry
from orc.node.models.runtimes.base import (
    ChatMessage,
    GenerationError,
    GenerationEvent,
    GenerationParams,
    ModelRuntime,
)
from orc.node.models.runtimes.factory import build_runtimes


class WrongWeights(GenerationError):
    """This worker's weights under the model's id differ from the driver's: its answers would
    not be the model the ensemble names."""


class ActorUnavailable(GenerationError):
    """This worker cannot run the model now (its runner kept crashing, or the runtime is missing);
    another worker may."""


@dataclass(frozen=True)
class ActorState:
    """What the driver asks of an actor before using it (a plain value: it crosses Ray)."""

    model_id: str
    runtime: str
    sha256: str
    size_bytes: int
    capacity: int  # generations it runs at once (its runner's slots)
    loaded: bool  # its runner is up: the model is warm
    unavailable: str  # why it cannot run the model now; empty when it can
    pid: int  # the actor's worker process (the tests kill it)
    runner_pid: int | None
    running: int = 0  # generations it runs now, for every driver


class ModelActor:
    """Serves model `model_ref` on this worker. `threads`: llama.cpp's CPU threads (None: the
    worker's every core); `slots`: generations decoded together (None: the worker's config)."""

    def __init__(self, model_ref: str, threads: int | None = None, slots: int | None = None,
                 runtimes: dict[str, ModelRuntime] | None = None, home: Home | None = None) -> None:
        self._home = home or Home.locate(None)
        self._catalog = Catalog(self._home.models_dir)
        self._model_ref = model_ref
        if runtimes is None:
            config = read_node_config(self._home.config_file)
            runtimes = dict(build_runtimes(config.llama_cpp, self._home.config_file, n_threads=threads,
                                           slots=slots or config.admission.slots, state_dir=self._home.state_dir))
        self._runtimes = runtimes
        self._entry: ModelEntry | None = None
        self._running = 0

    async def state(self) -> ActorState:
        """The model as this worker holds it; the first call may assemble its file (off the loop)."""
        entry = await self._prepared()
        runtime = self._runtimes.get(entry.runtime)
        unavailable = (f"needs the {entry.runtime} runtime, which this worker does not have" if runtime is None
                       else runtime.unavailable_reason(entry) or "")
        runner = getattr(runtime, "runner", None)
        live = runner(entry.id) if callable(runner) else None
        return ActorState(entry.id, entry.runtime, entry.sha256 or "", entry.size_bytes,
                          max(runtime.capacity(entry), 1) if runtime is not None else 1, live is not None,
                          unavailable, os.getpid(), getattr(live, "pid", None), self._running)

    async def load(self) -> ActorState:
        """Start the model's runner now (warm it), so the first generation does not wait for it."""
        entry = await self._prepared()
        await self._runtime(entry).load(entry)
        return await self.state()

    async def generate(self, messages: Sequence[ChatMessage], params: GenerationParams,
                       sha256: str | None = None) -> AsyncIterator[GenerationEvent]:
        """Stream one generation: `TokenChunk`s, then one `GenerationDone`. `sha256`: the weights
        the driver knows under the model's id; a worker holding other weights refuses (WrongWeights).
        Cancelling the call (`ray.cancel`) cancels the runner's generation."""
        entry = await self._prepared()
        reason = self._runtime(entry).unavailable_reason(entry)
        if reason:
            raise ActorUnavailable(f"model {entry.id!r} is unavailable on this worker: {reason}")
        if sha256 and entry.sha256 and sha256 != entry.sha256:
            raise WrongWeights(f"this worker's {entry.id} is other weights (sha256 {entry.sha256[:12]}…) "
                               f"than the driver's ({sha256[:12]}…)")
        self._running += 1
        try:
            async for event in self._runtime(entry).generate(entry, messages, params):
                yield event
        finally:
            self._running -= 1

    async def close(self) -> None:
        """Stop the runner processes (before the actor is killed on purpose)."""
        await asyncio.gather(*(close() for r in self._runtimes.values()
                               if callable(close := getattr(r, "close", None))))

    def _runtime(self, entry: ModelEntry) -> ModelRuntime:
        runtime = self._runtimes.get(entry.runtime)
        if runtime is None:
            raise ActorUnavailable(f"model {entry.id!r} needs the {entry.runtime} runtime, which this worker does not have")
        return runtime

    async def _prepared(self) -> ModelEntry:
        if self._entry is None:
            # The first use of an embedded model may assemble and hash its file.
            self._entry = await asyncio.to_thread(self._catalog.prepare, self._model_ref)
        return self._entry
