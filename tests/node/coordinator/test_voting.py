"""Votes and cascades: ballots and tallies as pure functions, then whole runs in-process (the
engine with a recording runtime on a virtual clock) for majority, judge, script, cascades, and
parts an earlier attempt or run finished."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from engine_fakes import TINY, FakeCatalog, FakeMesh, Prompt, Reply, Rig, execute, rig, run_virtual

from orc.node.coordinator.cascade import accepts
from orc.node.coordinator.voting import ballot_of, judge_messages, judge_pick, normalize, sample_seed, tally
from orc.node.protocol.events import AgentBegan, AgentEnded, RunFinished
from orc.scheduler.ensemble import (
    AgentName,
    AgentSpec,
    CascadeLevel,
    CascadeTask,
    Condition,
    EnsembleSpec,
    FieldRef,
    Judge,
    LlmTask,
    Vote,
)
from orc.scheduler.journal import read_journal
from orc.scheduler.run import AgentSucceeded, PartDone
from orc.scheduler.values import thaw

OTHER = "other"
YES_NO = r"(?i)answer:\s*(yes|no)"


# ---- pure --------------------------------------------------------------------------------------

def test_a_ballot_is_extracts_group_or_the_whole_text_normalized():
    pattern = re.compile(YES_NO)
    assert ballot_of("Answer: YES, because", pattern) == "yes"
    assert ballot_of("I think so", pattern) is None  # no match: abstains
    assert ballot_of("  The  Cat\tsat. ", None) == "the cat sat"
    assert ballot_of("Paris!?", None) == ballot_of("paris", None) == "paris"
    assert ballot_of("total 42", re.compile(r"\d+")) == "42"  # no group: the whole match
    assert ballot_of("a", re.compile(r"(b)?a")) is None  # the group took no part
    assert ballot_of("  ...  ", None) is None and normalize("Yes.\n") == "yes"


def test_majority_tie_goes_to_the_ballot_cast_first():
    counted = tally(["no", "yes", None, "yes", "no"])
    assert counted.counts == (("no", 2), ("yes", 2)) and counted.abstained == 1
    assert counted.top == ("no", "yes") and counted.winner == "no"
    assert counted.agreement("no") == 0.4 and counted.agreement(None) == 0.0
    assert tally([None, None]).winner is None
    assert tally(["a", "b", "b"]).winner == "b" and tally(["a", "b", "b"]).agreement("b") == 0.6667


def test_a_judge_picks_by_the_first_number_in_range():
    assert judge_pick("The best is [3].", 5) == 2
    assert judge_pick("0 of them; 7 is too many; 2", 5) == 1
    assert judge_pick("none", 5) is None and judge_pick("6", 5) is None
    system, user = judge_messages(None, (), ["one", "two"])
    assert system.role == "system" and "[1]\none" in user.content and "1 to 2" in user.content


def test_sample_seeds_follow_the_runs_seed_or_are_derived_per_part():
    assert [sample_seed(7, "r", "a", f"s{i}", i) for i in range(3)] == [7, 8, 9]
    derived = [sample_seed(None, "r", "a", f"s{i}", i) for i in range(3)]
    assert len(set(derived)) == 3 and derived == [sample_seed(None, "r", "a", f"s{i}", i) for i in range(3)]
    assert sample_seed(None, "other-run", "a", "s0", 0) != derived[0]


def test_accept_if_compares_numbers_and_never_fails_on_text():
    fields = {"agreement": 0.6667, "output": '{"score": 4}', "model": "m", "completion_tokens": 12}
    assert accepts(Condition(FieldRef(AgentName("agreement")), ">=", 0.67), fields) is False
    assert accepts(Condition(FieldRef(AgentName("agreement")), ">", 0.5), fields) is True
    assert accepts(Condition(FieldRef(AgentName("output"), ("score",)), "<=", 4), fields) is True
    assert accepts(Condition(FieldRef(AgentName("model")), "<", 3), fields) is False  # text: false
    assert accepts(Condition(FieldRef(AgentName("model")), "==", "M"), fields) is True
    assert accepts(Condition(FieldRef(AgentName("missing"))), fields) is False


# ---- whole runs --------------------------------------------------------------------------------

def spec_of(folder: Path, *agents: AgentSpec) -> EnsembleSpec:
    return EnsembleSpec(name="v", agents=tuple(agents), source=folder / "v.yaml")


def voter(vote: Vote, **task: object) -> AgentSpec:
    return AgentSpec(name=AgentName("a"), task=LlmTask(model=TINY, vote=vote, **task))  # type: ignore[arg-type]


def in_turn(*texts: str, judge: str | None = None) -> Callable[[Prompt], Reply]:
    """Replies in the order generations start (samples start in index order); a judge (its
    prompt lists the answers) says `judge`."""
    queue = list(texts)

    def reply(prompt: Prompt) -> Reply:
        if "Answers:" in prompt.user:
            return Reply((judge or "",))
        return Reply((queue.pop(0),)) if queue else Reply(("",))
    return reply


def two_models(r: Rig) -> Rig:
    r.catalog = FakeCatalog(r.folder, (TINY, OTHER))
    return r


def test_a_majority_vote_breaks_its_tie_by_the_first_ballot_and_says_so(tmp_path):
    r = rig(tmp_path, in_turn("Answer: yes, sure", "Answer: No.", "no idea", "answer: YES", "Answer: no"),
            journal=True)
    out = execute(r.engine(), spec_of(tmp_path, voter(Vote(5, extract=YES_NO, temperature=1.5))))
    record = out.results["a"]
    assert out.status("a") == "completed" and record.output == "Answer: yes, sure"
    vote = thaw(record.detail)["vote"]
    assert vote == {"ballots": {"yes": 2, "no": 2}, "agreement": 0.4, "samples": 5, "winner": "yes",
                    "by": "majority", "abstained": 1, "models": [TINY], "pick": 0, "tie": ["yes", "no"]}
    assert len(r.runtime.prompts) == 5 and {p.temperature for p in r.runtime.prompts} == {1.5}
    assert record.usage.completion_tokens == 5  # every sample's
    began = [e.agent for e in out.of(AgentBegan)]
    assert began[0] == "a" and sorted(began[1:]) == [f"a/s{i}" for i in range(5)]
    ended = [e.agent for e in out.of(AgentEnded)]
    assert sorted(ended[:5]) == [f"a/s{i}" for i in range(5)] and ended[5:] == ["a"]  # samples first
    journal = read_journal(next((tmp_path / "runs").glob("*.journal")))
    parts = [e.part for e in journal.events if isinstance(e, PartDone)]
    assert sorted(parts) == [f"s{i}" for i in range(5)]
    [ok] = [e for e in journal.events if isinstance(e, AgentSucceeded)]
    assert thaw(ok.detail)["vote"]["winner"] == "yes"  # the detail is journaled with the result
    assert thaw(out.result.to_json()["results"]["a"]["vote"]) == vote


def test_samples_are_spread_over_the_vote_models_with_distinct_seeds(tmp_path):
    r = two_models(rig(tmp_path, in_turn("b", "a", "a", "b")))
    spec = spec_of(tmp_path, voter(Vote(4, models=(TINY, OTHER))))
    mesh = FakeMesh(r.runtime, nodes={"me-id": (TINY, OTHER)})
    r.mesh = mesh
    engine = r.engine()
    out = execute(engine, spec)
    assert [g.model for g in mesh.generations] == [TINY, OTHER, TINY, OTHER]
    assert [g.params.seed for g in mesh.generations] == [7, 8, 9, 10]  # the run's seed (7) + i
    assert [g.agent for g in mesh.generations] == ["a/s0", "a/s1", "a/s2", "a/s3"]
    vote = thaw(out.results["a"].detail)["vote"]
    assert vote["models"] == [TINY, OTHER] and vote["winner"] == "b" and vote["tie"] == ["b", "a"]
    assert out.results["a"].node_id == "pi-id" and out.results["a"].nodes == ("pi-id",)


def test_no_ballot_at_all_fails_the_agent(tmp_path):
    r = rig(tmp_path, in_turn("maybe", "who knows", "perhaps"))
    out = execute(r.engine(), spec_of(tmp_path, voter(Vote(3, extract=YES_NO))))
    assert out.status("a") == "failed"
    assert out.results["a"].error == f"none of the 3 samples matched extract '{YES_NO}'"


def test_a_judge_picks_a_sample_and_an_unusable_answer_falls_back_to_the_majority(tmp_path):
    judged = Vote(3, by="judge", judge=Judge(system_prompt="pick one"))
    r = rig(tmp_path, in_turn("red", "blue", "blue", judge="I prefer answer 1."))
    out = execute(r.engine(), spec_of(tmp_path, voter(judged)))
    assert out.results["a"].output == "red"
    vote = thaw(out.results["a"].detail)["vote"]
    assert (vote["by"], vote["winner"], vote["pick"], vote["agreement"]) == ("judge", "red", 0, 0.3333)
    [judge] = [p for p in r.runtime.prompts if p.system == "pick one"]
    assert judge.temperature == 0.0 and judge.max_tokens == 32 and "[2]\nblue" in judge.user
    assert "a/judge" in [e.agent for e in out.of(AgentBegan)]

    r = rig(tmp_path, in_turn("red", "blue", "blue", judge="they are all fine"))
    out = execute(r.engine(), spec_of(tmp_path, voter(judged)))
    vote = thaw(out.results["a"].detail)["vote"]
    assert out.results["a"].output == "blue" and vote["winner"] == "blue" and "majority used" in vote["note"]


def test_a_vote_script_chooses_a_sample_or_writes_the_output(tmp_path):
    (tmp_path / "pick.py").write_text("")
    r = rig(tmp_path, in_turn("x", "y", "y"))
    r.scripts.behaviour["pick.py"] = lambda payload: {"choice": 0}
    out = execute(r.engine(), spec_of(tmp_path, voter(Vote(3, by="script", script="pick.py"))))
    assert out.results["a"].output == "x" and thaw(out.results["a"].detail)["vote"]["winner"] == "x"
    [(name, payload, _)] = r.scripts.calls
    assert name == "pick.py" and payload["ballots"] == {"x": 1, "y": 2} and payload["agent_name"] == "a"
    assert [s["index"] for s in payload["samples"]] == [0, 1, 2] and payload["samples"][1]["output"] == "y"

    r = rig(tmp_path, in_turn("x", "y", "y"))
    r.scripts.behaviour["pick.py"] = lambda payload: {"output": "merged"}
    out = execute(r.engine(), spec_of(tmp_path, voter(Vote(3, by="script", script="pick.py"))))
    assert out.results["a"].output == "merged"

    r = rig(tmp_path, in_turn("x", "y", "y"))
    r.scripts.behaviour["pick.py"] = lambda payload: {"choice": 9}
    out = execute(r.engine(), spec_of(tmp_path, voter(Vote(3, by="script", script="pick.py"))))
    assert out.status("a") == "failed" and '{"choice": INDEX}' in out.results["a"].error


def cascade(*levels: CascadeLevel) -> AgentSpec:
    return AgentSpec(name=AgentName("c"), task=CascadeTask(levels=levels))


AGREED = Condition(FieldRef(AgentName("agreement")), ">=", 0.67)


def test_a_cascade_moves_on_when_its_level_is_not_accepted(tmp_path):
    r = two_models(rig(tmp_path, in_turn("positive", "negative", "positive?", "Negative")))
    spec = spec_of(tmp_path, cascade(
        CascadeLevel(LlmTask(model=TINY, vote=Vote(3, extract="(?i)(positive|negative)")), AGREED),
        CascadeLevel(LlmTask(model=OTHER, max_tokens=32))))
    out = execute(r.engine(), spec)
    record = out.results["c"]
    assert out.status("c") == "completed" and record.output == "Negative"
    assert thaw(record.detail) == {"cascade": {"level": 1, "tried": 2, "levels": [
        {"model": TINY, "accepted": False, "agreement": 0.6667}, {"model": OTHER, "accepted": True}]}}
    assert [p.model for p in r.runtime.prompts] == [TINY, TINY, TINY, OTHER] and r.runtime.prompts[3].max_tokens == 32
    assert record.usage.completion_tokens == 4
    began = sorted(e.agent for e in out.of(AgentBegan))
    assert began == ["c", "c/L0/s0", "c/L0/s1", "c/L0/s2", "c/L1"]


def test_a_cascade_stops_at_the_first_level_accepted(tmp_path):
    r = two_models(rig(tmp_path, in_turn("positive", "Positive.", "negative")))
    spec = spec_of(tmp_path, cascade(
        CascadeLevel(LlmTask(model=TINY, vote=Vote(3, extract="(?i)(positive|negative)")),
                     Condition(FieldRef(AgentName("agreement")), ">", 0.5)),
        CascadeLevel(LlmTask(model=OTHER))))
    out = execute(r.engine(), spec)
    detail = thaw(out.results["c"].detail)
    assert out.results["c"].output == "positive" and detail["cascade"]["level"] == 0
    assert detail["cascade"]["tried"] == 1 and detail["vote"]["agreement"] == 0.6667
    assert len(r.runtime.prompts) == 3  # the second level never ran


def test_numeric_accept_if_over_a_single_generation_level(tmp_path):
    r = two_models(rig(tmp_path, lambda p: Reply(("a", "b", "c", "d")) if p.model == TINY else Reply(("short",))))
    few = Condition(FieldRef(AgentName("completion_tokens")), "<", 3)
    spec = spec_of(tmp_path, cascade(CascadeLevel(LlmTask(model=TINY), few), CascadeLevel(LlmTask(model=OTHER))))
    out = execute(r.engine(), spec)
    assert out.results["c"].output == "short"
    assert thaw(out.results["c"].detail)["cascade"]["levels"][0] == {"model": TINY, "accepted": False}


def test_a_retry_reruns_only_the_samples_that_failed(tmp_path):
    calls = {"n": 0}

    def reply(prompt: Prompt) -> Reply:
        calls["n"] += 1
        return Reply(("boom",), error="runner died") if calls["n"] == 2 else Reply(("same",))
    r = rig(tmp_path, reply)
    spec = spec_of(tmp_path, AgentSpec(name=AgentName("a"), task=LlmTask(model=TINY, vote=Vote(4)), retries=1))
    out = execute(r.engine(), spec)
    assert out.status("a") == "completed" and out.results["a"].attempts == 2
    assert calls["n"] == 5  # four samples, then only the failed one again
    assert thaw(out.results["a"].detail)["vote"]["ballots"] == {"same": 4}


def test_a_resumed_run_redoes_no_finished_sample_or_level(tmp_path):
    failing = {"on": True}

    def reply(prompt: Prompt) -> Reply:
        if prompt.model == OTHER and failing["on"]:
            return Reply(error="out of memory")
        return Reply(("yes",) if prompt.model == TINY else ("no",))
    r = two_models(rig(tmp_path, reply, journal=True))
    spec = spec_of(tmp_path, cascade(
        CascadeLevel(LlmTask(model=TINY, vote=Vote(3)), Condition(FieldRef(AgentName("samples")), ">", 3)),
        CascadeLevel(LlmTask(model=OTHER, vote=Vote(2)))))
    engine = r.engine()
    first = execute(engine, spec)
    assert first.status("c") == "failed" and len(r.runtime.prompts) == 3 + 2 * 3  # level 1 tried 3 times
    journal_path = next((tmp_path / "runs").glob("*.journal"))
    contents = read_journal(journal_path)
    done = {e.part: e.result.usage.completion_tokens for e in contents.events if isinstance(e, PartDone)}
    assert done == {"L0": 0, "L0.s0": 1, "L0.s1": 1, "L0.s2": 1}  # each token in one part only

    failing["on"] = False
    before = len(r.runtime.prompts)

    async def resume(loop: object) -> object:
        bound = await asyncio.to_thread(engine.preflight, spec)
        return [e async for e in engine.run(bound, "go", resume=contents)]
    events = run_virtual(resume)
    [finished] = [e for e in events if isinstance(e, RunFinished)]
    record = dict(finished.result.results)["c"]
    assert record.output == "no" and [p.model for p in r.runtime.prompts[before:]] == [OTHER, OTHER]
    assert thaw(record.detail)["cascade"]["levels"][0] == {"model": TINY, "accepted": False, "agreement": 1.0}
    assert record.usage.completion_tokens == 5  # the reused level's samples count too
    parts = [e.part for e in read_journal(journal_path).events if isinstance(e, PartDone)]
    assert len(parts) == len(set(parts))  # no part journaled twice


def test_every_model_a_vote_or_cascade_uses_is_bound_or_the_run_is_refused(tmp_path):
    from orc.node.coordinator.binding import RunRefused

    r = rig(tmp_path)
    bad_vote = voter(Vote(3, models=(TINY, "ghost")))
    bad_judge = AgentSpec(name=AgentName("j"), task=LlmTask(model=TINY, vote=Vote(2, by="judge",
                                                                                   judge=Judge(model="nobody"))))
    bad_level = cascade(CascadeLevel(LlmTask(model=TINY), AGREED), CascadeLevel(LlmTask(model="far")))
    with pytest.raises(RunRefused) as refused:
        r.engine().preflight(spec_of(tmp_path, bad_vote, bad_judge, bad_level))
    assert refused.value.exit_code == 3
    messages = [p.message for p in refused.value.problems]
    assert any(m.startswith("vote.models: no node has model 'ghost'") for m in messages)
    assert any(m.startswith("its judge: no node has model 'nobody'") for m in messages)
    assert any(m.startswith("cascade level 2: no node has model 'far'") for m in messages)

    r = two_models(rig(tmp_path))
    good = r.engine().preflight(spec_of(tmp_path, voter(Vote(3, models=(OTHER,), by="judge")),
                                        cascade(CascadeLevel(LlmTask(model=TINY), AGREED),
                                                CascadeLevel(LlmTask(model=OTHER)))))
    a, c = good.agent("a"), good.agent("c")
    assert [m.ref for m in a.vote.models] == [OTHER] and a.vote.judge.ref == TINY
    assert [level.model.ref for level in c.levels] == [TINY, OTHER] and c.model.ref == TINY
    assert c.levels[1].limits.timeout_s == 300 and c.levels[0].accept_if == AGREED


def test_a_cascade_level_none_of_whose_samples_answered_escalates_even_if_accept_if_holds(tmp_path):
    r = two_models(rig(tmp_path, in_turn("hmm", "well", "dunno", "Positive")))
    low = Condition(FieldRef(AgentName("agreement")), "<", 0.5)  # would hold for an agreement of 0
    spec = spec_of(tmp_path, cascade(
        CascadeLevel(LlmTask(model=TINY, vote=Vote(3, extract="(?i)(positive|negative)")), low),
        CascadeLevel(LlmTask(model=OTHER))))
    out = execute(r.engine(), spec)
    assert out.results["c"].output == "Positive"
    assert thaw(out.results["c"].detail)["cascade"]["levels"] == [
        {"model": TINY, "accepted": False, "agreement": 0.0}, {"model": OTHER, "accepted": True}]


def test_plan_forecasts_a_vote_and_a_cascade_by_their_first_generation(tmp_path):
    r = two_models(rig(tmp_path))
    engine = r.engine()
    bound = engine.preflight(spec_of(tmp_path, voter(Vote(5)), cascade(CascadeLevel(LlmTask(model=OTHER), AGREED),
                                                                      CascadeLevel(LlmTask(model=TINY)))))
    plans = {plan.agent: plan for plan in engine.forecast(bound, "go").agents}
    assert plans["a"].model == TINY and plans["a"].candidates and "vote: 5 samples" in plans["a"].note
    assert plans["c"].model == OTHER and plans["c"].candidates and "cascade of 2 levels" in plans["c"].note
