import random

import pytest

from orc.scheduler.simulator.event_engine import Policy, run_case, simulate
from orc.scheduler.simulator.workload import DEVICES, MODEL_BY_ID, Agent, Dag, SimMesh, SimNode, random_case, random_dag

PI4, PI5, LAPTOP, MAC = DEVICES
SMOL = "smollm2-135m"


def _agents(case) -> dict[str, Agent]:
    return {a.key: a for d in case.dags for a in d.agents}


def test_the_same_seed_gives_the_same_outcome_and_another_seed_another():
    case = random_case(random.Random("determinism"), 10, 2)
    for policy in Policy:
        assert run_case(case, policy) == run_case(case, policy)
    other = random_case(random.Random("determinism 2"), 10, 2)
    assert run_case(other, Policy.ORC).makespan_s != run_case(case, Policy.ORC).makespan_s


@pytest.mark.parametrize("policy", list(Policy))
def test_every_agent_runs_once_after_its_dependencies_and_a_node_runs_one_generation_at_a_time(policy):
    for index in range(6):
        case = random_case(random.Random(f"once-{index}"), 8, 3)
        outcome = run_case(case, policy)
        agents = _agents(case)
        keys = [e.key for e in outcome.executions]
        assert sorted(keys) == sorted(agents)
        done = {e.key: e.done_s for e in outcome.executions}
        by_node: dict[str, list[tuple[float, float]]] = {}
        for e in outcome.executions:
            assert e.start_s >= max((done[d] for d in agents[e.key].after), default=0.0) - 1e-9
            if agents[e.key].model is not None:
                assert e.node_id in {n.node_id for n in case.mesh.eligible(agents[e.key].model)} or (
                    policy is Policy.LEVEL_BY_LEVEL)
                by_node.setdefault(e.node_id, []).append((e.start_s, e.end_s))
        for intervals in by_node.values():
            intervals.sort()
            assert all(a_end <= b_start + 1e-9 for (_, a_end), (b_start, _) in zip(intervals, intervals[1:]))
        assert outcome.makespan_s == pytest.approx(max(done.values()))


def test_level_by_level_runs_on_the_coordinators_and_waits_for_whole_levels():
    case = random_case(random.Random("levels"), 6, 2)
    outcome = run_case(case, Policy.LEVEL_BY_LEVEL)
    coordinator_of = {a.key: c for d, c in zip(case.dags, case.coordinators) for a in d.agents}
    assert all(e.node_id == coordinator_of[e.key] for e in outcome.executions)
    agents = _agents(case)
    for dag in case.dags:
        depth: dict[str, int] = {}
        for agent in dag.agents:  # agents name only earlier ones
            depth[agent.key] = 1 + max((depth[d] for d in agent.after), default=-1)
        runs = {e.key: e for e in outcome.executions if e.key in depth}
        for key, level in depth.items():
            before = [runs[k].done_s for k, lv in depth.items() if lv < level]
            assert runs[key].start_s >= max(before, default=0.0) - 1e-9, (key, agents[key])


def test_the_level_barrier_holds_an_agent_back_until_its_whole_level_is_done():
    mesh = SimMesh((SimNode("n0", MAC, frozenset({SMOL}), frozenset({SMOL})),))
    # Level 0: a short generation and a 50 ms script; level 1: b, which needs only a.
    dag = Dag("d0", (Agent("d0/a", SMOL, 10, 1), Agent("d0/s", None), Agent("d0/b", SMOL, 10, 1, ("d0/a",))))
    starts = {policy: {e.key: e.start_s for e in simulate(policy, mesh, [dag], ["n0"], random.Random(1),
                                                         noise_sigma=0.0).executions}
              for policy in (Policy.ORC, Policy.LEVEL_BY_LEVEL)}
    a_work = 10 / 1280 + 1 / 192
    assert starts[Policy.ORC]["d0/b"] == pytest.approx(a_work)
    assert starts[Policy.LEVEL_BY_LEVEL]["d0/b"] == pytest.approx(0.05)


