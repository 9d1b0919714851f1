"""vote, cascade and budget through the real CLI: wrong keys refused (exit 2, one clean error, no
traceback) before anything runs; `orc plan`, `orc ensembles show|graph` describing them."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import assert_one_clean_error, write

from orc.node.cli.render import plan_json, render_plan
from orc.node.protocol.events import AgentPlan, RunPlanned
from orc.scheduler.dag import to_mermaid
from orc.scheduler.loader import load_ensemble, load_ensemble_text

EXAMPLES = Path(__file__).resolve().parents[3] / "ensembles"

BROKEN = {
    "bad-regex": ("  - name: a\n    model: smollm2-135m-instruct\n    vote: {samples: 3, extract: '[yes'}\n",
                  "'vote.extract' is not a valid regular expression"),
    "samples-five": ("  - name: a\n    model: smollm2-135m-instruct\n    vote: {samples: five}\n",
                     "'vote.samples' must be a whole number from 2 to 64, not 'five'"),
    "level-no-model": ("  - name: a\n    cascade:\n      - {max_tokens: 4, accept_if: '${output}'}\n"
                       "      - {model: gemma3-270m}\n", "a cascade level with no model"),
    "unknown-field": ("  - name: a\n    cascade:\n      - {model: gemma3-270m, accept_if: '${agremeent} > 0.5'}\n"
                      "      - {model: gemma3-270m}\n", "did you mean 'agreement'?"),
    "budget-zero": ("  - name: a\n    model: smollm2-135m-instruct\n    budget: {max_seconds: 0}\n",
                    "'budget.max_seconds' must be a number from 0.001"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_validate_and_run_refuse_a_broken_primitive_before_running(orc, case):
    lines, expected = BROKEN[case]
    write(orc.work, "p.yaml", "name: p\nagents:\n" + lines)
    validated = orc("ensembles", "validate", "p.yaml")
    assert_one_clean_error(validated, 2)
    assert expected in validated.stderr and "agent 'a'" in validated.stderr
    ran = orc("run", "p.yaml", "hello", "--json")
    assert_one_clean_error(ran, 2)
    assert expected in ran.stderr and ran.stdout == ""


def test_a_top_level_budget_mistake_is_refused(orc):
    write(orc.work, "b.yaml", "name: b\nbudget: {max_tokens: 10, max_second: 5}\n"
                              "agents:\n  - {name: a, model: smollm2-135m-instruct}\n")
    result = orc("ensembles", "validate", "b.yaml")
    assert_one_clean_error(result, 2)
    assert "unknown budget key 'max_second'" in result.stderr and "did you mean 'max_seconds'?" in result.stderr


def test_the_example_ensembles_validate_and_show_their_primitives(orc):
    result = orc("ensembles", "validate", "vote-yes-no", "cascade-sentiment")
    assert result.code == 0, result.stderr
    shown = orc("ensembles", "show", "vote-yes-no").stdout
    assert "answer: llm model smollm2-135m-instruct, ×5 vote (majority) over smollm2-135m-instruct, gemma3-270m" \
        in shown and "budget 6000 tokens, 300 s for the whole run" in shown
    shown = orc("ensembles", "show", "cascade-sentiment").stdout
    assert "sentiment: cascade smollm2-135m-instruct → gemma3-270m" in shown
    assert "L0 ×3 vote (majority) over smollm2-135m-instruct, accepted if ${agreement} >= 0.67" in shown
    assert "L1 gemma3-270m, accepted as it is" in shown and "budget 3000 tokens" in shown


def test_ensembles_show_json_adds_vote_cascade_and_budget(orc):
    data = orc("ensembles", "show", "cascade-sentiment", "--json").json()
    assert data["budget"] is None
    (agent,) = data["agents"]
    assert agent["task"] == "cascade smollm2-135m-instruct → gemma3-270m" and agent["vote"] is None
    assert agent["budget"] == {"max_tokens": 3000, "max_seconds": None}
    low, high = agent["cascade"]
    assert low["level"] == 0 and low["model"] == "smollm2-135m-instruct" and low["temperature"] == 0.7
    assert low["accept_if"] == "${agreement} >= 0.67"
    assert low["vote"]["samples"] == 3 and low["vote"]["extract"] == "(?i)(positive|negative)"
    assert high == {"level": 1, "model": "gemma3-270m", "model_profile": None, "temperature": 0.0, "max_tokens": 8,
                    "options": {}, "vote": None, "accept_if": None}
    data = orc("ensembles", "show", "vote-yes-no", "--json").json()
    assert data["budget"] == {"max_tokens": 6000, "max_seconds": 300.0}
    vote = data["agents"][0]["vote"]
    assert vote["samples"] == 5 and vote["by"] == "majority" and vote["models"] == ["smollm2-135m-instruct",
                                                                                     "gemma3-270m"]


def test_graph_shows_samples_levels_and_budgets():
    text = to_mermaid(load_ensemble(EXAMPLES / "cascade-sentiment.yaml"))
    assert "L0 ×3 vote (majority) over smollm2-135m-instruct, accepted if ${agreement} #gt;= 0.67" in text
    assert "L1 gemma3-270m, accepted as it is" in text and "budget 3000 tokens" in text
    text = to_mermaid(load_ensemble(EXAMPLES / "vote-yes-no.yaml"))
    assert "answer<br/><small>×5 vote (majority) over smollm2-135m-instruct, gemma3-270m" in text
    assert "%% budget 6000 tokens, 300 s for the whole run" in text


def test_plan_shows_a_votes_samples_in_the_cli(orc):
    result = orc("plan", "vote-yes-no")
    assert result.code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert ("  answer ×5 vote (majority) over smollm2-135m-instruct, gemma3-270m at temperature 0.8"
            "  [smollm2-135m-instruct]") in lines
    assert lines[-1] == "the whole run: budget 6000 tokens, 300 s"
    data = orc("plan", "vote-yes-no", "--json").json()
    assert data["budget"] == {"max_tokens": 6000, "max_seconds": 300.0}
    entry = data["agents"]["answer"]
    assert entry["kind"] == "llm" and entry["choice"] == "local"  # the fields that were there stay
    assert entry["vote"]["samples"] == 5 and entry["cascade"] is None and entry["budget"] is None


def test_render_plan_lists_a_cascades_levels_from_the_spec():
    spec = load_ensemble(EXAMPLES / "cascade-sentiment.yaml")
    planned = RunPlanned("cascade-sentiment", "local", 0.0, (AgentPlan("sentiment", "cascade", None),))
    lines = render_plan(planned, spec=spec).splitlines()
    assert lines[1:5] == ["  sentiment cascade smollm2-135m-instruct → gemma3-270m  (cascade)",
                          "      L0 ×3 vote (majority) over smollm2-135m-instruct, accepted if ${agreement} >= 0.67",
                          "      L1 gemma3-270m, accepted as it is",
                          "      budget 3000 tokens"]
    # Without the spec (a plan event from a daemon), the same view as before.
    assert render_plan(planned).splitlines()[1] == "  sentiment  (cascade)"
    data = plan_json(planned, spec)
    assert [level["model"] for level in data["agents"]["sentiment"]["cascade"]] == ["smollm2-135m-instruct",
                                                                                    "gemma3-270m"]
    assert "cascade" not in plan_json(planned)["agents"]["sentiment"] and "budget" not in plan_json(planned)


def test_render_plan_cleans_what_the_file_says():
    spec_text = ("name: x\nagents:\n  - name: a\n    model: smollm2-135m-instruct\n"
                 "    vote: {samples: 2, by: script, script: \"p\\e[31m.py\"}\n")  # YAML's \e: an ESC
    spec = load_ensemble_text(spec_text, Path("/x.yaml"))
    planned = RunPlanned("x", "local", 0.0, (AgentPlan("a", "llm", "smollm2-135m-instruct"),))
    assert spec.agent("a").task.vote.script == "p\x1b[31m.py"  # the escape reached the spec
    assert "\x1b" not in render_plan(planned, spec=spec)


def test_the_dashboards_graph_lists_a_cascade_by_its_first_model():
    from orc.node.web.run_views import graph_json

    graph = graph_json(load_ensemble(EXAMPLES / "cascade-sentiment.yaml"))
    assert graph == {"agents": [{"name": "sentiment", "depends_on": [], "kind": "cascade",
                                 "model": "smollm2-135m-instruct"}]}
