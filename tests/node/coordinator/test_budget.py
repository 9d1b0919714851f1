"""Budgets: the meter alone, then runs on the fake engine (virtual time) stopped by the run's
budget or an agent's, and a resume that counts what the journal shows was spent."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from engine_fakes import TINY, Reply, by_system_prompt, execute, load, rig

from orc.node.coordinator.budget import RUN, BudgetSpent, Meter, spent_before
from orc.node.protocol.events import AgentEnded, TokenStreamed
from orc.scheduler.ensemble import Budget, EnsembleSpec
from orc.scheduler.journal import JournalContents, RunEnded, RunHeader, read_journal
from orc.scheduler.run import AgentSucceeded, PartDone, PartResult, RunId, Usage


class Clock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def run(coroutine):
    return asyncio.run(coroutine)


# ---- the meter --------------------------------------------------------------------------------

def test_a_generation_is_clamped_to_the_tightest_budget_over_it_less_what_running_ones_claimed():
    async def scenario():
        meter = Meter(Budget(max_tokens=100), Clock(), 100.0)
        meter.open("a", Budget(max_tokens=30))
        first = await meter.lease((RUN, "a"), 256)
        other = await meter.lease((RUN, "b"), 256)  # no budget of its own: the run's, less a's claim
        assert (first.max_tokens, other.max_tokens) == (30, 70)
        small = await meter.lease((RUN, "c"), 256)
        return small

    # Everything is claimed: a third generation waits for a claim to end (here: forever).
    with pytest.raises(asyncio.TimeoutError):
        run(asyncio.wait_for(scenario(), 0.2))


def test_a_waiting_generation_gets_what_a_finished_one_left_and_none_once_it_is_spent():
    async def scenario():
        meter = Meter(Budget(max_tokens=50), Clock(), 100.0)
        first = await meter.lease((RUN,), 60)  # all 50
        waiting = asyncio.ensure_future(meter.lease((RUN,), 40))
        await asyncio.sleep(0)
        assert not waiting.done()
        first.done(Usage(12, 18))
        first.close()
        second = await waiting
        assert second.max_tokens == 20 and meter.exhausted() is None
        second.done(Usage(15, 20))  # the prompt pushes it past the budget
        second.close()
        assert meter.total == Usage(27, 38)
        assert meter.exhausted() == "budget: the run's max_tokens 50 is spent (65 used)"
        with pytest.raises(BudgetSpent, match="max_tokens 50 is spent"):
            await meter.lease((RUN,), 1)
        report = meter.report()
        assert (report.used_tokens, report.exhausted) == (65, meter.exhausted())

    run(scenario())


def test_a_generation_that_never_finished_counts_what_it_streamed():
    async def scenario():
        meter = Meter(None, Clock(), 100.0)
        lease = await meter.lease((RUN, "a"), 256)
        assert lease.max_tokens == 256  # no budget: nothing clamped
        lease.streamed(7)
        lease.close()
        lease.close()  # idempotent
        assert meter.total == Usage(0, 7) and meter.report() is None

    run(scenario())


def test_spent_tokens_stop_the_work_only_after_the_running_generations_end():
    async def scenario():
        meter = Meter(Budget(max_tokens=10), Clock(), 100.0)
        a = await meter.lease((RUN,), 6)
        b = await meter.lease((RUN,), 6)
        watch = asyncio.ensure_future(meter.ran_out())
        a.done(Usage(5, 6))
        a.close()
        await asyncio.sleep(0.01)
        assert meter.exhausted() is not None and not watch.done()  # b still runs, clamped to 4
        b.done(Usage(5, 4))
        b.close()
        assert await asyncio.wait_for(watch, 1) == "budget: the run's max_tokens 10 is spent (11 used)"

    run(scenario())


def test_seconds_count_from_the_run_and_from_an_agents_first_start():
    async def scenario():
        clock = Clock(100.0)
        meter = Meter(Budget(max_seconds=5), clock, 100.0)
        clock.now = 103.0
        meter.open("a", Budget(max_seconds=1))
        meter.open("a", Budget(max_seconds=1))  # a retry does not restart its clock
        clock.now = 104.5
        assert meter.exhausted((RUN,)) is None
        assert meter.exhausted((RUN, "a")) == "budget: agent 'a''s max_seconds 1 ran out (1.5 s used)"
        assert await asyncio.wait_for(meter.ran_out("a"), 1) == meter.exhausted((RUN, "a"))
        clock.now = 105.0
        assert meter.exhausted() == "budget: the run's max_seconds 5 ran out (5.0 s used)"
        with pytest.raises(BudgetSpent):
            await meter.lease((RUN, "b"), 10)

    run(scenario())


def test_a_resume_starts_with_what_the_journal_shows_was_spent():
    header = RunHeader(RunId("r"), "e", None, "x", 1.0, ("a", "v"))
    events = (AgentSucceeded("a", "ok", 2.0, Usage(10, 5)),
              PartDone("v", "s0", PartResult("yes", Usage(7, 3)), 3.0),
              PartDone("v", "s1", PartResult("no", Usage(7, 4)), 3.0))
    assert spent_before(JournalContents(header, events, ())) == Usage(24, 12)
    # The end record of an earlier session knows more (failed attempts): it wins when larger.
    ended = (RunEnded("completed_with_errors", 4.0, "budget: ...", Usage(40, 20)),)
    assert spent_before(JournalContents(header, events, ended)) == Usage(40, 20)


# ---- runs -------------------------------------------------------------------------------------

def obeying(tokens: int, delay_s: float = 0.0):
    """A model that writes `tokens` words, or fewer if max_tokens says so."""
    return lambda prompt: Reply(("w ",) * min(tokens, prompt.max_tokens), delay_s=delay_s)


def with_budget(spec: EnsembleSpec, run: Budget | None = None, **agents: Budget) -> EnsembleSpec:
    return replace(spec, budget=run,
                   agents=tuple(replace(a, budget=agents.get(a.name, a.budget)) for a in spec.agents))


def three(tmp_path):
    return load(tmp_path, "three", "".join(f"- {{name: {n}, model: {TINY}, system_prompt: {n}}}\n"
                                           for n in ("a", "b", "c")))


def test_a_spent_run_budget_fails_what_has_not_run_and_the_run_ends_naming_it(tmp_path):
    r = rig(tmp_path, obeying(50))
    out = execute(r.engine(), with_budget(three(tmp_path), Budget(max_tokens=20)))
    [only] = r.runtime.prompts
    assert only.max_tokens == 20  # clamped from the profile's 256 to the whole budget
    ran = only.system
    assert out.status(ran) == "completed"
    message = out.result.reason
    assert message is not None and message.startswith("budget: the run's max_tokens 20 is spent (")
    for name in {"a", "b", "c"} - {ran}:
        assert out.status(name) == "failed" and out.results[name].error == message
    assert out.result.status == "completed_with_errors" and out.result.exit_code == 1
    data = out.result.to_json()
    total = data["usage"]["total_tokens"]
    assert data["usage"]["completion_tokens"] == 20 and total <= 20 + out.results[ran].usage.prompt_tokens
    assert data["budget"] == {"max_tokens": 20, "max_seconds": None, "used_tokens": total,
                              "used_seconds": data["budget"]["used_seconds"], "exhausted": message}


def test_the_run_out_of_time_cancels_running_generations_and_fails_the_ones_not_started(tmp_path):
    r = rig(tmp_path, by_system_prompt({"slow": Reply(("w",) * 100, delay_s=0.1)}))
    spec = load(tmp_path, "t", f"""\
        - {{name: slow, model: {TINY}, system_prompt: slow}}
        - {{name: after, model: {TINY}, system_prompt: after, depends_on: [slow]}}
        """)
    out = execute(r.engine(), with_budget(spec, Budget(max_seconds=1.0)))
    message = "budget: the run's max_seconds 1 ran out (1.0 s used)"
    assert out.result.reason == message and out.result.status == "completed_with_errors"
    assert out.results["slow"].error == message and out.results["after"].error == message
    assert out.status("after") == "failed"  # failed, not skipped, and never generated
    assert [p.system for p in r.runtime.prompts] == ["slow"]
    assert abs(out.elapsed_s - 1.0) < 0.05  # stopped at its limit (virtual time)
    streamed = [e for e in out.of(TokenStreamed) if e.agent == "slow"]
    assert 8 <= len(streamed) <= 10  # the runtime stopped decoding when cancelled


def test_an_agent_budget_clamps_and_stops_only_that_agent(tmp_path):
    r = rig(tmp_path, by_system_prompt({"slow": Reply(("w",) * 100, delay_s=0.1)}, Reply(("w",) * 5)))
    spec = load(tmp_path, "t", f"""\
        - {{name: small, model: {TINY}, system_prompt: small}}
        - {{name: slow, model: {TINY}, system_prompt: slow}}
        - {{name: free, model: {TINY}, system_prompt: free}}
        """)
    out = execute(r.engine(), with_budget(spec, small=Budget(max_tokens=3), slow=Budget(max_seconds=0.5)))
    clamp = {p.system: p.max_tokens for p in r.runtime.prompts}
    assert clamp["small"] == 3 and clamp["free"] == clamp["slow"] == 256
    assert out.status("small") == "completed" and out.status("free") == "completed"
    assert out.results["slow"].error == "budget: agent 'slow''s max_seconds 0.5 ran out (0.5 s used)"
    assert out.result.status == "completed_with_errors" and out.result.reason is None  # the run's own budget is fine
    data = out.result.to_json()
    assert "budget" not in data and "budget" not in data["results"]["free"]
    assert data["results"]["slow"]["budget"]["exhausted"] == out.results["slow"].error
    assert data["results"]["small"]["budget"]["max_tokens"] == 3


def test_a_resumed_run_counts_the_tokens_spent_before_it(tmp_path):
    (tmp_path / "boom.py").write_text("")
    r = rig(tmp_path, obeying(10), journal=True)
    r.scripts.behaviour["boom.py"] = lambda payload: {"success": False, "error": "boom"}
    spec = load(tmp_path, "res", f"""\
        - {{name: first, model: {TINY}, system_prompt: first}}
        - {{name: boom, script: boom.py}}
        - {{name: last, model: {TINY}, system_prompt: last, depends_on: [first, boom]}}
        """)
    out = execute(r.engine(), spec)
    spent = out.result.to_json()["usage"]["total_tokens"]
    assert out.status("boom") == "failed" and spent > 10
    journal = read_journal(next((tmp_path / "runs").iterdir()))
    assert journal.finished.usage is not None and journal.finished.reason is None
    # Resumed with a budget the first session already spent: nothing more starts.
    r.scripts.behaviour["boom.py"] = lambda payload: "fine now"
    again = execute(r.engine(), with_budget(spec, Budget(max_tokens=spent)), resume=journal)
    message = f"budget: the run's max_tokens {spent} is spent ({spent} used)"
    assert again.results["boom"].error == message == again.result.reason
    assert again.result.status == "completed_with_errors" and r.scripts.names() == ["boom.py"]
    assert again.result.to_json()["budget"]["used_tokens"] == spent == again.result.to_json()["usage"]["total_tokens"]
    assert sorted(e.agent for e in again.of(AgentEnded) if e.reused) == ["first", "last"]
    ended = read_journal(next((tmp_path / "runs").iterdir())).finished
    assert ended.reason == message and ended.usage.prompt_tokens + ended.usage.completion_tokens == spent
    # With room left, the same resume runs it.
    third = execute(r.engine(), with_budget(spec, Budget(max_tokens=spent + 1)),
                    resume=read_journal(next((tmp_path / "runs").iterdir())))
    assert third.status("boom") == "completed" and third.result.status == "completed"
    assert third.result.budget.used_tokens == spent and third.result.budget.exhausted is None


def test_a_nested_run_counts_toward_its_agents_budget_and_the_runs(tmp_path):
    r = rig(tmp_path, obeying(50))
    load(tmp_path, "inner", f"""\
        - {{name: x, model: {TINY}, system_prompt: x}}
        - {{name: y, model: {TINY}, system_prompt: y, depends_on: [x]}}
        """)
    spec = load(tmp_path, "outer", f"""\
        - {{name: n, ensemble: inner, budget: {{max_tokens: 5}}}}
        - {{name: other, model: {TINY}, system_prompt: other, depends_on: [n]}}
        """)
    out = execute(r.engine(), spec)
    assert [(p.system, p.max_tokens) for p in r.runtime.prompts] == [("x", 5), ("other", 256)]
    error = out.results["n"].error
    assert error is not None and error.startswith("budget: agent 'n''s max_tokens 5 is spent (")
    assert out.status("other") == "completed" and out.result.reason is None
    data = out.result.to_json()
    assert data["results"]["n"]["budget"]["exhausted"] == error
    assert data["usage"]["completion_tokens"] == 5 + 50  # the nested generation counts toward the run


def test_a_votes_samples_share_the_budget_and_one_refused_fails_the_vote_naming_it(tmp_path):
    r = rig(tmp_path, obeying(50))
    spec = load(tmp_path, "v", f"""\
        - name: v
          model: {TINY}
          system_prompt: v
          max_tokens: 4
          vote: {{samples: 3}}
        """)
    out = execute(r.engine(), with_budget(spec, Budget(max_tokens=6)))
    assert sorted(p.max_tokens for p in r.runtime.prompts) == [2, 4]  # the third sample found nothing left
    error = out.results["v"].error
    assert error == out.result.reason and error.startswith("budget: the run's max_tokens 6 is spent (")
    assert out.results["v"].attempts == 1  # a budget is not retried
    assert out.result.to_json()["usage"]["completion_tokens"] == 6
    # The failed vote reports what its two finished samples spent, not nothing.
    assert out.results["v"].usage.completion_tokens == 6 and out.results["v"].status.value == "failed"
