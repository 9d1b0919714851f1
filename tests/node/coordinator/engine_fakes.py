"""In-process stand-ins for what the engine drives: a model runtime and a catalog, a script
runner, a mesh, and an event loop whose clock jumps instead of waiting.

With `run_virtual`, a fake's `asyncio.sleep(30)` or a 300 s timeout passes at once: whenever
nothing is ready to run and no thread is working, the loop's clock jumps to the next timer.
Timeouts are then tested by how far the clock went, never by sleeping.
"""

from __future__ import annotations

import asyncio
import selectors
import textwrap
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from orc.node.coordinator.engine import Engine
from orc.node.coordinator.generations import Bound, Generation, NoRoom, Working
from orc.node.models.catalog import ModelEntry
from orc.node.models.runtimes.base import ChatMessage, GenerationDone, GenerationError, ScriptFailed, TokenChunk
from orc.node.models.runtimes.script import ScriptResult
from orc.scheduler.ensemble import EnsembleSpec, Placement
from orc.scheduler.loader import EnsembleLibrary, load_ensemble
from orc.scheduler.model_refs import split_model_ref
from orc.scheduler.placement import ClusterView, Demand, HeldModel, NodeView
from orc.scheduler.profiles import Profiles, builtin_profiles
from orc.scheduler.run import Usage

T = TypeVar("T")
WALL_EPOCH = 1_700_000_000.0  # what the engine's clock reads when the virtual loop starts
TINY = "tiny"  # the model every fake node serves


# ---- time -------------------------------------------------------------------------------------

class _JumpingSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    loop: "VirtualClockLoop"

    def select(self, timeout: float | None = None):  # type: ignore[override]
        if self.loop.threads_working or timeout is None:
            return super().select(timeout)  # a thread's result (or a callback from one) wakes it
        ready = super().select(0)
        if not ready and timeout > 0:
            self.loop.now += timeout  # nothing can happen before the next timer: go there
        return ready


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual time (see the module docstring)."""

    def __init__(self) -> None:
        selector = _JumpingSelector()
        selector.loop = self
        self.now = 0.0
        self.threads_working = 0
        super().__init__(selector)

    def time(self) -> float:
        return self.now

    def wall(self) -> float:
        """The engine's clock: wall-clock seconds that move with the loop's."""
        return WALL_EPOCH + self.now

    def run_in_executor(self, executor: Any, func: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        self.threads_working += 1
        future = super().run_in_executor(executor, func, *args)
        future.add_done_callback(self._thread_done)
        return future

    def _thread_done(self, _: object) -> None:
        self.threads_working -= 1


def run_virtual(work: Callable[[VirtualClockLoop], Coroutine[Any, Any, T]]) -> T:
    """`work(loop)` run to completion on a fresh virtual-time loop."""
    loop = VirtualClockLoop()
    try:
        return loop.run_until_complete(work(loop))
    finally:
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()


class Counter:
    """Entropy that differs on every call and repeats from run to run: 8 bytes of a counter."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, n: int) -> bytes:
        self.calls += 1
        return self.calls.to_bytes(n, "big")


# ---- models -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Reply:
    """What the fake model answers: `tokens`, one every `delay_s` (virtual) seconds, or an error."""

    tokens: tuple[str, ...] = ("ok",)
    delay_s: float = 0.0
    error: str | None = None


@dataclass(frozen=True)
class Prompt:
    """One generation the runtime was asked for."""

    model: str
    system: str | None
    user: str
    max_tokens: int
    temperature: float


def by_system_prompt(replies: dict[str, Reply], default: Reply = Reply()) -> Callable[[Prompt], Reply]:
    return lambda prompt: replies.get(prompt.system or "", default)


