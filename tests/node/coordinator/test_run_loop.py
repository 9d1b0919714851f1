"""The run loop in-process: failure isolation, retries, time limits on a virtual clock, the
mesh's placements, and resuming from a journal."""

from __future__ import annotations

from engine_fakes import TINY, FakeMesh, Reply, by_system_prompt, digest, execute, failing, load, rig

from orc.node.protocol.events import AgentEnded, AgentPlacedOn, AgentRetrying, AgentWorking, RunBegan
from orc.scheduler.journal import read_journal
from orc.scheduler.profiles import builtin_profiles, load_profiles
from orc.scheduler.run import AgentBound


def test_one_failing_agent_leaves_independent_ones_alone_and_dependents_see_why(tmp_path):
    (tmp_path / "boom.py").write_text("")
    r = rig(tmp_path, by_system_prompt({"after": Reply(("noted",))}))
    r.scripts.behaviour["boom.py"] = failing("exit 1: boom")
    spec = load(tmp_path, "iso", f"""\
        - {{name: bad, script: boom.py}}
        - {{name: fine, model: {TINY}, system_prompt: fine}}
        - {{name: after, model: {TINY}, system_prompt: after, depends_on: [bad]}}
        - {{name: guarded, model: {TINY}, depends_on: [bad], when: "${{bad.ok}}"}}
        """)
    out = execute(r.engine(), spec)
    assert out.status("bad") == "failed" and out.results["bad"].error == "exit 1: boom"
    assert out.status("fine") == "completed"
    assert out.status("after") == "completed" and "(this agent failed: exit 1: boom)" in r.runtime.prompts[-1].user
    assert out.status("guarded") == "skipped"
    assert out.results["guarded"].error == "condition ${bad.ok} cannot be checked: 'bad' failed"
    assert out.result.status == "completed_with_errors" and out.result.exit_code == 1


def test_a_failed_generation_is_retried_and_the_retry_is_reported(tmp_path):
    calls = []

    def flaky(prompt):
        calls.append(prompt)
        return Reply(("x",), error="the runtime crashed") if len(calls) == 1 else Reply(("fine",))

    r = rig(tmp_path, flaky)
    out = execute(r.engine(), load(tmp_path, "r", f"- {{name: a, model: {TINY}}}\n"))
    assert out.status("a") == "completed" and out.results["a"].attempts == 2 and out.results["a"].output == "fine"
    [retrying] = out.of(AgentRetrying)
    assert (retrying.agent, retrying.attempt) == ("a", 1) and "the runtime crashed" in retrying.error


def test_a_script_failure_is_retried_only_when_the_agent_asks(tmp_path):
    (tmp_path / "once.py").write_text("")
    r = rig(tmp_path)
    outcomes = iter([failing("exit 1"), lambda p: "second time"])
    r.scripts.behaviour["once.py"] = lambda p: next(outcomes)(p)
    out = execute(r.engine(), load(tmp_path, "s", "- {name: s, script: once.py, retries: 1}\n"))
    assert out.status("s") == "completed" and out.results["s"].attempts == 2
    r2 = rig(tmp_path)
    r2.scripts.behaviour["once.py"] = failing("exit 1")
    out2 = execute(r2.engine(), load(tmp_path, "s2", "- {name: s, script: once.py}\n"))
    assert out2.status("s") == "failed" and out2.results["s"].attempts == 1 and not out2.of(AgentRetrying)


def test_a_generation_past_its_timeout_fails_naming_the_setting_and_its_file(tmp_path):
    r = rig(tmp_path, lambda prompt: Reply(("w",) * 40, delay_s=0.1))
    spec = load(tmp_path, "t", f"- {{name: slow, model: {TINY}, timeout_seconds: 0.35}}\n")
    out = execute(r.engine(), spec)
    assert out.results["slow"].error == ("timed out after 0.35 s of generating "
                                         "(timeout_seconds: 0.35 of agent 'slow' in t.yaml)")
    assert 0.35 <= out.elapsed_s < 4.0  # stopped at its limit, not after the whole answer (virtual time)


def test_waiting_for_the_model_does_not_count_against_the_timeout(tmp_path):
    # Four agents share one model slot: each generates for 0.4 s, the last waits 1.2 s; all have 1 s.
    r = rig(tmp_path, lambda prompt: Reply(("w",) * 4, delay_s=0.1))
    spec = load(tmp_path, "t", "".join(f"- {{name: a{i}, model: {TINY}, timeout_seconds: 1}}\n" for i in range(4)))
    out = execute(r.engine(), spec)
    assert {n: out.status(n) for n in out.results} == {f"a{i}": "completed" for i in range(4)}
    waited = sorted(e.waited_s for e in out.of(AgentWorking))
    assert waited == [0.0, 0.4, 0.8, 1.2]  # the virtual clock: exact
    assert abs(out.elapsed_s - 1.6) < 1e-6