def test_on_one_node_orc_and_level_by_level_both_take_the_sum_of_the_work():
    node = SimNode("n0", PI5, frozenset(MODEL_BY_ID), frozenset(MODEL_BY_ID))
    mesh = SimMesh((node,))
    dag = random_dag(random.Random(7), "d0")
    dag = Dag("d0", tuple(a if a.model else Agent(a.key, "qwen2.5-0.5b", 300, 128, a.after) for a in dag.agents))
    orc = simulate(Policy.ORC, mesh, [dag], ["n0"], random.Random(1))
    level = simulate(Policy.LEVEL_BY_LEVEL, mesh, [dag], ["n0"], random.Random(1))
    busy = sum(e.end_s - e.start_s for e in orc.executions)
    assert orc.makespan_s == pytest.approx(busy)  # the node never idles: no barrier, no network
    assert level.makespan_s == pytest.approx(busy)  # one device: the barrier costs nothing
    assert {e.key for e in orc.executions} == {a.key for a in dag.agents}


def _two_speeds() -> SimMesh:
    return SimMesh((SimNode("n0", PI4, frozenset({SMOL}), frozenset({SMOL})),
                 SimNode("n1", MAC, frozenset({SMOL}), frozenset({SMOL}))))


def test_orc_picks_the_fast_node_and_the_makespan_is_the_hand_computed_one():
    dag = Dag("d0", (Agent("d0/a", SMOL, 200, 100),))
    outcome = simulate(Policy.ORC, _two_speeds(), [dag], ["n0"], random.Random(1), noise_sigma=0.0)
    (run,) = outcome.executions
    assert run.node_id == "n1"
    # Mac mini: SmolLM2-135M at 8 × (160 prompt, 24 decode) tokens/s; network 4 + 1 ms.
    work = 200 / 1280 + 100 / 192
    assert run.end_s - run.start_s == pytest.approx(work)
    assert outcome.makespan_s == pytest.approx(0.005 + work + 0.005)  # probe round trip, work, result home
    no_probe = simulate(Policy.ORC_NO_PROBE, _two_speeds(), [dag], ["n0"], random.Random(1), noise_sigma=0.0)
    assert no_probe.makespan_s == pytest.approx(work + 0.005)


def test_probing_spreads_two_coordinators_that_place_at_the_same_instant():
    # Two Pi coordinators without the model, two identical Macs with it. Both views are empty
    # at time 0, so place() picks the same Mac for both; the probe sees the first one's lease.
    mesh = SimMesh((SimNode("c0", PI4, frozenset()), SimNode("c1", PI4, frozenset()),
                 SimNode("m0", MAC, frozenset({SMOL}), frozenset({SMOL})),
                 SimNode("m1", MAC, frozenset({SMOL}), frozenset({SMOL}))))
    dags = [Dag("d0", (Agent("d0/a", SMOL, 200, 256),)), Dag("d1", (Agent("d1/a", SMOL, 200, 256),))]
    probed = simulate(Policy.ORC, mesh, dags, ["c0", "c1"], random.Random(1), noise_sigma=0.0)
    blind = simulate(Policy.ORC_NO_PROBE, mesh, dags, ["c0", "c1"], random.Random(1), noise_sigma=0.0)
    assert {e.node_id for e in probed.executions} == {"m0", "m1"}
    assert {e.node_id for e in blind.executions} == {"m0"}
    assert blind.makespan_s > 1.9 * probed.makespan_s


def test_a_coordinator_sees_other_coordinators_work_after_the_next_heartbeat():
    # c1 submits later; by then c0's long generation on m0 is in m0's heartbeat, so place()
    # itself (without probing) sends c1's agent to m1.
    mesh = SimMesh((SimNode("c0", PI4, frozenset()), SimNode("c1", PI4, frozenset()),
                 SimNode("m0", MAC, frozenset({SMOL}), frozenset({SMOL})),
                 SimNode("m1", MAC, frozenset({SMOL}), frozenset({SMOL}))))
    dags = [Dag("d0", (Agent("d0/a", SMOL, 200, 2048),)), Dag("d1", (Agent("d1/a", SMOL, 200, 256),), submit_at=3.0)]
    outcome = simulate(Policy.ORC_NO_PROBE, mesh, dags, ["c0", "c1"], random.Random(1), noise_sigma=0.0)
    assert {e.key: e.node_id for e in outcome.executions} == {"d0/a": "m0", "d1/a": "m1"}
