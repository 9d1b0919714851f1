"""vote, cascade and budget in ensemble files: what the loader builds from them, and one clear
Problem (with a fix) for each way of getting them wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orc.scheduler.ensemble import Budget, CascadeTask, Condition, FieldRef, Judge, LlmTask, Vote
from orc.scheduler.errors import EnsembleInvalid
from orc.scheduler.loader import load_ensemble_text
from orc.scheduler.primitives_parser import BUDGET_KEYS, JUDGE_KEYS, LEVEL_KEYS, VOTE_KEYS
from orc.scheduler.values import holds

SOURCE = Path("/ensembles/p.yaml")

ISSUE_EXAMPLE = r"""
name: primitives
agents:
  - name: answer
    model: smollm2-135m-instruct
    system_prompt: "Answer yes or no, then explain. Start with 'Answer: yes' or 'Answer: no'."
    vote:
      samples: 5
      by: majority
      extract: '(?i)answer:\s*(yes|no)'
      temperature: 0.8
      models: [smollm2-135m-instruct, gemma3-270m]
  - name: route
    cascade:
      - model: smollm2-135m-instruct
        vote: {samples: 3, by: majority, extract: '(?i)(positive|negative)'}
        accept_if: '${agreement} >= 0.67'
      - model: gemma3-270m
        max_tokens: 32
    system_prompt: "Is this review positive or negative?"
    temperature: 0.3
budget: {max_tokens: 4000, max_seconds: 120}
"""


def load(text: str):
    return load_ensemble_text(text, SOURCE)


def problems(text: str) -> tuple:
    with pytest.raises(EnsembleInvalid) as caught:
        load(text)
    return caught.value.problems


def test_the_issue_example_loads_into_the_agreed_shapes():
    spec = load(ISSUE_EXAMPLE)
    assert spec.budget == Budget(max_tokens=4000, max_seconds=120.0)
    answer = spec.agent("answer").task
    assert isinstance(answer, LlmTask) and answer.model == "smollm2-135m-instruct"
    assert answer.vote == Vote(samples=5, by="majority", extract=r"(?i)answer:\s*(yes|no)", temperature=0.8,
                               models=("smollm2-135m-instruct", "gemma3-270m"))
    route = spec.agent("route").task
    assert isinstance(route, CascadeTask) and len(route.levels) == 2
    first, last = route.levels
    # The agent's own LLM keys are every level's defaults; a level's own keys win.
    assert first.task.model == "smollm2-135m-instruct" and first.task.temperature == 0.3
    assert first.task.system_prompt == last.task.system_prompt == "Is this review positive or negative?"
    assert first.task.vote == Vote(samples=3, extract="(?i)(positive|negative)")
    assert first.accept_if == Condition(FieldRef("agreement"), ">=", 0.67)
    assert last.task.model == "gemma3-270m" and last.task.max_tokens == 32 and last.task.vote is None
    assert last.accept_if is None


def test_judge_and_script_votes_and_agent_budgets():
    spec = load("""
name: j
agents:
  - name: a
    model: smollm2-135m-instruct
    vote: {samples: 3, by: judge, judge: {model: gemma3-270m, system_prompt: Pick one., max_tokens: 8}}
  - name: b
    model: smollm2-135m-instruct
    vote: {samples: 2, by: judge}
  - name: c
    model: smollm2-135m-instruct
    vote: {samples: 64, by: script, script: pick.py}
    budget: {max_seconds: 30}
  - name: d
    script: s.py
    budget: {max_tokens: 1}
""")
    assert spec.agent("a").task.vote.judge == Judge("gemma3-270m", "Pick one.", 8)
    assert spec.agent("b").task.vote.judge == Judge()  # the agent's own model judges
    assert spec.agent("c").task.vote.script == "pick.py" and spec.agent("c").task.vote.samples == 64
    assert spec.agent("c").budget == Budget(max_seconds=30.0)
    assert spec.agent("d").budget == Budget(max_tokens=1)
    assert spec.budget is None and spec.agent("a").budget is None


def test_level_options_lay_over_the_agents_key_by_key():
    spec = load("""
