"""orc.node.ray without a cluster: the address, the workers read from `ray.nodes()`, the
config section, the model actor around a runtime, and how the placer picks an actor."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from orc.node.config import NodeConfigInvalid, RayConfig, parse_node_config
from orc.node.coordinator.generations import Bound, Generation, NoNode, NoRoom, Working
from orc.node.home import Home
from orc.node.models.runtimes.base import (
    ChatMessage,
    GenerationDone,
    GenerationParams,
    RunnerDied,
    TokenChunk,
    Usage,
)
from orc.node.ray.actor import ActorState, ActorUnavailable, ModelActor, WrongWeights
from orc.node.ray.address import parse_address
from orc.node.ray.cluster import MAX_ACTORS_PER_WORKER, ActorSlot, workers_of
from orc.node.ray.errors import BadAddress
from orc.node.ray.placer import RayPlacer
from orc.scheduler.ensemble import Placement

MODEL = "smollm2-135m-instruct"


@pytest.mark.parametrize(("given", "joined"), [
    ("ray://10.0.0.5:6379", "10.0.0.5:6379"),
    ("head.lab:6379", "head.lab:6379"),
    (" ray://[::1]:6379 ", "[::1]:6379"),
])
def test_addresses_ray_joins(given: str, joined: str) -> None:
    assert parse_address(given) == joined


@pytest.mark.parametrize("given", ["ray://head", "ray://:6379", "ray://head:0", "ray://head:70000",
                                   "ray://head:port", "ray://a/b:1", "ray://" + "h" * 300 + ":1", ""])
def test_malformed_addresses_are_refused_naming_the_form(given: str) -> None:
    with pytest.raises(BadAddress, match="ray://HOST:PORT"):
        parse_address(given)


def test_workers_read_from_ray_nodes() -> None:
    nodes = [
        {"NodeID": "a" * 56, "Alive": True, "NodeManagerAddress": "10.0.0.2",
         "Resources": {"CPU": 1.0, f"orc-model:{MODEL}": 2.0, "orc-model:half": 0.5, "orc-tag:gpu": 1.0,
                       "orc-model:Bad Name\x1b[2J": 1.0, "orc-model:" + "x" * 65: 1.0, "orc-tag:\n": 1.0}},
        {"NodeID": "b" * 56, "Alive": False, "NodeManagerAddress": "10.0.0.3",
         "Resources": {f"orc-model:{MODEL}": 5000.0}},
        {"NodeID": "c" * 56, "Alive": True, "Resources": {"CPU": 4.0}},
    ]
    first, second, third = workers_of(nodes)
    assert dict(first.models) == {MODEL: 2}  # half a unit is no actor
    assert first.name == "ray:10.0.0.2/aaaaaaaa" and first.alive and first.tags == {"gpu"}
    assert dict(second.models) == {MODEL: MAX_ACTORS_PER_WORKER} and not second.alive  # a typo starts no thousand runners
    assert dict(third.models) == {}


def test_config_ray_section() -> None:
    assert parse_node_config({}, "c.yaml").ray == RayConfig()
    got = parse_node_config({"ray": {"address": "ray://10.0.0.5:6379", "threads": 2}}, "c.yaml").ray
    assert got == RayConfig("ray://10.0.0.5:6379", 2)
    for bad, says in (({"address": "10.0.0.5:6379"}, "ray.address"), ({"threads": 0}, "ray.threads"),
                      ({"adress": "ray://x:1"}, "`ray:` must be"), ("ray://x:1", "`ray:` must be")):
        with pytest.raises(NodeConfigInvalid, match=says):
            parse_node_config({"ray": bad}, "c.yaml")


# ---- the actor around a runtime ----

class ScriptedRuntime:
    """A ModelRuntime that answers with fixed tokens."""

    name = "llama_cpp"

    def __init__(self) -> None:
        self.loaded: list[str] = []

    async def load(self, model) -> None:
        self.loaded.append(model.id)

    async def generate(self, model, messages: Sequence[ChatMessage], params: GenerationParams) -> AsyncIterator:
        for piece in ("Hel", "lo"):
            yield TokenChunk(piece)
        yield GenerationDone("Hello", Usage(3, 2), "stop")

    async def unload(self, model_id: str) -> None: ...

    def memory_estimate(self, model) -> int:
        return 1

    def capacity(self, model) -> int:
        return 3

    def unavailable_reason(self, model) -> str | None:
        return None


def test_the_actor_streams_its_runtime_and_refuses_other_weights(tmp_path: Path) -> None:
    actor = ModelActor(MODEL, runtimes={"llama_cpp": ScriptedRuntime()}, home=Home.locate(tmp_path))

    async def go() -> tuple[ActorState, list[object]]:
        state = await actor.state()
        events = [e async for e in actor.generate((ChatMessage("user", "hi"),), GenerationParams(), state.sha256)]
        with pytest.raises(WrongWeights, match="other weights"):
            async for _ in actor.generate((ChatMessage("user", "hi"),), GenerationParams(), "0" * 64):
                pass
        return state, events

    state, events = asyncio.run(go())
    crashing = ScriptedRuntime()
    crashing.unavailable_reason = lambda model: "its runner crashed 3 times"  # type: ignore[method-assign]
    sick = ModelActor(MODEL, runtimes={"llama_cpp": crashing}, home=Home.locate(tmp_path))

    async def refused() -> None:
        async for _ in sick.generate((ChatMessage("user", "hi"),), GenerationParams()):
            pass

    with pytest.raises(ActorUnavailable, match="crashed 3 times"):
        asyncio.run(refused())
    assert state.model_id == MODEL and state.capacity == 3 and not state.loaded and state.sha256
    assert events == [TokenChunk("Hel"), TokenChunk("lo"), GenerationDone("Hello", Usage(3, 2), "stop")]


# ---- how the placer picks ----

@dataclass
class FakeCall:
    """What `handle.generate.remote` gives: an async iterator of awaitables (Ray's object refs)."""

    events: list[object]
    gate: asyncio.Event | None = None  # the first event waits for it

    def __aiter__(self) -> AsyncIterator[object]:
        return self._refs()

    async def _refs(self) -> AsyncIterator[object]:
        if self.gate is not None:
            await self.gate.wait()
        for event in self.events:
            async def ref(value: object = event) -> object:
                return value
            yield ref()


class FakeHandle:
    def __init__(self, gate: asyncio.Event | None = None) -> None:
        self.calls = 0
        self.generate = self  # handle.generate.remote(...)
        self._gate = gate

    def remote(self, messages: object, params: object, sha256: object) -> FakeCall:
        self.calls += 1
        return FakeCall([TokenChunk("x"), GenerationDone("x", Usage(1, 1), "stop")], self._gate)


class FakeCluster:
    def __init__(self, slots: list[ActorSlot]) -> None:
        self.slots = slots

    async def actors(self, model_ref: str, model_id: str) -> list[ActorSlot]:
        return list(self.slots)

    def forget(self, model_id: str, name: str) -> None: ...

    def model_ids(self) -> tuple[str, ...]:
        return (MODEL,)


def _slot(name: str, loaded: bool, capacity: int = 2, running: int = 0, unavailable: str = "",
          tags: frozenset[str] = frozenset()) -> ActorSlot:
    state = ActorState(MODEL, "llama_cpp", "", 0, capacity, loaded, unavailable, 1, None)
    return ActorSlot(name, "node", FakeHandle(), state, running, tags)


def _generation(wait_s: float | None = None, placement: Placement = Placement()) -> Generation:
    return Generation(run_id="r", agent="a", model=MODEL, sha256=None, messages=(ChatMessage("user", "hi"),),
                      params=GenerationParams(), placement=placement, rank=0.0, attempts=2, wait_s=wait_s)


async def _events(placer: RayPlacer, generation: Generation) -> list[object]:
    return [e async for e in placer.generate(generation)]


def test_a_warm_actor_first_then_the_least_loaded() -> None:
    cold, warm_busy, warm_idle = _slot("cold", False), _slot("busy", True, running=1), _slot("idle", True)
    placer = RayPlacer(FakeCluster([cold, warm_busy, warm_idle]))  # type: ignore[arg-type]
    events = asyncio.run(_events(placer, _generation()))
    assert events[0] == Bound("idle", "idle", None) and isinstance(events[1], Working)
    assert events[-1] == GenerationDone("x", Usage(1, 1), "stop")
    assert warm_idle.handle.calls == 1 and warm_idle.running == 0  # released
    warm_idle.running = warm_idle.state.capacity
    warm_busy.running = warm_busy.state.capacity
    events = asyncio.run(_events(placer, _generation()))
    assert events[0] == Bound("cold", "cold", None)  # the warm ones are full: the cold one
    assert cold.state.loaded  # and it is warm from now on


def test_tags_pick_the_workers() -> None:
    plain, gpu = _slot("plain", True), _slot("gpu", False, tags=frozenset({"gpu", "big"}))
    placer = RayPlacer(FakeCluster([plain, gpu]))  # type: ignore[arg-type]
    assert asyncio.run(_events(placer, _generation()))[0] == Bound("plain", "plain", None)  # warm wins
    preferring = _generation(placement=Placement(prefer_tags=frozenset({"gpu"})))
    assert asyncio.run(_events(placer, preferring))[0] == Bound("gpu", "gpu", None)  # a preferred tag beats warm
    requiring = _generation(placement=Placement(require_tags=frozenset({"gpu", "big"})))
    assert asyncio.run(_events(placer, requiring))[0] == Bound("gpu", "gpu", None)
    with pytest.raises(NoNode, match="with the tags fast"):
        asyncio.run(_events(placer, _generation(placement=Placement(require_tags=frozenset({"fast"})))))


def test_full_actors_make_a_generation_wait_then_no_room() -> None:
    gate = asyncio.Event()
    only = _slot("only", True, capacity=1)
    only.handle = FakeHandle(gate)
    placer = RayPlacer(FakeCluster([only]))  # type: ignore[arg-type]

    async def two(second_wait_s: float) -> tuple[list[object], list[object] | BaseException]:
        first = asyncio.get_running_loop().create_task(_events(placer, _generation()))
        await asyncio.sleep(0.05)  # the first holds the actor's one place, waiting at the gate
        second = asyncio.get_running_loop().create_task(_events(placer, _generation(wait_s=second_wait_s)))
        await asyncio.sleep(0.3)
        gate.set()
        return await first, (await asyncio.gather(second, return_exceptions=True))[0]

    async def both() -> tuple[object, ...]:
        gave_up = await two(second_wait_s=0.1)
        gate.clear()
        return gave_up + await two(second_wait_s=5)

    first, second, _, waited = asyncio.run(both())
    assert isinstance(second, NoRoom) and first[-1] == GenerationDone("x", Usage(1, 1), "stop")
    second = waited
    assert isinstance(second, list) and second[0] == Bound("only", "only", None)  # started once the first ended
    assert only.handle.calls == 3 and only.running == 0  # the one that gave up never reached the actor


def test_no_actor_is_no_node_saying_why() -> None:
    with pytest.raises(NoNode, match="crashed"):
        asyncio.run(_events(RayPlacer(FakeCluster([_slot("x", True, unavailable="crashed")])),  # type: ignore[arg-type]
                            _generation()))
    with pytest.raises(NoNode, match="no worker serves it"):
        asyncio.run(_events(RayPlacer(FakeCluster([])), _generation()))  # type: ignore[arg-type]


class FailingHandle(FakeHandle):
    """Its first call fails as Ray reports it (an exception from iterating the stream)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self._error = error

    def remote(self, messages: object, params: object, sha256: object) -> object:
        self.calls += 1
        error = self._error

        class Broken:
            def __aiter__(self) -> AsyncIterator[object]:
                return self

            async def __anext__(self) -> object:
                raise error

        return Broken()


class CancelRecorder:
    def __init__(self) -> None:
        self.cancelled: list[object] = []

    def cancel(self, stream: object) -> None:
        self.cancelled.append(stream)


def _ray_errors():  # type: ignore[no-untyped-def]
    from ray_cluster import require_ray

    require_ray()
    import ray.exceptions

    return ray.exceptions


@pytest.mark.parametrize("kind", ["actor died", "runner died", "unavailable", "other weights"])
def test_a_failure_of_the_actor_moves_the_generation(kind: str) -> None:
    errors = _ray_errors()
    cause = {"actor died": None, "runner died": errors.RayTaskError("generate", "tb", RunnerDied("runner died: SIGKILL")),
             "unavailable": errors.RayTaskError("generate", "tb", ActorUnavailable("crashed 3 times")),
             "other weights": errors.RayTaskError("generate", "tb", WrongWeights("other weights"))}[kind]
    error = errors.ActorDiedError() if cause is None else cause.as_instanceof_cause()
    bad, good = _slot("bad", True), _slot("good", True, running=1)
    bad.handle = FailingHandle(error)
    cluster = FakeCluster([bad, good])
    cluster.ray = CancelRecorder()  # type: ignore[attr-defined]
    events = asyncio.run(_events(RayPlacer(cluster), _generation()))  # type: ignore[arg-type]
    bound = [e for e in events if isinstance(e, Bound)]
    assert [b.node_id for b in bound] == ["bad", "good"] and bound[1].replaces.startswith("bad: ")
    assert events[-1] == GenerationDone("x", Usage(1, 1), "stop")
    assert cluster.ray.cancelled == []  # the call had ended: nothing to cancel


def test_a_request_no_actor_can_serve_fails_without_moving() -> None:
    errors = _ray_errors()
    from orc.node.models.runtimes.base import GenerationError

    too_long = errors.RayTaskError("generate", "tb", GenerationError("the prompt does not fit the context window"))
    only, other = _slot("only", True), _slot("other", True, running=1)
    only.handle = FailingHandle(too_long.as_instanceof_cause())
    with pytest.raises(GenerationError, match="context window") as raised:
        asyncio.run(_events(RayPlacer(FakeCluster([only, other])), _generation()))  # type: ignore[arg-type]
    assert not isinstance(raised.value, errors.RayTaskError)  # the runtime's own error, its message as is
    assert other.handle.calls == 0


def test_a_shipped_script_is_refused_past_its_size_cap_before_anything_is_sent(tmp_path: Path) -> None:
    from orc.node.models.runtimes.base import ScriptFailed
    from orc.node.ray.scripts import MAX_SCRIPT_BYTES, RayScripts

    class NoCluster:
        @property
        def ray(self) -> object:
            raise AssertionError("nothing may reach the cluster")

    big = tmp_path / "big.py"
    big.write_bytes(b"#" * (MAX_SCRIPT_BYTES + 1))
    with pytest.raises(ScriptFailed, match="at most 1024 KiB"):
        asyncio.run(RayScripts(NoCluster())(big, {}, timeout=None))
    with pytest.raises(ScriptFailed, match="cannot read script"):
        asyncio.run(RayScripts(NoCluster())(tmp_path / "missing.py", {}, timeout=None))


def test_the_shipped_task_runs_the_script_in_a_folder_it_then_removes(tmp_path: Path) -> None:
    from orc.node.ray.scripts import run_shipped

    source = b"import json, os, sys\nprint(json.dumps({'cwd': os.getcwd(), 'in': json.load(sys.stdin)['x']}))\n"
    result = run_shipped("s.py", source, {"x": 42}, timeout=30)
    assert result.output["in"] == 42
    assert Path(result.output["cwd"]).name.startswith("orc-script-") and not Path(result.output["cwd"]).exists()
