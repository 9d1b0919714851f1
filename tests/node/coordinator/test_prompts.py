"""What a model is sent, how options become sampling settings, and what an answer becomes."""

from pathlib import Path

import pytest

from orc.node.coordinator.prompts import AnswerNotJson, answer_output, build_messages, generation_params, render_value
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
    resolved = ResolvedModel("m", None, None, 0.1, 20)
    params = generation_params(resolved, spec.agents[0], seed=1)
    assert (params.top_p, params.stop, params.seed, params.temperature, params.max_tokens) == (0.5, ("###",), 9, 0.1, 20)
    plain = load_ensemble_text("name: p\nagents:\n  - {name: a, model: m}\n", Path("p.yaml"))
    assert generation_params(resolved, plain.agents[0], seed=4).seed == 4


def test_answers_become_outputs():
    text = load_ensemble_text("name: t\nagents:\n  - {name: a, model: m}\n", Path("t.yaml")).agents[0]
    as_json = load_ensemble_text("name: j\nagents:\n  - {name: a, model: m, output_format: json}\n",
                                 Path("j.yaml")).agents[0]
    assert answer_output(text, "  hi \n") == "hi"
    assert answer_output(as_json, '{"a": [1]}') == {"a": [1]}
    with pytest.raises(AnswerNotJson):
        answer_output(as_json, "no json here")
