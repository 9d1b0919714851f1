"""How votes and cascades look: their samples in the progress view and the dashboard (like nested
agents), their detail in `orc run --json` and `orc runs show` (text and JSON)."""

from __future__ import annotations

import io
from pathlib import Path

from orc.node.cli.describe import describe_run, detail_lines, run_json
from orc.node.cli.render import PlainView
from orc.node.coordinator.journal_replay import journal_state
from orc.node.protocol.events import AgentBegan, AgentEnded, AgentPlacedOn, AgentWorking, RunBegan, RunResult
from orc.node.web.run_record import LiveRun, event_json
from orc.scheduler.ensemble import (
    AgentName,
    AgentSpec,
    CascadeLevel,
    CascadeTask,
    Condition,
    EnsembleSpec,
    FieldRef,
    LlmTask,
    Vote,
)
from orc.scheduler.journal import JournalContents, RunEnded, RunHeader
from orc.scheduler.run import AgentRecord, AgentStatus, AgentSucceeded, PartDone, PartResult, RunId, Usage
from orc.scheduler.values import freeze

VOTE = {"ballots": {"yes": 3, "no": 1}, "agreement": 0.6, "samples": 5, "winner": "yes", "by": "majority",
        "abstained": 1, "models": ["smol"], "pick": 0}
TIED = {**VOTE, "ballots": {"yes": 2, "no": 2}, "agreement": 0.4, "tie": ["yes", "no"]}
CASCADE = {"level": 1, "tried": 2, "levels": [{"model": "smol", "accepted": False, "agreement": 0.3333},
                                              {"model": "gemma", "accepted": True}]}
SPEC = EnsembleSpec("v", (
    AgentSpec(AgentName("answer"), LlmTask(model="smol", vote=Vote(5))),
    AgentSpec(AgentName("route"), CascadeTask((
        CascadeLevel(LlmTask(model="smol", vote=Vote(3)), Condition(FieldRef(AgentName("agreement")), ">=", 0.67)),
        CascadeLevel(LlmTask(model="gemma"))))),
), source=Path("/nowhere/v.yaml"))


def test_samples_show_and_end_like_nested_agents():
    out = io.StringIO()
    view = PlainView(out, clock=lambda: 0.0)
    view.show(RunBegan(RunId("r"), "v", ("answer",), None, 0.0))
    view.show(AgentBegan("answer", None, "smol", 1))
    view.show(AgentBegan("answer/s0", None, "smol", 1))
    view.show(AgentPlacedOn("answer/s0", "p" * 20, "pi"))
    view.show(AgentWorking("answer/s0", "p" * 20, 0.1))
    assert set(view.run.active) == {"answer", "answer/s0"}
    view.show(AgentEnded("answer/s0", AgentRecord(AgentStatus.COMPLETED, 1, "Answer: yes", node_id="p" * 20,
                                                  started_at=0.0, finished_at=1.5, usage=Usage(3, 4))))
    assert set(view.run.active) == {"answer"}
    view.show(AgentEnded("answer", AgentRecord(AgentStatus.COMPLETED, 1, "Answer: yes", started_at=0.0,
                                               finished_at=2.0, usage=Usage(15, 20), detail=freeze({"vote": VOTE}))))
    text = out.getvalue()
    assert "▶ answer/s0 placing · smol" in text and "→ answer/s0 on pi" in text
    assert "✓ answer/s0 1.5s · 4 tok · pi" in text and "✓ answer 2.0s · 20 tok" in text


def test_the_results_json_carries_vote_and_cascade_only_where_they_are():
    plain = AgentRecord(AgentStatus.COMPLETED, 1, "x")
    voted = AgentRecord(AgentStatus.COMPLETED, 1, "yes", detail=freeze({"vote": VOTE}))
    cascaded = AgentRecord(AgentStatus.COMPLETED, 1, "no", detail=freeze({"cascade": CASCADE, "vote": TIED}))
    data = RunResult(RunId("r"), "v", "completed", "x", (("p", plain), ("a", voted), ("c", cascaded)),
                     0.0, 1.0).to_json()["results"]
    assert "vote" not in data["p"] and "cascade" not in data["p"]
    assert data["a"]["vote"] == VOTE and data["c"]["cascade"] == CASCADE and data["c"]["vote"]["tie"] == ["yes", "no"]


def test_runs_show_says_how_each_vote_and_cascade_decided():
    record = AgentRecord(AgentStatus.COMPLETED, 1, "no", detail=freeze({"cascade": CASCADE, "vote": TIED}))
    assert detail_lines(record) == [
        "cascade: level 1 accepted, 2 tried: L0 smol not accepted (agreement 0.3333); L1 gemma accepted",
        "vote: yes 2, no 2, 1 abstained of 5; agreement 0.4 (majority, tie broken by the first ballot: yes, no)",
    ]
    assert detail_lines(AgentRecord()) == []
    header = RunHeader(RunId("r"), "v", None, "go", 0.0, ("answer", "route"))
    events = (AgentSucceeded("answer", "yes", 2.0, Usage(1, 2), freeze({"vote": VOTE})),
              PartDone("route", "L0", PartResult({"output": None}, Usage(1, 1)), 1.0),
              AgentSucceeded("route", "no", 3.0, Usage(1, 2), freeze({"cascade": CASCADE})))
    contents = JournalContents(header, events, (RunEnded("completed", 3.0),))
    state = journal_state(contents, SPEC)
    shown = describe_run(contents, state)
    assert "      vote: yes 3, no 1, 1 abstained of 5; agreement 0.6 (majority)" in shown
    assert "      cascade: level 1 accepted, 2 tried" in shown
    data = run_json(contents, state)["results"]
    assert data["answer"]["vote"] == VOTE and data["route"]["cascade"] == CASCADE


def test_the_dashboard_takes_sample_events_like_nested_agents():
    began = RunBegan(RunId("r"), "v", ("answer", "route"), None, 0.0)
    run = LiveRun.began(began, 0.0)
    for event in (AgentBegan("answer", None, "smol", 1), AgentBegan("answer/s0", None, "smol", 1),
                  AgentEnded("answer/s0", AgentRecord(AgentStatus.COMPLETED, 1, "yes", model="smol"))):
        run.observe(event, event_json(event, 1.0))
    assert run.agents["answer/s0"].status == "completed" and run.agents["answer"].status == "running"