name: o
agents:
  - name: c
    options: {top_p: 0.9, top_k: 40}
    cascade:
      - {model: smollm2-135m-instruct, accept_if: '${output}'}
      - {model_profile: big, options: {top_k: 10}}
""")
    low, high = spec.agent("c").task.levels
    assert dict(low.task.options) == {"top_p": 0.9, "top_k": 40}
    assert dict(high.task.options) == {"top_p": 0.9, "top_k": 10} and high.task.model_profile == "big"


@pytest.mark.parametrize("accept_if, expected", [
    ("${output}", Condition(FieldRef("output"))),
    ("${output} == positive", Condition(FieldRef("output"), "==", "positive")),
    ("${output.confidence} > 0.5", Condition(FieldRef("output", ("confidence",)), ">", 0.5)),
    ("${samples} >= 3", Condition(FieldRef("samples"), ">=", 3)),
    ("${completion_tokens} < 200", Condition(FieldRef("completion_tokens"), "<", 200)),
    ("${ballot} != maybe", Condition(FieldRef("ballot"), "!=", "maybe")),
    ("${model} == gemma3-270m", Condition(FieldRef("model"), "==", "gemma3-270m")),
])
def test_accept_if_speaks_the_when_language_over_the_level_fields(accept_if, expected):
    spec = load(f"""
name: a
agents:
  - name: c
    cascade:
      - {{model: m, vote: {{samples: 3}}, accept_if: '{accept_if}'}}
      - {{model: n}}
""")
    assert spec.agent("c").task.levels[0].accept_if == expected


def test_numeric_guards_in_when_and_until():
    spec = load("""
name: w
agents:
  - {name: a, model: m}
  - {name: b, model: m, depends_on: [a], when: '${a.score} <= -1.5'}
