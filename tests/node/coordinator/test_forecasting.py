"""`orc plan`'s forecast: one code path, with the mesh's nodes or with this machine alone."""

from __future__ import annotations

from engine_fakes import TINY, FakeMesh, load, rig

from orc.scheduler.placement import Exclusion


def test_without_a_daemon_this_machine_is_the_only_candidate(tmp_path):
    (tmp_path / "tool.py").write_text("")
    r = rig(tmp_path)
    spec = load(tmp_path, "p", f"- {{name: a, model: {TINY}}}\n- {{name: s, script: tool.py, depends_on: [a]}}\n")
    engine = r.engine()
    planned = engine.forecast(engine.preflight(spec), "some input")
    assert planned.coordinator == "local" and [p.agent for p in planned.agents] == ["a", "s"]
    a, s = planned.agents
    assert (a.kind, a.model, [c.node_id for c in a.candidates]) == ("llm", TINY, ["local"])
    assert not a.candidates[0].warm and a.candidates[0].load_s > 0  # nothing is loaded before a run
    assert (s.kind, s.candidates) == ("script", ()) and "never leave the coordinator" in s.note
    assert r.runtime.prompts == [] and r.scripts.calls == []  # a plan runs nothing


def test_with_a_mesh_every_node_is_weighed_and_the_ruled_out_say_why(tmp_path):
    r = rig(tmp_path)
    r.mesh = FakeMesh(r.runtime, nodes={"me-id": (), "pi-id": (TINY,), "nas-id": ("other",)})
    engine = r.engine()
    planned = engine.forecast(engine.preflight(load(tmp_path, "m", f"- {{name: a, model: {TINY}}}\n")), None)
    [a] = planned.agents
    assert planned.coordinator == "me-id" and [c.node_id for c in a.candidates] == ["pi-id"]
    assert {(x.node_id, x.reason) for x in a.rejected} == {("me-id", Exclusion.NO_MODEL), ("nas-id", Exclusion.NO_MODEL)}
