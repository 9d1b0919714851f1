"""Binding: an ensemble resolved once into a frozen BoundRun, or refused whole before anything ran."""

from __future__ import annotations

import dataclasses

import pytest
from engine_fakes import TINY, FakeMesh, digest, load, rig, run_virtual

from orc.node.coordinator.binding import RunRefused
from orc.scheduler.profiles import builtin_profiles, load_profiles


def test_every_agent_is_bound_with_its_model_limits_rank_and_script(tmp_path):
    (tmp_path / "tool.py").write_text("")
    load(tmp_path, "inner", f"- {{name: x, model: {TINY}, timeout_seconds: 9}}\n")
    r = rig(tmp_path)
    spec = load(tmp_path, "b", f"""\
        - {{name: long, model: {TINY}, max_tokens: 200}}
        - {{name: short, model: {TINY}, max_tokens: 20}}
        - {{name: tool, script: tool.py, depends_on: [long, short]}}
        - {{name: nest, ensemble: inner}}
        """)
    bound = r.engine().preflight(spec)
    long, short, tool, nest = (bound.agent(n) for n in ("long", "short", "tool", "nest"))
    assert long.model.ref == TINY and long.model.resolved.max_tokens == 200 and long.model.sha256 is None
    assert long.rank > short.rank > tool.rank > 0  # the longer chain is placed first
    assert tool.script == (tmp_path / "tool.py").resolve() and tool.model is None
    assert (tool.limits.timeout_s, long.limits.timeout_s, nest.limits.timeout_s) == (300, 300, None)
    assert nest.child is not None and nest.child.agent("x").limits.timeout_s == 9
    assert bound.folder == tmp_path
    with pytest.raises(dataclasses.FrozenInstanceError):
        bound.spec = spec  # type: ignore[misc]
    with pytest.raises(TypeError):
        bound.agents["long"] = long  # type: ignore[index]


def test_one_timeout_rule_the_agent_then_its_profile_then_orcs_default(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(f"model_profiles:\n  fast: {{model: {TINY}, timeout_seconds: 20}}\n")
    r = rig(tmp_path, profiles=load_profiles([config], builtin_profiles(TINY)))
    spec = load(tmp_path, "p", f"""\
        - {{name: own, model_profile: fast, timeout_seconds: 3}}
        - {{name: quick, model_profile: fast}}
        - {{name: plain, model: {TINY}}}
        """)
    bound = r.engine().preflight(spec)
    own, quick, plain = (bound.agent(n).limits for n in ("own", "quick", "plain"))
    assert (own.timeout_s, own.timeout_origin) == (3, "timeout_seconds: 3 of agent 'own' in p.yaml")
    assert (quick.timeout_s, quick.timeout_origin) == (20, f"timeout_seconds: 20 of profile 'fast' in {config}")
    assert (plain.timeout_s, plain.timeout_origin) == (300, "orc's default of 300 s")
    assert (plain.wait_s, plain.wait_origin) == (300, "orc's default of 300 s")


def test_problems_refuse_the_whole_run_exit_2_before_exit_3(tmp_path):
    r = rig(tmp_path)
    spec = load(tmp_path, "bad", """\
        - {name: gone, script: missing.py}
        - {name: far, model: llama3:70b}
        - {name: nest, ensemble: nowhere}
        """)
    with pytest.raises(RunRefused) as refused:
        r.engine().preflight(spec)
    assert refused.value.exit_code == 2
    messages = " | ".join(p.message for p in refused.value.problems)
    assert "missing.py" in messages and "nested ensemble 'nowhere' not found" in messages
    assert f"no node has model 'llama3:70b'; models here: {TINY}" in messages
    only_model = load(tmp_path, "far", "- {name: far, model: llama3:70b}\n")
    with pytest.raises(RunRefused) as refused:
        r.engine().preflight(only_model)
    assert refused.value.exit_code == 3


def test_with_a_mesh_the_digest_is_bound_and_missing_models_name_the_mesh(tmp_path):
    r = rig(tmp_path)
    r.mesh = FakeMesh(r.runtime, nodes={"me-id": (), "pi-id": (TINY, "other")})
    bound = r.engine().preflight(load(tmp_path, "m", f"- {{name: a, model: {TINY}}}\n"))
    assert bound.agent("a").model.sha256 == digest(TINY) and not bound.agent("a").stays_here
    with pytest.raises(RunRefused) as refused:
        r.engine().preflight(load(tmp_path, "n", "- {name: a, model: nope}\n"))
    assert refused.value.exit_code == 3
    assert refused.value.problems[0].message == f"no live node has model 'nope' (models in the mesh: other, {TINY})"
    r.local = True  # --local: only this node's models count
    with pytest.raises(RunRefused) as refused:
        r.engine().preflight(load(tmp_path, "m", f"- {{name: a, model: {TINY}}}\n"))
    assert refused.value.problems[0].message == (f"the run is --local, and this node does not serve model '{TINY}' "
                                                 "(models here: none)")


def test_required_tags_nobody_has_refuse_with_exit_3(tmp_path):
    r = rig(tmp_path)
    spec = load(tmp_path, "t", f"- {{name: a, model: {TINY}, placement: {{require_tags: [gpu]}}}}\n")
    with pytest.raises(RunRefused) as refused:
        r.engine().preflight(spec)
    assert refused.value.exit_code == 3 and "no node has the tags it requires (gpu)" in str(refused.value)


def test_a_run_uses_what_was_bound_and_looks_nothing_up_again(tmp_path):
    r = rig(tmp_path)
    load(tmp_path, "inner", f"- {{name: x, model: {TINY}}}\n")
    spec = load(tmp_path, "o", f"- {{name: a, model: {TINY}}}\n- {{name: n, ensemble: inner}}\n")
    engine = r.engine()
    bound = engine.preflight(spec)
    assert r.catalog.lookups > 0
    r.catalog.lookups = 0

    async def run(loop):
        return [event async for event in engine.run(bound, "go")]

    events = run_virtual(run)
    assert events[-1].result.status == "completed"
    assert r.catalog.lookups == 2  # one `prepare` per generation, no binding: the run took the bound models
