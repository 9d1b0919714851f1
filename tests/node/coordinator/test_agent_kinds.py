"""Every agent kind run in-process: the engine with a recording runtime, recording scripts and a
virtual clock (no subprocess, no socket, no sleep)."""

from __future__ import annotations

from engine_fakes import TINY, RecordingScripts, Reply, by_system_prompt, execute, load, rig

from orc.node.protocol.events import AgentBegan, AgentEnded, AgentWorking, RunBegan, TokenStreamed
from orc.scheduler.run import derive_run_id
from orc.scheduler.values import thaw


def test_an_llm_agent_sends_its_prompt_and_streams_the_reply(tmp_path):
    r = rig(tmp_path, lambda prompt: Reply(("Hel", "lo")))
    spec = load(tmp_path, "one", f"- {{name: a, model: {TINY}, system_prompt: be brief, max_tokens: 9}}\n")
    out = execute(r.engine(), spec, "the question")
    [prompt] = r.runtime.prompts
    assert (prompt.model, prompt.system, prompt.user, prompt.max_tokens) == (TINY, "be brief", "the question", 9)
    assert out.result.deliverable == "Hello" and out.status("a") == "completed"
    assert [e.text for e in out.of(TokenStreamed)] == ["Hel", "lo"]
    assert out.of(AgentBegan)[0].model == TINY and out.of(AgentWorking)[0].node_id == "local"
    assert out.results["a"].usage.completion_tokens == 2


def test_run_ids_and_times_come_from_the_injected_clock_and_entropy(tmp_path):
    r = rig(tmp_path)
    spec = load(tmp_path, "one", f"- {{name: a, model: {TINY}}}\n")
    out = execute(r.engine(), spec)
    began = out.of(RunBegan)[0]
    assert began.run_id == derive_run_id("one", began.at, (1).to_bytes(8, "big")) and r.entropy.calls == 1
    assert began.at == 1_700_000_000.0  # the virtual loop's wall clock at its start
    assert out.results["a"].started_at == began.at
    again = execute(r.engine(), spec)
    assert again.of(RunBegan)[0].run_id != began.run_id  # the next nonce


def test_dependencies_reach_the_downstream_prompt(tmp_path):
    r = rig(tmp_path, by_system_prompt({"first": Reply(("alpha",)), "second": Reply(("beta",))}))
    spec = load(tmp_path, "chain", f"""\
        - {{name: a, model: {TINY}, system_prompt: first}}
        - {{name: b, model: {TINY}, system_prompt: second, depends_on: [a]}}
        """)
    out = execute(r.engine(), spec, "topic")
    assert r.runtime.systems() == ["first", "second"]
    assert "[a]\nalpha" in r.runtime.prompts[1].user and r.runtime.prompts[1].user.endswith("Input:\ntopic")
    assert out.result.deliverable == "beta"


def test_a_script_agent_gets_its_payload_in_the_callers_folder(tmp_path):
    (tmp_path / "tool.py").write_text("# run by the fake runner\n")
    r = rig(tmp_path)
    r.scripts.behaviour["tool.py"] = lambda p: {"seen": p["input_data"], "deps": sorted(p["dependencies"])}
    spec = load(tmp_path, "s", f"""\
        - {{name: a, model: {TINY}}}
        - {{name: s, script: tool.py, depends_on: [a], parameters: {{k: 1}}}}
        """)
    out = execute(r.engine(), spec, "hi")
    [(name, payload, cwd)] = r.scripts.calls
    assert name == "tool.py" and cwd == tmp_path
    assert payload["parameters"] == {"k": 1} and payload["context"]["ensemble"] == "s"
    assert payload["dependencies"]["a"] == {"status": "completed", "output": "ok", "error": None}
    assert thaw(out.results["s"].output) == {"seen": "hi", "deps": ["a"]}


def test_only_an_ensemble_that_allows_it_ships_its_scripts(tmp_path):
    (tmp_path / "tool.py").write_text("# run by the fake runners\n")
    (tmp_path / "inner.yaml").write_text("name: inner\nship_scripts: true\nagents:\n  - {name: t, script: tool.py}\n")
    (tmp_path / "outer.yaml").write_text(
        "name: outer\nagents:\n  - {name: here, script: tool.py}\n  - {name: n, ensemble: inner}\n")
    r = rig(tmp_path, shipped=RecordingScripts())
    out = execute(r.engine(), load(tmp_path, "outer"), "hi")
    assert out.status("here") == "completed" and out.status("n") == "completed"
    # The outer file says nothing: its script runs here; the nested file allows shipping: its
    # script goes to the shipping runner, with the same payload a local run would get.
    assert [(name, payload["agent_name"]) for name, payload, _ in r.scripts.calls] == [("tool.py", "here")]
    assert [(name, payload["agent_name"]) for name, payload, _ in r.shipped.calls] == [("tool.py", "t")]
    # Without a shipping runner (the mesh, in-process) the flag changes nothing.
    plain = rig(tmp_path)
    assert execute(plain.engine(), load(tmp_path, "inner"), "hi").status("t") == "completed"
    assert plain.scripts.names() == ["tool.py"]


def test_a_script_that_reports_failure_fails_its_agent(tmp_path):
    (tmp_path / "no.py").write_text("")
    r = rig(tmp_path)
    r.scripts.behaviour["no.py"] = lambda p: {"success": False, "error": "bad input"}
    out = execute(r.engine(), load(tmp_path, "s", "- {name: s, script: no.py}\n"))
    assert out.results["s"].error == "script reported failure: bad input"