""")
    assert spec.agent("b").when == Condition(FieldRef("a", ("score",)), "<=", -1.5)


@pytest.mark.parametrize("op, literal, value, result", [
    (">=", 0.67, 0.67, True), (">=", 0.67, 0.6, False), (">", 2, 3, True), ("<", 3, 3, False),
    ("<=", 3, 3, True), ("<", 3, "2\n", True), (">", 1, "0.5", False),
    # Not a number: false, never an error.
    (">", 0, "high", False), ("<", 100, None, False), ("<", 100, {"a": 1}, False), (">=", 1, True, False),
    (">", 0, "nan", False), (">", 0, "1_000", False), ("<", 5, [1, 2], False),
])
def test_numeric_comparisons_hold_only_on_numbers(op, literal, value, result):
    assert holds(Condition(FieldRef("a"), op, literal), {"a": value}) is result


def test_numeric_comparisons_look_into_structured_output():
    condition = Condition(FieldRef("a", ("score",)), ">", 0.5)
    assert holds(condition, {"a": '{"score": 0.9}'}) and not holds(condition, {"a": '{"score": 0.1}'})


AGENT = "name: x\nagents:\n  - name: a\n"

# One clear problem for each mistake: (the agent's lines (or the file), the words the message must hold).
CORPUS = {
    "samples-zero": ("    model: m\n    vote: {samples: 0}\n", "'vote.samples' must be a whole number from 2 to 64"),
    "samples-one": ("    model: m\n    vote: {samples: 1}\n", "from 2 to 64, not 1"),
    "samples-65": ("    model: m\n    vote: {samples: 65}\n", "from 2 to 64, not 65"),
    "samples-word": ("    model: m\n    vote: {samples: five}\n", "not 'five'"),
    "samples-float": ("    model: m\n    vote: {samples: 2.5}\n", "whole number"),
    "samples-missing": ("    model: m\n    vote: {by: majority}\n", "'vote' needs 'samples'"),
    "vote-not-mapping": ("    model: m\n    vote: 5\n", "'vote' must be a mapping"),
    "vote-unknown-key": ("    model: m\n    vote: {samples: 3, sample: 4}\n", "did you mean 'samples'?"),
    "vote-bad-by": ("    model: m\n    vote: {samples: 3, by: majorty}\n", "did you mean 'majority'?"),
    "bad-regex": ("    model: m\n    vote: {samples: 3, extract: '(yes|no'}\n",
                  "'vote.extract' is not a valid regular expression"),
    "regex-too-deep": ("    model: m\n    vote: {samples: 3, extract: '" + "(" * 499 + ")" * 499 + "'}\n",
                       "not a valid regular expression"),
    "regex-huge-repeat": ("    model: m\n    vote: {samples: 3, extract: 'a{99999999999}'}\n",
                          "not a valid regular expression"),
    "regex-bad-escape": ("    model: m\n    vote: {samples: 3, extract: 'a\\'}\n", "not a valid regular expression"),
    "regex-not-string": ("    model: m\n    vote: {samples: 3, extract: [a]}\n", "must be a regular expression"),
    "huge-regex": ("    model: m\n    vote: {samples: 3, extract: '" + "a" * 2000 + "'}\n", "at most 1000"),
    "vote-temperature": ("    model: m\n    vote: {samples: 3, temperature: 9}\n",
                         "'vote.temperature' must be a number from 0 to 5"),
    "vote-models-empty": ("    model: m\n    vote: {samples: 3, models: []}\n", "list of 1 to 8 models"),
    "vote-models-nine": ("    model: m\n    vote: {samples: 3, models: [a, b, c, d, e, f, g, h, i]}\n",
                         "not 9 of them"),
    "vote-models-bad-ref": ("    model: m\n    vote: {samples: 3, models: ['m@nowhere']}\n", "vote.models"),
    "vote-on-script": ("    script: s.py\n    vote: {samples: 3}\n", "'vote' only applies to LLM agents"),
    "vote-on-loop": ("    loop: {body: b, max_iterations: 2}\n    vote: {samples: 3}\n", "only applies to LLM"),
    "judge-without-by-judge": ("    model: m\n    vote: {samples: 3, judge: {model: m}}\n",
                               "only used with by: judge"),
    "judge-unknown-key": ("    model: m\n    vote: {samples: 3, by: judge, judge: {modle: m}}\n",
                          "did you mean 'model'?"),
    "judge-not-mapping": ("    model: m\n    vote: {samples: 3, by: judge, judge: gemma}\n",
                          "'vote.judge' must be a mapping"),
    "script-vote-without-script": ("    model: m\n    vote: {samples: 3, by: script}\n", "by: script needs 'script'"),
    "script-without-by-script": ("    model: m\n    vote: {samples: 3, script: pick.py}\n",
                                 "only used with by: script"),
    "cascade-not-list": ("    cascade: {model: m}\n", "'cascade' must be a list of 1 to 8 levels"),
    "cascade-empty": ("    cascade: []\n", "list of 1 to 8 levels"),
    "cascade-nine": ("    cascade:\n" + "      - {model: m, accept_if: '${output}'}\n" * 8 + "      - {model: m}\n",
                     "not 9 levels"),
    "level-no-model": ("    cascade:\n      - {system_prompt: hi, accept_if: '${output}'}\n      - {model: m}\n",
                       "cascade level 1 (L0): a cascade level with no model"),
    "level-not-mapping": ("    cascade:\n      - m\n", "cascade level 1 (L0): must be a mapping"),
    "level-unknown-key": ("    cascade:\n      - {model: m, accept: '${output}'}\n      - {model: m}\n",
                          "did you mean 'accept_if'?"),
    "accept-if-unknown-field": ("    cascade:\n      - {model: m, accept_if: '${agreemnt} > 0.5'}\n"
                                "      - {model: m}\n", "unknown field 'agreemnt'"),
    "accept-if-on-last": ("    cascade:\n      - {model: m, accept_if: '${output}'}\n", "the last level may not"),
    "accept-if-missing": ("    cascade:\n      - {model: m}\n      - {model: n}\n", "cascade level 1 (L0): needs 'accept_if'"),
    "agreement-without-vote": ("    cascade:\n      - {model: m, accept_if: '${agreement} >= 0.6'}\n"
                               "      - {model: n}\n", "only a level with 'vote' has"),
    "accept-if-not-number": ("    cascade:\n      - {model: m, vote: {samples: 3}, accept_if: '${agreement} >= most'}\n"
                             "      - {model: n}\n", "'>=' compares with a number, not 'most'"),
    "accept-if-malformed": ("    cascade:\n      - {model: m, accept_if: 'agreement > 1'}\n      - {model: n}\n",
                            "invalid 'accept_if'"),
    "accept-if-field-path": ("    cascade:\n      - {model: m, accept_if: '${samples.n} > 1'}\n      - {model: n}\n",
                             "'samples' has no fields"),
    "level-bad-vote": ("    cascade:\n      - {model: m, vote: {samples: 99}, accept_if: '${output}'}\n"
                       "      - {model: n}\n", "cascade level 1 (L0): 'vote.samples'"),
    "level-bad-temperature": ("    cascade:\n      - {model: m, temperature: hot, accept_if: '${output}'}\n"
                              "      - {model: n}\n", "cascade level 1 (L0): 'temperature' must be a number"),
    "cascade-with-model": ("    model: m\n    cascade:\n      - {model: m}\n", "put 'model' on the levels"),
    "cascade-with-vote": ("    vote: {samples: 3}\n    cascade:\n      - {model: m}\n", "put 'vote' on the levels"),
    "cascade-and-script": ("    script: s.py\n    cascade:\n      - {model: m}\n", "does exactly one thing"),
    "cascade-parameters": ("    parameters: {a: 1}\n    cascade:\n      - {model: m}\n",
                           "'parameters' only applies to script agents"),
    "agent-budget-unknown-key": ("    model: m\n    budget: {max_token: 5}\n", "did you mean 'max_tokens'?"),
    "agent-budget-empty": ("    model: m\n    budget: {}\n", "'budget' sets no limit"),
    "agent-budget-not-mapping": ("    model: m\n    budget: 100\n", "'budget' must be a mapping"),
    "when-not-number": ("    model: m\n    when: '${b.x} < many'\n", "'<' compares with a number, not 'many'"),
}
TOP = {
    "budget-negative": ("budget: {max_tokens: -5}\n", "'budget.max_tokens' must be a whole number from 1"),
    "budget-zero": ("budget: {max_tokens: 0}\n", "from 1 to 1000000000, not 0"),
    "budget-zero-seconds": ("budget: {max_seconds: 0}\n", "'budget.max_seconds' must be a number from 0.001"),
    "budget-huge": ("budget: {max_seconds: 1e12}\n", "to 604800"),
    "budget-unknown-key": ("budget: {max_tokens: 5, seconds: 3}\n", "unknown budget key 'seconds'"),
    "budget-empty": ("budget: {}\n", "'budget' sets no limit"),
    "budget-list": ("budget: [1, 2]\n", "'budget' must be a mapping"),
    "budget-bool": ("budget: {max_tokens: true}\n", "not True"),
}


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_each_agent_mistake_is_one_problem_with_a_fix(case):
    lines, expected = CORPUS[case]
    found = problems(AGENT + lines)
    assert len(found) == 1, [str(p) for p in found]
    (problem,) = found
    assert expected in str(problem), str(problem)
    assert problem.agent == "a" and problem.file == SOURCE
    # Every message says how to fix it, either in the fix or in its own words ("must be ...").
    assert problem.fix or "must be" in problem.message, str(problem)


@pytest.mark.parametrize("case", sorted(TOP))
def test_each_budget_mistake_is_one_problem(case):
    lines, expected = TOP[case]
    found = problems(lines + "name: x\nagents:\n  - {name: a, model: m}\n")
    assert len(found) == 1, [str(p) for p in found]
    assert expected in str(found[0]) and found[0].agent is None and found[0].file == SOURCE


def test_a_cascade_reports_every_broken_level_at_once():
    found = problems(AGENT + "    cascade:\n      - {accept_if: '${nope}'}\n      - {model: m, accept_if: '${output}'}\n")
    text = [str(p) for p in found]
    assert any("level 1 (L0): a cascade level with no model" in t for t in text)
    assert any("level 1" in t and "unknown field 'nope'" in t for t in text)
    assert any("level 2 (L1): the last level may not" in t for t in text)


def test_a_level_with_no_model_and_no_accept_if_hears_both_at_once():
    found = [str(p) for p in problems(AGENT + "    cascade:\n      - {max_tokens: 5}\n      - {model: m}\n")]
    assert len(found) == 2 and "no model" in found[0] and "needs 'accept_if'" in found[1]


def test_by_null_is_a_majority_vote():
    spec = load("name: n\nagents:\n  - {name: a, model: m, vote: {samples: 3, by: null}}\n")
    assert spec.agent("a").task.vote.by == "majority"


def test_a_bad_default_on_the_cascade_agent_is_reported_once():
    found = problems(AGENT + "    temperature: 99\n    cascade:\n      - {model: m, accept_if: '${output}'}\n"
                             "      - {model: n}\n      - {model: o}\n")
    assert len(found) == 2  # the temperature once, plus level 2's missing accept_if
    assert sum("'temperature' must be a number" in str(p) for p in found) == 1


# Values close to the valid ones, so the fuzzing reaches deep into the checks.
_near = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 70), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["majority", "judge", "script", "m", "m@mlx", "m@nowhere", "(?i)(yes|no)", "(", "a{99999999999}",
                     "${agreement} >= 0.5", "${output}", "${nope} < 1", "${ballot} > 2", "${samples.x}", "pick.py"]),
)
_vote = st.dictionaries(st.sampled_from(VOTE_KEYS + ("bogus",)), st.one_of(
    _near, st.lists(_near, max_size=9), st.dictionaries(st.sampled_from(JUDGE_KEYS + ("x",)), _near, max_size=3)),
    max_size=5)
_level = st.dictionaries(st.sampled_from(LEVEL_KEYS + ("bogus",)), st.one_of(_near, _vote), max_size=5)
_budget = st.one_of(_near, st.dictionaries(st.sampled_from(BUDGET_KEYS + ("max_token",)), _near, max_size=3))
_agent = st.fixed_dictionaries({"name": st.just("a")}, optional={
    "model": _near, "vote": st.one_of(_near, _vote), "cascade": st.one_of(_near, st.lists(_level, max_size=9)),
    "budget": _budget, "temperature": _near, "script": _near, "when": _near})


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_agent, _budget)
def test_any_vote_cascade_or_budget_loads_or_is_refused_cleanly(agent, budget):
    text = yaml.safe_dump({"name": "f", "budget": budget, "agents": [agent]}, allow_unicode=True)
    try:
        spec = load(text)
    except EnsembleInvalid as invalid:
        assert invalid.problems and all(p.message for p in invalid.problems)
    else:
        task = spec.agents[0].task
        if isinstance(task, CascadeTask):
            assert task.levels and task.levels[-1].accept_if is None
            assert all(level.accept_if is not None for level in task.levels[:-1])
            assert all(level.task.model or level.task.model_profile for level in task.levels)
        vote = getattr(task, "vote", None)
        assert vote is None or 2 <= vote.samples <= 64


def test_a_key_written_as_null_counts_as_absent_and_no_agent_is_dropped_silently():
    spec = load("name: n\nagents:\n  - {name: a, model: m, temperature: null, max_tokens: null,"
                " vote: {samples: 3, extract: null, models: null}, budget: null}\n")
    (agent,) = spec.agents  # it was once left out of the ensemble, with no problem reported
    assert agent.task.temperature is None and agent.task.vote == Vote(samples=3)
    (problem,) = problems("name: n\nagents:\n  - {name: a, model: m, vote: {samples: null}}\n")
    assert "'vote' needs 'samples'" in str(problem)


def test_accept_if_evaluates_over_a_levels_fields_like_when_over_outputs():
    # The runner hands `holds` the level's fields by name, as `when` gets upstream outputs.
    fields = {"output": '{"label": "positive", "confidence": 0.9}', "agreement": 0.6667, "samples": 3,
              "ballot": "positive", "model": "gemma3-270m", "prompt_tokens": 40, "completion_tokens": 6}
    spec = load("""
name: f
agents:
  - name: c
    cascade:
      - {model: m, vote: {samples: 3}, accept_if: '${agreement} >= 0.67'}
      - {model: m, vote: {samples: 3}, accept_if: '${ballot} == Positive'}
      - {model: m, accept_if: '${output.confidence} > 0.8'}
      - {model: m, accept_if: '${completion_tokens} <= 6'}
      - {model: m}
""")
    verdicts = [holds(level.accept_if, fields) for level in spec.agent("c").task.levels[:-1]]
    assert verdicts == [False, True, True, True]
