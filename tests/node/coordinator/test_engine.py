"""The engine's pure helpers: what a model is sent, and how options become sampling settings."""

from pathlib import Path

from orc.node.coordinator.engine import build_messages, generation_params, render_value
from orc.scheduler.loader import load_ensemble_text
from orc.scheduler.profiles import ResolvedModel
from orc.scheduler.run import AgentInput, DependencyResult


def agent_input(scope: str, deps=()) -> AgentInput:
    return AgentInput("a", "the question", tuple(deps), scope, attempt=1)


DEPS = (("good", DependencyResult("completed", "fine answer")),
        ("bad", DependencyResult("failed", None, "boom")),
        ("off", DependencyResult("skipped", None, "condition false")))


def test_full_scope_puts_upstream_results_first_and_the_input_last():
    system, user = build_messages("be brief", agent_input("full", DEPS), "the question")
    assert (system.role, system.content) == ("system", "be brief")
    text = user.content
    assert text.index("[good]\nfine answer") < text.index("[bad]\n(this agent failed: boom)") < text.index(
        "Input:\nthe question")
    assert "[off]" not in text


def test_scopes_select_what_is_sent():
    (only_input,) = build_messages(None, agent_input("input", DEPS), "the question")
    assert only_input.content == "the question"
    (only_deps,) = build_messages(None, agent_input("dependencies", DEPS), "the question")
    assert "fine answer" in only_deps.content and "the question" not in only_deps.content
    (empty,) = build_messages(None, agent_input("dependencies"), "x")
    assert empty.content == "(no input)"


def test_values_render_for_prompts():
    assert render_value(("one\nline", "two")) == "- one line\n- two"
    assert render_value({"k": [1]}) == '{\n  "k": [\n    1\n  ]\n}'


def test_options_become_sampling_settings_and_unknown_ones_are_ignored():
    spec = load_ensemble_text("name: o\nagents:\n  - name: a\n    model: m\n"
                              "    options: {top_p: 0.5, stop: '###', seed: 9, think: false}\n", Path("o.yaml"))
    resolved = ResolvedModel("m", None, None, 0.1, 20, None)
    params = generation_params(resolved, spec.agents[0], seed=1)
    assert (params.top_p, params.stop, params.seed, params.temperature, params.max_tokens) == (0.5, ("###",), 9, 0.1, 20)
    plain = load_ensemble_text("name: p\nagents:\n  - {name: a, model: m}\n", Path("p.yaml"))
    assert generation_params(resolved, plain.agents[0], seed=4).seed == 4


# ---- time limits: an agent's timeout counts from when its generation starts ----

import asyncio  # noqa: E402
import textwrap  # noqa: E402

import pytest  # noqa: E402

from orc.node.models.catalog import Catalog  # noqa: E402
from orc.node.coordinator.engine import Engine  # noqa: E402
from orc.node.protocol.events import AgentEnded, AgentWorking, RunFinished  # noqa: E402
from orc.node.coordinator.placer import Bound, NoRoom, Working  # noqa: E402
from orc.node.models.runtimes.base import GenerationDone, TokenChunk  # noqa: E402
from orc.scheduler.loader import EnsembleLibrary, load_ensemble  # noqa: E402
from orc.scheduler.profiles import builtin_profiles, load_profiles  # noqa: E402
from orc.scheduler.run import Usage  # noqa: E402

SMOL = "smollm2-135m-instruct"


class PacedRuntime:
    """A stand-in runtime that writes `max_tokens` words, one every `delay` seconds (the delay is
    the agent's system prompt), so a test controls how long a generation takes."""

    name = "llama_cpp"

    async def load(self, model) -> None:
        pass

    async def generate(self, model, messages, params):
        delay = float(messages[0].content)
        text = ""
        for index in range(params.max_tokens):
            await asyncio.sleep(delay)
            text += f"w{index} "
            yield TokenChunk(f"w{index} ")
        yield GenerationDone(text, Usage(4, params.max_tokens), "length")

    async def unload(self, model_id: str) -> None:
        pass

    def memory_estimate(self, model) -> int:
        return 0


def engine(tmp_path, profiles=None, mesh=None) -> Engine:
    return Engine(catalog=Catalog(tmp_path / "models"), runtimes={"llama_cpp": PacedRuntime()},
                  profiles=profiles or builtin_profiles(SMOL), library=EnsembleLibrary(()), runs_dir=None, mesh=mesh)


def ensemble(tmp_path, name: str, agents: str):
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\nagents:\n" + textwrap.indent(textwrap.dedent(agents), "  "))
    return load_ensemble(path, EnsembleLibrary(()))


def run(eng: Engine, spec) -> tuple[dict, list]:
    async def collect():
        events = [event async for event in eng.run(spec, "go")]
        return events

    events = asyncio.run(collect())
    [finished] = [e for e in events if isinstance(e, RunFinished)]
    return {name: record for name, record in finished.result.results}, events


