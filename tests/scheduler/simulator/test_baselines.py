import random

import pytest

from orc.scheduler.simulator.baselines import (
    LevelBarrier,
    RoundRobin,
    forecast_schedule,
    heft_schedule,
    llm_orc_mesh,
    random_node,
)
from orc.scheduler.simulator.workload import DEVICES, MODEL_BY_ID, Agent, Dag, SimMesh, SimNode, random_case

PI4, PI5, LAPTOP, MAC = DEVICES
SMOL = "smollm2-135m"


def test_heft_plans_each_agent_after_its_inputs_are_home_and_never_overlaps_on_a_node():
    for index in range(10):
        case = random_case(random.Random(f"heft-{index}"), 12, 3)
        plan = heft_schedule(case.mesh, case.dags, case.coordinators)
        agents = {a.key: a for d in case.dags for a in d.agents}
        assert set(plan) == {k for k, a in agents.items() if a.model is not None}
        for key, slot in plan.items():
            for dep in agents[key].after:
                if dep in plan:
                    assert slot.start_s >= plan[dep].done_s - 1e-9
            assert slot.node_id in {n.node_id for n in case.mesh.eligible(agents[key].model)}
        by_node: dict[str, list] = {}
        for slot in plan.values():
            by_node.setdefault(slot.node_id, []).append((slot.start_s, slot.end_s))
        for intervals in by_node.values():
            intervals.sort()
            assert all(a_end <= b_start + 1e-9 for (_, a_end), (b_start, _) in zip(intervals, intervals[1:]))


def test_heft_inserts_a_short_generation_into_an_idle_gap():
    # One node, two DAGs. d0/a is planned first (higher rank) and waits 50 ms for d0's script;
    # d1/b, planned after it, fits in that gap.
    node = SimNode("n0", MAC, frozenset({SMOL}), frozenset({SMOL}))
    first = Dag("d0", (Agent("d0/s", None), Agent("d0/a", SMOL, 100, 500, ("d0/s",))))
    second = Dag("d1", (Agent("d1/b", SMOL, 10, 1),))
    plan = heft_schedule(SimMesh((node,)), [first, second], ["n0", "n0"])
    # d1/b takes ~13 ms.
    assert plan["d1/b"].start_s == 0.0
    assert plan["d1/b"].end_s <= plan["d0/a"].start_s


def test_a_forecast_plans_every_generation_of_each_dag_after_its_inputs():
    case = random_case(random.Random("forecast"), 8, 2)
    plan = forecast_schedule(case.mesh, case.dags, case.coordinators)
    agents = {a.key: a for d in case.dags for a in d.agents}
    assert set(plan) == {k for k, a in agents.items() if a.model is not None}
    for key, slot in plan.items():
        assert slot.start_s < slot.end_s <= slot.done_s
        assert all(slot.start_s >= plan[d].done_s - 1e-9 for d in agents[key].after if d in plan)


def test_round_robin_cycles_per_coordinator_and_model():
    nodes = tuple(SimNode(f"n{i}", PI4, frozenset({SMOL})) for i in range(3))
    turns = RoundRobin()
    assert [turns.next("c0", SMOL, nodes).node_id for _ in range(4)] == ["n0", "n1", "n2", "n0"]
    assert turns.next("c1", SMOL, nodes).node_id == "n0"  # another coordinator keeps its own turn
    assert turns.next("c0", "smollm2-360m", nodes[:2]).node_id == "n0"  # and so does another model
    assert turns.next("c0", SMOL, nodes).node_id == "n1"


def test_the_random_policy_draws_from_the_eligible_nodes_with_the_stream_given():
    nodes = tuple(SimNode(f"n{i}", PI4, frozenset({SMOL})) for i in range(4))
    draws = [random_node(nodes, random.Random(9)).node_id for _ in range(2)]
    assert draws[0] == draws[1]
    rng = random.Random(1)
    assert {random_node(nodes, rng).node_id for _ in range(200)} == {"n0", "n1", "n2", "n3"}


def test_llm_orc_is_assumed_to_hold_every_model_on_the_coordinators_only():
    mesh = SimMesh((SimNode("c0", PI4, frozenset({SMOL})), SimNode("n1", MAC, frozenset({SMOL}))))
    assumed = llm_orc_mesh(mesh, ["c0"])
    assert assumed.node("c0").held == frozenset(MODEL_BY_ID) and assumed.node("n1").held == frozenset({SMOL})


def test_the_level_barrier_releases_the_next_level_when_the_whole_level_is_home():
    # d0: a and s at level 0, b (needs a) and c (needs s) at level 1, e at level 2. d1: one agent.
    d0 = Dag("d0", (Agent("d0/a", SMOL), Agent("d0/s", None), Agent("d0/b", SMOL, after=("d0/a",)),
                    Agent("d0/c", SMOL, after=("d0/s",)), Agent("d0/e", SMOL, after=("d0/b", "d0/c"))))
    d1 = Dag("d1", (Agent("d1/x", SMOL),))
    barrier = LevelBarrier([d0, d1])
    assert barrier.home("d0/a") == ()  # b needs only a, yet waits for s
    assert barrier.home("d1/x") == ()  # the last level of d1: nothing to release
    assert barrier.home("d0/s") == ("d0/b", "d0/c")
    assert barrier.home("d0/c") == ()
    assert barrier.home("d0/b") == ("d0/e",)
    assert barrier.home("d0/e") == ()


def test_static_schedules_refuse_an_agent_no_node_can_run():
    mesh = SimMesh((SimNode("n0", PI4, frozenset({SMOL})),))
    dag = Dag("d0", (Agent("d0/a", "llama-3.2-1b", 10, 1),))
    for schedule in (heft_schedule, forecast_schedule):
        with pytest.raises(ValueError, match="no node can run d0/a"):
            schedule(mesh, [dag], ["n0"])


def test_heft_on_batched_nodes_never_plans_more_than_their_capacity_at_once():
    joined = 0
    for index in range(6):
        case = random_case(random.Random(f"heft-batched-{index}"), 6, 3)
        mesh = case.mesh.with_capacity(3)
        plan = heft_schedule(mesh, case.dags, case.coordinators)
        agents = {a.key: a for d in case.dags for a in d.agents}
        by_node: dict[str, list] = {}
        for key, slot in plan.items():
            assert all(slot.start_s >= plan[d].done_s - 1e-9 for d in agents[key].after if d in plan)
            by_node.setdefault(slot.node_id, []).append((slot.start_s, slot.end_s))
        for intervals in by_node.values():
            most = max(sum(1 for s, e in intervals if s <= moment < e) for moment, _ in intervals)
            assert most <= 3
            joined += most > 1
    assert joined


def test_heft_plans_a_joining_generation_at_the_rate_of_the_batch_it_joins():
    # A Pi 4 of capacity 2 at (1.0, 0.8), three 240-token generations: the first is planned alone
    # (10 s: like place(), HEFT ignores that a later one slows it), the second joins it (19.2
    # tokens/s, 12.5 s), the third takes the first's processor at 10 s, joining the second (12.5 s).
    node = SimNode("n0", PI4, frozenset({SMOL}), frozenset({SMOL}), capacity=2, batch_curve=(1.0, 0.8))
    dag = Dag("d0", tuple(Agent(f"d0/{name}", SMOL, 0, 240) for name in "abc"))
    plan = heft_schedule(SimMesh((node,)), [dag], ["n0"])
    spans = sorted((slot.start_s, slot.end_s) for slot in plan.values())
    assert spans == [pytest.approx((0.0, 10.0)), pytest.approx((0.0, 12.5)), pytest.approx((10.0, 22.5))]