def test_waiting_for_a_model_is_bounded_by_its_own_setting(tmp_path):
    r = rig(tmp_path, lambda prompt: Reply(("w",) * 10, delay_s=0.1))
    spec = load(tmp_path, "w", "".join(f"- {{name: {n}, model: {TINY}, queue_timeout_seconds: 0.2}}\n"
                                       for n in ("first", "second")))
    out = execute(r.engine(), spec)
    assert out.status("first") == "completed" and out.status("second") == "failed"
    assert out.results["second"].error == ("waited 0.2 s for a model without starting "
                                           "(queue_timeout_seconds: 0.2 of agent 'second' in w.yaml)")


def test_a_script_past_its_timeout_is_stopped(tmp_path):
    (tmp_path / "slow.py").write_text("")
    r = rig(tmp_path)
    r.scripts.delay_s["slow.py"] = 3600.0
    out = execute(r.engine(), load(tmp_path, "s", "- {name: s, script: slow.py}\n"))
    assert out.results["s"].error == "timed out after 300 s (orc's default of 300 s)"
    assert abs(out.elapsed_s - 300.0) < 1e-6


def test_a_profile_timeout_applies_and_names_its_config_file(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(f"model_profiles:\n  fast: {{model: {TINY}, timeout_seconds: 2}}\n")
    r = rig(tmp_path, lambda prompt: Reply(("w",) * 100, delay_s=0.1),
            profiles=load_profiles([config], builtin_profiles(TINY)))
    out = execute(r.engine(), load(tmp_path, "p", "- {name: quick, model_profile: fast}\n"))
    assert out.results["quick"].error == f"timed out after 2 s of generating (timeout_seconds: 2 of profile 'fast' in {config})"


def test_on_the_mesh_placements_are_journaled_and_the_timeout_starts_when_the_node_starts(tmp_path):
    r = rig(tmp_path, lambda prompt: Reply(("done",), delay_s=0.05), journal=True)
    r.mesh = FakeMesh(r.runtime, queued_s=30.0)
    spec = load(tmp_path, "m", f"- {{name: critic, model: {TINY}, timeout_seconds: 0.5, queue_timeout_seconds: 60}}\n")
    out = execute(r.engine(), spec)
    assert out.status("critic") == "completed" and out.results["critic"].nodes == ("pi-id",)
    assert out.of(AgentPlacedOn) == [AgentPlacedOn("critic", "pi-id", "pi")]
    assert AgentWorking("critic", "pi-id", 30.0) in out.events
    [generation] = r.mesh.generations
    assert (generation.deadline_s, generation.wait_s, generation.sha256) == (0.5, 60, digest(TINY))
    assert out.of(RunBegan)[0].journal is not None
    bound = [e for e in read_journal(out.of(RunBegan)[0].journal).events if isinstance(e, AgentBound)]
    assert [(e.agent, e.node_id, e.failover) for e in bound] == [("critic", "pi-id", False)]


def test_on_the_mesh_no_room_names_the_setting_and_every_node(tmp_path):
    r = rig(tmp_path)
    r.mesh = FakeMesh(r.runtime, no_room=(("pi", "every place is taken"), ("nas", "queue full")))
    out = execute(r.engine(), load(tmp_path, "m", f"- {{name: critic, model: {TINY}}}\n"))
    assert out.results["critic"].error == ("waited 300 s for a model without starting (orc's default of 300 s); "
                                           "last answers: pi: every place is taken; nas: queue full")


def test_resume_reuses_completed_agents_and_reruns_the_rest(tmp_path):
    (tmp_path / "flaky.py").write_text("")
    r = rig(tmp_path, by_system_prompt({"first": Reply(("one",)), "last": Reply(("three",))}), journal=True)
    r.scripts.behaviour["flaky.py"] = failing("exit 1: not yet")
    spec = load(tmp_path, "k", f"""\
        - {{name: first, model: {TINY}, system_prompt: first}}
        - {{name: middle, script: flaky.py, depends_on: [first]}}
        - {{name: last, model: {TINY}, system_prompt: last, depends_on: [middle], when: "${{middle.ok}}"}}
        """)
    engine = r.engine()
    failed = execute(engine, spec)
    assert [failed.status(n) for n in ("first", "middle", "last")] == ["completed", "failed", "skipped"]
    run_id = failed.of(RunBegan)[0].run_id
    r.runtime.prompts.clear()
    r.scripts.behaviour["flaky.py"] = lambda p: {"ok": True}
    journal = read_journal(failed.of(RunBegan)[0].journal)
    resumed = execute(engine, spec, journal.header.input, resume=journal)
    began = resumed.of(RunBegan)[0]
    assert began.resumed and began.run_id == run_id and r.entropy.calls == 1  # no new id drawn
    assert [e.agent for e in resumed.of(AgentEnded) if e.reused] == ["first"]
    assert r.runtime.systems() == ["last"]  # 'first' was not generated again
    assert resumed.result.status == "completed" and resumed.result.deliverable == "three"
    assert read_journal(began.journal).finished.status == "completed"