def test_waiting_for_the_model_does_not_count_against_the_timeout(tmp_path):
    # Four agents share one model: each generates for 0.4 s, the last waits 1.2 s, all have 1 s.
    spec = ensemble(tmp_path, "t", "".join(
        f"- {{name: a{i}, model: {SMOL}, system_prompt: '0.1', max_tokens: 4, timeout_seconds: 1}}\n" for i in range(4)))
    results, events = run(engine(tmp_path), spec)
    assert {name: r.status.value for name, r in results.items()} == {f"a{i}": "completed" for i in range(4)}
    working = [e for e in events if isinstance(e, AgentWorking)]
    assert sorted(e.agent for e in working) == ["a0", "a1", "a2", "a3"]
    assert {e.node_id for e in working} == {"local"}
    assert max(e.waited_s for e in working) >= 1.0  # waited longer than its timeout, and still succeeded
    for e in working:  # shown before the agent's first token
        first_token = next(i for i, x in enumerate(events) if getattr(x, "agent", None) == e.agent
                           and type(x).__name__ == "TokenStreamed")
        assert events.index(e) < first_token


def test_a_generation_past_its_timeout_fails_naming_the_setting_and_its_file(tmp_path):
    spec = ensemble(tmp_path, "t", f"- {{name: slow, model: {SMOL}, system_prompt: '0.1', max_tokens: 40, "
                                   "timeout_seconds: 0.3}\n")
    results, _ = run(engine(tmp_path), spec)
    assert results["slow"].error == "timed out after 0.3 s of generating (timeout_seconds: 0.3 of agent 'slow' in t.yaml)"


def test_waiting_for_a_model_is_bounded_by_its_own_setting(tmp_path):
    spec = ensemble(tmp_path, "w", "".join(
        f"- {{name: {n}, model: {SMOL}, system_prompt: '0.1', max_tokens: 10, queue_timeout_seconds: 0.2}}\n"
        for n in ("first", "second")))
    results, _ = run(engine(tmp_path), spec)
    statuses = sorted(r.status.value for r in results.values())
    assert statuses == ["completed", "failed"]
    [(name, failed)] = [(n, r) for n, r in results.items() if r.status.value == "failed"]
    assert failed.error == (f"waited 0.2 s for a model without starting (queue_timeout_seconds: 0.2 of agent "
                            f"'{name}' in w.yaml)")


def test_limits_name_the_profile_and_its_config_file_or_orcs_default(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(f"model_profiles:\n  fast: {{model: {SMOL}, timeout_seconds: 20}}\n")
    eng = engine(tmp_path, profiles=load_profiles([config], builtin_profiles(SMOL)))
    spec = ensemble(tmp_path, "p", "- {name: quick, model_profile: fast}\n- {name: plain, model: %s}\n" % SMOL)
    eng.preflight(spec)
    quick, plain = (eng.limits(spec, spec.agent(n)) for n in ("quick", "plain"))
    assert (quick.timeout_s, quick.timeout_origin) == (20, f"timeout_seconds: 20 of profile 'fast' in {config}")
    assert (plain.timeout_s, plain.timeout_origin) == (300, "orc's default of 300 s")
    assert (plain.wait_s, plain.wait_origin) == (300, "orc's default of 300 s")


class FakeMesh:
    """The engine's view of the mesh: every model is served; each generation is bound to `pi`,
    waits `queued` seconds in its queue, then writes for `generating` seconds (or gets no room)."""

    def __init__(self, queued: float, generating: float, no_room: bool = False) -> None:
        self.queued, self.generating, self.no_room = queued, generating, no_room
        self.generations = []

    def offers(self, model, local=False) -> bool:
        return True

    def tagged(self, tags, local=False) -> bool:
        return False

    def model_ids(self, local=False):
        return (SMOL,)

    async def generate(self, generation):
        self.generations.append(generation)
        if self.no_room:
            raise NoRoom(generation.wait_s, (("pi", "every place is taken"), ("nas", "queue full")))
        yield Bound("pi-id", "pi")
        await asyncio.sleep(self.queued)
        yield Working("pi-id", self.queued)
        await asyncio.sleep(self.generating)
        yield TokenChunk("done")
        yield GenerationDone("done", Usage(4, 1), "stop")


def test_on_the_mesh_the_timeout_starts_when_the_node_starts_the_generation(tmp_path):
    spec = ensemble(tmp_path, "m", f"- {{name: critic, model: {SMOL}, timeout_seconds: 0.5, "
                                   "queue_timeout_seconds: 30}\n")
    mesh = FakeMesh(queued=1.0, generating=0.05)
    results, events = run(engine(tmp_path, mesh=mesh), spec)
    assert results["critic"].status.value == "completed"
    assert AgentWorking("critic", "pi-id", 1.0) in events
    [generation] = mesh.generations
    assert (generation.deadline_s, generation.wait_s) == (0.5, 30)

    slow = FakeMesh(queued=0.0, generating=2.0)
    results, _ = run(engine(tmp_path, mesh=slow), spec)
    assert results["critic"].error == ("timed out after 0.5 s of generating (timeout_seconds: 0.5 of agent 'critic' "
                                       "in m.yaml)")


def test_on_the_mesh_no_room_names_the_setting_and_every_node(tmp_path):
    spec = ensemble(tmp_path, "m", f"- {{name: critic, model: {SMOL}}}\n")
    results, _ = run(engine(tmp_path, mesh=FakeMesh(0, 0, no_room=True)), spec)
    assert results["critic"].error == ("waited 300 s for a model without starting (orc's default of 300 s); "
                                       "last answers: pi: every place is taken; nas: queue full")