class RecordingRuntime:
    """A ModelRuntime that records every prompt and streams the reply `reply(prompt)` scripts."""

    name = "llama_cpp"

    def __init__(self, reply: Callable[[Prompt], Reply] = lambda prompt: Reply(), slots: int = 1) -> None:
        self.reply = reply
        self.prompts: list[Prompt] = []
        self.slots = slots  # its capacity: generations of a model at once
        self.reason: str | None = None  # its unavailable_reason

    async def load(self, model: ModelEntry) -> None:
        pass

    async def generate(self, model: ModelEntry, messages: list[ChatMessage], params: Any):
        system = next((m.content for m in messages if m.role == "system"), None)
        prompt = Prompt(model.id, system, messages[-1].content, params.max_tokens, params.temperature)
        self.prompts.append(prompt)
        reply = self.reply(prompt)
        text = ""
        for token in reply.tokens:
            if reply.delay_s:
                await asyncio.sleep(reply.delay_s)
            text += token
            yield TokenChunk(token)
        if reply.error is not None:
            raise GenerationError(reply.error)
        yield GenerationDone(text, Usage(len(prompt.user.split()), len(reply.tokens)), "stop")

    async def unload(self, model_id: str) -> None:
        pass

    def memory_estimate(self, model: ModelEntry) -> int:
        return 0

    def capacity(self, model: ModelEntry) -> int:
        return self.slots

    def unavailable_reason(self, model: ModelEntry) -> str | None:
        return self.reason

    def systems(self) -> list[str | None]:
        return [p.system for p in self.prompts]


def digest(model_id: str) -> str:
    """The made-up SHA-256 of a made-up model's weights (the same on every fake node)."""
    return f"{model_id:0<64}"[:64]


class FakeCatalog:
    """A catalog of made-up models (nothing on disk); counts how often a model is looked up."""

    def __init__(self, tmp: Path, models: Iterable[str] = (TINY,)) -> None:
        self._entries = tuple(ModelEntry(m, "llama_cpp", tmp / f"{m}.gguf", 1 << 20, digest(m), "test")
                              for m in models)
        self.lookups = 0

    def entries(self) -> tuple[ModelEntry, ...]:
        return self._entries

    def get(self, model_ref: str) -> ModelEntry | None:
        self.lookups += 1
        model_id, runtime = split_model_ref(model_ref)
        return next((e for e in self._entries if e.id == model_id and runtime in (None, e.runtime)), None)

    def prepare(self, model_ref: str) -> ModelEntry:
        entry = self.get(model_ref)
        assert entry is not None
        return entry


# ---- scripts ----------------------------------------------------------------------------------

@dataclass
class RecordingScripts:
    """Runs "scripts" in-process: `behaviour[file name](payload)` is the output (or raises)."""

    behaviour: dict[str, Callable[[dict], object]] = field(default_factory=dict)
    delay_s: dict[str, float] = field(default_factory=dict)
    calls: list[tuple[str, dict, Path | None]] = field(default_factory=list)

    async def __call__(self, path: Path, payload: dict, *, timeout: float | None, cwd: Path | None = None,
                       env: object = None) -> ScriptResult:
        self.calls.append((path.name, payload, cwd))
        if self.delay_s.get(path.name):
            await asyncio.sleep(self.delay_s[path.name])
        act = self.behaviour.get(path.name, lambda p: {"echo": p["input_data"]})
        return ScriptResult(act(payload), "", 0.0)

    def names(self) -> list[str]:
        return [name for name, _, _ in self.calls]


def failing(message: str) -> Callable[[dict], object]:
    def fail(payload: dict) -> object:
        raise ScriptFailed(message)
    return fail


# ---- a mesh -----------------------------------------------------------------------------------

class FakeMesh:
    """A Placer over made-up nodes: every generation is bound to `node`, waits `queued_s` there,
    then the runtime streams it; `no_room` answers every generation with NoRoom."""

    def __init__(self, runtime: RecordingRuntime, nodes: dict[str, tuple[str, ...]] | None = None,
                 node: tuple[str, str] = ("pi-id", "pi"), queued_s: float = 0.0,
                 no_room: tuple[tuple[str, str], ...] | None = None, coordinator: str = "me-id") -> None:
        self.runtime = runtime
        self.nodes = nodes if nodes is not None else {coordinator: (TINY,), node[0]: (TINY,)}
        self.node, self.queued_s, self.no_room, self.coordinator = node, queued_s, no_room, coordinator
        self.generations: list[Generation] = []

    def offers(self, model_ref: str, local: bool = False) -> bool:
        return split_model_ref(model_ref)[0] in self.model_ids(local)

    def tagged(self, tags: Iterable[str], local: bool = False) -> bool:
        return False

    def model_ids(self, local: bool = False) -> tuple[str, ...]:
        nodes = [self.coordinator] if local else list(self.nodes)
        return tuple(sorted({m for n in nodes for m in self.nodes.get(n, ())}))

    def view(self, local: bool = False) -> ClusterView:
        nodes = tuple(NodeView(n, n.removesuffix("-id"), True, tuple(HeldModel(m, "llama_cpp", digest(m), 1 << 20, True)
                                                                       for m in models))
                      for n, models in self.nodes.items() if not local or n == self.coordinator)
        return ClusterView(self.coordinator, nodes)

    def demand(self, key: str, model_ref: str, sha256: str | None, prompt_tokens: int, max_tokens: int,
               placement: Placement, rank: float, local: bool = False) -> Demand:
        model_id, runtime = split_model_ref(model_ref)
        return Demand(key=key, model_id=model_id, runtime=runtime, sha256=sha256, prompt_tokens=prompt_tokens,
                      max_tokens=max_tokens, rank=rank, local_only=placement.local_only or local)

    async def generate(self, generation: Generation):
        self.generations.append(generation)
        if self.no_room is not None:
            raise NoRoom(generation.wait_s or 0.0, self.no_room)
        yield Bound(*self.node)
        await asyncio.sleep(self.queued_s)
        yield Working(self.node[0], self.queued_s)
        entry = ModelEntry(generation.model, "llama_cpp", Path("/nowhere"), 0, "", "test")
        async for event in self.runtime.generate(entry, list(generation.messages), generation.params):
            yield event