def test_a_nested_ensemble_reports_its_agents_under_the_parent_and_delivers(tmp_path):
    load(tmp_path, "inner", f"- {{name: x, model: {TINY}, system_prompt: inner}}\n")
    r = rig(tmp_path, by_system_prompt({"inner": Reply(("deep",))}))
    spec = load(tmp_path, "outer", "- {name: n, ensemble: inner}\n")
    out = execute(r.engine(), spec, "q")
    assert out.results["n"].output == "deep"
    assert [e.agent for e in out.of(AgentEnded)] == ["n/x", "n"]
    assert any(e.agent == "n/x" for e in out.of(TokenStreamed))


def test_a_loop_runs_its_body_until_the_condition_carrying_a_value(tmp_path):
    (tmp_path / "step.py").write_text("")
    load(tmp_path, "counter", "- {name: step, script: step.py}\n")
    r = rig(tmp_path)

    def step(payload: dict) -> dict:
        n = payload["input_data"].get("n", 0) if isinstance(payload["input_data"], dict) else 0
        return {"n": n + 1, "done": n + 1 >= 3, "next": {"n": n + 1}}

    r.scripts.behaviour["step.py"] = step
    spec = load(tmp_path, "looping", """\
        - name: count
          loop: {body: counter, until: "${step.done}", max_iterations: 5, carry: "${step.next}"}
        """)
    out = execute(r.engine(), spec, "start")
    assert out.results["count"].output["iterations"] == 3 and out.results["count"].output["converged"] is True
    assert [e.agent for e in out.of(AgentEnded)][:3] == ["count#1/step", "count#2/step", "count#3/step"]


def test_dispatch_runs_the_ensemble_an_upstream_agent_names(tmp_path):
    (tmp_path / "route.py").write_text("")
    load(tmp_path, "target", f"- {{name: t, model: {TINY}, system_prompt: chosen}}\n")
    r = rig(tmp_path, by_system_prompt({"chosen": Reply(("picked",))}))
    r.scripts.behaviour["route.py"] = lambda p: {"to": "target"}
    spec = load(tmp_path, "router", """\
        - {name: route, script: route.py}
        - {name: go, depends_on: [route], dispatch: "${route.to}"}
        """)
    out = execute(r.engine(), spec)
    assert out.results["go"].output == "picked" and r.runtime.systems() == ["chosen"]


def test_dispatch_to_an_ensemble_that_does_not_exist_fails_only_that_agent(tmp_path):
    (tmp_path / "route.py").write_text("")
    r = rig(tmp_path)
    r.scripts.behaviour["route.py"] = lambda p: {"to": "nowhere"}
    spec = load(tmp_path, "router", f"""\
        - {{name: route, script: route.py}}
        - {{name: go, depends_on: [route], dispatch: "${{route.to}}"}}
        - {{name: other, model: {TINY}}}
        """)
    out = execute(r.engine(), spec)
    assert out.status("go") == "failed" and "dispatch to 'nowhere'" in out.results["go"].error
    assert out.status("other") == "completed"


def test_fan_out_runs_one_generation_per_item(tmp_path):
    (tmp_path / "items.py").write_text("")
    r = rig(tmp_path, lambda prompt: Reply((prompt.user.upper(),)))
    r.scripts.behaviour["items.py"] = lambda p: {"items": ["a", "b", "c"]}
    spec = load(tmp_path, "fan", f"""\
        - {{name: list, script: items.py}}
        - {{name: each, model: {TINY}, depends_on: [list], input_key: items, fan_out: true}}
        """)
    out = execute(r.engine(), spec)
    assert out.results["each"].output == ("A", "B", "C")
    assert sorted(p.user for p in r.runtime.prompts) == ["a", "b", "c"]
    assert sorted({e.agent for e in out.of(TokenStreamed)}) == ["each[0]", "each[1]", "each[2]"]
    assert [e.instances for e in out.of(AgentBegan) if e.agent == "each"] == [3]


def test_when_skips_a_branch_and_everything_below_it(tmp_path):
    (tmp_path / "classify.py").write_text("")
    r = rig(tmp_path)
    r.scripts.behaviour["classify.py"] = lambda p: {"is_code": False}
    spec = load(tmp_path, "branch", f"""\
        - {{name: classify, script: classify.py}}
        - {{name: code, model: {TINY}, system_prompt: code, depends_on: [classify], when: "${{classify.is_code}}"}}
        - {{name: polish, model: {TINY}, system_prompt: polish, depends_on: [code]}}
        - {{name: prose, model: {TINY}, system_prompt: prose, depends_on: [classify]}}
        """)
    out = execute(r.engine(), spec)
    assert (out.status("code"), out.status("polish"), out.status("prose")) == ("skipped", "skipped", "completed")
    assert out.results["code"].error == "condition ${classify.is_code} is false"
    assert out.results["polish"].error == "all of its dependencies were skipped"
    assert r.runtime.systems() == ["prose"]


def test_json_output_is_parsed_or_fails_the_agent(tmp_path):
    r = rig(tmp_path, by_system_prompt({"good": Reply(('{"k": ', '1}')), "bad": Reply(("not json",))}))
    spec = load(tmp_path, "j", f"""\
        - {{name: good, model: {TINY}, system_prompt: good, output_format: json}}
        - {{name: bad, model: {TINY}, system_prompt: bad, output_format: json}}
        """)
    out = execute(r.engine(), spec)
    assert out.results["good"].output == {"k": 1}
    assert out.results["bad"].error == "output_format is json but the model's answer is not JSON"
