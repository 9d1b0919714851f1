"""`orc plan` in embedded mode (no daemon for the home): the real CLI, nothing run."""

from __future__ import annotations

import time
from pathlib import Path

from support import assert_one_clean_error, write

from orc.scheduler.ensemble import LlmTask, ScriptTask
from orc.scheduler.loader import load_ensemble
from orc.scheduler.placement import Exclusion

EXAMPLES = Path(__file__).resolve().parents[3] / "ensembles"
MODEL = "smollm2-135m-instruct"  # the embedded model the examples use

MARK = """\
import json, pathlib, sys
pathlib.Path("ran.marker").write_text("the script ran")
print(json.dumps({"ran": True}))
"""


def _triage():
    return load_ensemble(EXAMPLES / "triage.yaml")


def test_plan_lists_every_agent_on_this_machine(orc):
    result = orc("plan", "triage")
    assert result.code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "placement for triage (estimated finish from now; coordinator: local):"
    spec = _triage()
    heads = [line for line in lines[1:] if line.startswith("  ") and not line.startswith("   ")]
    assert [h.split()[0] for h in heads] == [a.name for a in spec.agents]
    for agent, head in zip(spec.agents, heads):
        if isinstance(agent.task, ScriptTask):
            assert head.endswith("(script)")
        else:
            assert isinstance(agent.task, LlmTask) and head.endswith(f"[{MODEL}]")
    # Each LLM agent's one candidate, this machine, chosen, with its estimate: the first to run
    # loads the model (nothing is loaded before a run), the later ones find it warm.
    chosen = [line for line in lines if line.startswith("    → ")]
    assert len(chosen) == sum(isinstance(a.task, LlmTask) for a in spec.agents)
    assert all(line.split()[1] == "local" for line in chosen)
    assert sum("load " in line and "cold" in line for line in chosen) == 1


def test_plan_json_names_the_coordinator_and_each_choice(orc):
    data = orc("plan", "triage", "--json").json()
    assert data["ensemble"] == "triage" and data["coordinator"] == "local"
    spec = _triage()
    assert list(data["agents"]) == [a.name for a in spec.agents]
    for agent in spec.agents:
        entry = data["agents"][agent.name]
        assert entry["choice"] == "local"
        if isinstance(agent.task, ScriptTask):
            assert entry["kind"] == "script" and entry["model"] is None
        else:
            assert entry["kind"] == "llm" and entry["model"] == MODEL


def test_an_invalid_ensemble_exits_2_with_one_clear_line(orc):
    write(orc.work, "bad.yaml", "name: bad\nagents:\n  - {name: a, modle: m}\n")
    result = orc("plan", "bad.yaml")
    assert_one_clean_error(result, 2)
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""
    assert "bad.yaml" in result.stderr and "agent 'a'" in result.stderr and "did you mean 'model'" in result.stderr
    as_json = orc("plan", "bad.yaml", "--json")
    assert_one_clean_error(as_json, 2)
    assert as_json.stdout == "" and as_json.stderr == result.stderr
    # Several problems: still no traceback, and every problem is named.
    write(orc.work, "worse.yaml", "name: worse\nagents:\n  - {name: a, modle: m}\n  - {name: b, depends_on: [a, b]}\n")
    worse = orc("plan", "worse.yaml")
    assert_one_clean_error(worse, 2)
    assert "did you mean 'model'" in worse.stderr and "depends on itself" in worse.stderr


def test_an_agent_no_node_can_run_exits_3(orc):
    write(orc.work, "far.yaml", "name: far\nagents:\n  - {name: a, model: llama3:70b}\n")
    result = orc("plan", "far.yaml", "--json")
    assert_one_clean_error(result, 3)
    assert "no node has model 'llama3:70b'" in result.stderr and result.stdout == ""


def test_help_names_the_exclusion_reasons(orc):
    result = orc("plan", "--help")
    assert result.code == 0
    words = " ".join(result.stdout.split())  # the help is wrapped to the terminal's width
    # "failed earlier in this run" only happens while a run fails over, never in a plan.
    for reason in set(Exclusion) - {Exclusion.FAILED}:
        assert reason.value in words, reason
    assert "without running anything" in words


def test_plan_runs_no_script_loads_no_model_and_journals_nothing(orc, home, tmp_path):
    # A model file llama.cpp cannot load and a script that leaves a mark: planning must touch neither.
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    assert orc("models", "add", str(broken), "--id", "broken-test").code == 0
    write(orc.work, "mark.py", MARK)
    write(orc.work, "t.yaml", "name: t\nagents:\n  - {name: s, script: mark.py}\n"
                              "  - {name: g, model: broken-test, depends_on: [s]}\n")
    for args in ((), ("--json",)):
        began = time.monotonic()
        result = orc("plan", "t.yaml", "some input", *args)
        assert result.code == 0, result.stderr
        assert time.monotonic() - began < 10  # a plan is a quick look, not a run
    assert "  g  [broken-test]" in orc("plan", "t.yaml").stdout.splitlines()
    assert not (orc.work / "ran.marker").exists()
    assert not list(home.glob("runs/*")), list(home.glob("runs/*"))
    assert orc("runs", "list", "--json").json() == []
    # The same ensemble, run, does all three: the checks above can see them.
    ran = orc("run", "t.yaml", "some input", "--json")
    assert ran.code == 1 and (orc.work / "ran.marker").exists()
    assert "cannot load model 'broken-test'" in ran.json()["results"]["g"]["error"]
    assert len(list(home.glob("runs/*.journal"))) == 1