# ---- building an engine -----------------------------------------------------------------------

def write_ensemble(folder: Path, name: str, agents: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(f"name: {name}\nagents:\n" + textwrap.indent(textwrap.dedent(agents), "  "))
    return path


def load(folder: Path, name: str, agents: str | None = None) -> EnsembleSpec:
    path = write_ensemble(folder, name, agents) if agents is not None else folder / f"{name}.yaml"
    return load_ensemble(path, EnsembleLibrary((folder,)))


@dataclass
class Rig:
    """An engine with recording fakes around it, on a virtual-time loop's clock."""

    folder: Path
    runtime: RecordingRuntime
    scripts: RecordingScripts
    catalog: FakeCatalog
    entropy: Counter
    clock: Callable[[], float]
    profiles: Profiles
    mesh: FakeMesh | None = None
    runs_dir: Path | None = None
    local: bool = False
    shipped: RecordingScripts | None = None  # the runner of scripts an ensemble lets ship

    def engine(self) -> Engine:
        return Engine(catalog=self.catalog, profiles=self.profiles,  # type: ignore[arg-type]
                      library=EnsembleLibrary((self.folder,)), runs_dir=self.runs_dir,
                      node_id="me-id" if self.mesh is not None else "local", placer=self.mesh,
                      clock=self.clock, entropy=self.entropy, local=self.local,
                      runtimes={"llama_cpp": self.runtime}, workdir=self.folder, seed=7, scripts=self.scripts,
                      shipped_scripts=self.shipped)


def rig(folder: Path, reply: Callable[[Prompt], Reply] = lambda prompt: Reply(), *,
        profiles: Profiles | None = None, journal: bool = False, **kwargs: Any) -> Rig:
    def clock() -> float:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return WALL_EPOCH  # outside a run (a forecast): a fixed moment
        assert isinstance(loop, VirtualClockLoop), "engine tests run on run_virtual"
        return loop.wall()

    runtime = RecordingRuntime(reply)
    return Rig(folder=folder, runtime=runtime, scripts=RecordingScripts(), catalog=FakeCatalog(folder),
               entropy=Counter(), clock=clock, profiles=profiles or builtin_profiles(TINY),
               runs_dir=(folder / "runs") if journal else None, **kwargs)


@dataclass(frozen=True)
class Outcome:
    """A finished run: its events, its agents' records by name, and how far the clock went."""

    events: list
    results: dict
    result: Any
    elapsed_s: float

    def status(self, name: str) -> str:
        return self.results[name].status.value

    def of(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]


def execute(engine: Engine, spec: EnsembleSpec, run_input: object = "go", **run_options: Any) -> Outcome:
    """Bind and run `spec` on a virtual-time loop."""
    from orc.node.protocol.events import RunFinished

    async def work(loop: VirtualClockLoop) -> Outcome:
        bound = await asyncio.to_thread(engine.preflight, spec)
        began = loop.time()
        events = [event async for event in engine.run(bound, run_input, **run_options)]
        [finished] = [e for e in events if isinstance(e, RunFinished)]
        return Outcome(events, dict(finished.result.results), finished.result, loop.time() - began)

    return run_virtual(work)
