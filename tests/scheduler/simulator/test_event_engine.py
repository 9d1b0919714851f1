import random
from dataclasses import replace

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


# ---- batched nodes ----
#
# A Pi 4 decodes SmolLM2-135M at 24 tokens/s alone (prompt 160 tokens/s); with the curve
# (1.0, 0.8) two together decode at 19.2 tokens/s each. 240 tokens: 10 s alone, 12.5 s in a pair.

PAIR = (1.0, 0.8)


def _one_node(capacity: int, curve: tuple[float, ...] = PAIR, held: frozenset[str] = frozenset({SMOL})) -> SimMesh:
    return SimMesh((SimNode("n0", PI4, held, held, capacity=capacity, batch_curve=curve),))


def _runs(mesh: SimMesh, dags: list[Dag]) -> dict[str, tuple[float, float]]:
    outcome = simulate(Policy.ORC_NO_PROBE, mesh, dags, ["n0"] * len(dags), random.Random(1), noise_sigma=0.0)
    return {e.key: (e.start_s, e.end_s) for e in outcome.executions}


def test_a_sequence_joining_halfway_slows_the_running_one_and_speeds_up_when_it_leaves():
    dags = [Dag("d0", (Agent("d0/a", SMOL, 0, 240),)), Dag("d1", (Agent("d1/b", SMOL, 0, 240),), submit_at=5.0)]
    runs = _runs(_one_node(2), dags)
    # a: 120 tokens alone in 5 s, then 120 at 19.2/s (6.25 s). b: 120 tokens beside a by 11.25,
    # then the last 120 alone at 24/s (5 s).
    assert runs["d0/a"] == pytest.approx((0.0, 11.25))
    assert runs["d1/b"] == pytest.approx((5.0, 16.25))


def test_a_sequence_reading_its_prompt_is_not_slowed_but_slows_the_batch():
    # a reads 800 prompt tokens (5 s) then writes 240; b joins at 2 s and writes 240 at once.
    dags = [Dag("d0", (Agent("d0/a", SMOL, 800, 240),)), Dag("d1", (Agent("d1/b", SMOL, 0, 240),), submit_at=2.0)]
    runs = _runs(_one_node(2), dags)
    # b: 12.5 s in the pair, ends at 14.5. a: prompt until 5, 9.5 s of decoding at 19.2/s
    # (182.4 tokens), the last 57.6 alone at 24/s (2.4 s).
    assert runs["d1/b"] == pytest.approx((2.0, 14.5))
    assert runs["d0/a"] == pytest.approx((0.0, 16.9))


def test_a_full_node_starts_the_next_sequence_when_a_slot_frees():
    dag = Dag("d0", tuple(Agent(f"d0/{name}", SMOL, 0, 240) for name in "abc"))
    runs = _runs(_one_node(2), [dag])
    assert runs["d0/a"] == pytest.approx((0.0, 12.5)) and runs["d0/b"] == pytest.approx((0.0, 12.5))
    assert runs["d0/c"] == pytest.approx((12.5, 22.5))
    assert _runs(_one_node(1), [dag])["d0/c"] == pytest.approx((20.0, 30.0))  # one at a time


def test_sequences_of_different_models_share_the_node_s_batch():
    # SmolLM2-360M decodes at 11 tokens/s alone on a Pi 4: 110 tokens take 10 s alone, 12.5 s in a pair.
    dag = Dag("d0", (Agent("d0/a", SMOL, 0, 240), Agent("d0/b", "smollm2-360m", 0, 110)))
    runs = _runs(_one_node(2, held=frozenset({SMOL, "smollm2-360m"})), [dag])
    assert runs == {"d0/a": pytest.approx((0.0, 12.5)), "d0/b": pytest.approx((0.0, 12.5))}


def test_a_sequence_starting_while_its_model_loads_waits_for_that_load_only():
    node = SimNode("n0", PI4, frozenset({SMOL}), capacity=2, batch_curve=PAIR)  # cold: 105 MB at 40 MB/s
    dag = Dag("d0", (Agent("d0/a", SMOL, 0, 240), Agent("d0/b", SMOL, 0, 240)))
    runs = _runs(SimMesh((node,)), [dag])
    load = MODEL_BY_ID[SMOL].size_bytes / PI4.load_bytes_per_s
    assert runs == {"d0/a": pytest.approx((0.0, load + 12.5)), "d0/b": pytest.approx((0.0, load + 12.5))}


# Makespans of these cases under the engine that ran one generation at a time per node: a node
# of capacity 1 must give them again.
ONE_AT_A_TIME = {
    (5, 1): {"orc": 126.69770016833948, "orc_no_probe": 126.68170016833947, "forecast": 150.22499298804817,
             "heft": 130.4404636260147, "random": 210.29850005922626, "round_robin": 300.779256516033,
             "level_by_level": 85.26125078439347},
    (8, 2): {"orc": 76.74580541637023, "orc_no_probe": 78.61476289766152, "forecast": 87.28288945671223,
             "heft": 76.13944234237249, "random": 227.45986514183974, "round_robin": 267.5911886775995,
             "level_by_level": 156.73896285351526},
    (12, 3): {"orc": 75.17420623511214, "orc_no_probe": 75.14120623511214, "forecast": 123.05388229987508,
              "heft": 66.16764347440913, "random": 249.67547263772005, "round_robin": 655.978113657602,
              "level_by_level": 538.1522631958193},
    (20, 4): {"orc": 68.35953828320805, "orc_no_probe": 80.25526241751207, "forecast": 94.65591562457452,
              "heft": 61.45094082483871, "random": 278.245121475812, "round_robin": 798.308550146928,
              "level_by_level": 211.3029570914426},
}


def test_capacity_one_gives_the_one_at_a_time_engine_s_makespans():
    for index, ((nodes, coordinators), expected) in enumerate(ONE_AT_A_TIME.items()):
        case = random_case(random.Random(f"golden-{index}"), nodes, coordinators)
        assert all(n.capacity == 1 for n in case.mesh.nodes)
        assert {p.value: run_case(case, p).makespan_s for p in Policy} == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("policy", list(Policy))
def test_a_batched_node_runs_at_most_its_capacity_at_once_and_every_agent_once(policy):
    batched = 0
    for index in range(4):
        case = random_case(random.Random(f"batched-{index}"), 6, 2)
        case = replace(case, mesh=case.mesh.with_capacity(3))
        outcome = run_case(case, policy)
        agents = _agents(case)
        assert sorted(e.key for e in outcome.executions) == sorted(agents)
        done = {e.key: e.done_s for e in outcome.executions}
        by_node: dict[str, list[tuple[float, float]]] = {}
        for e in outcome.executions:
            assert e.start_s >= max((done[d] for d in agents[e.key].after), default=0.0) - 1e-9
            if agents[e.key].model is not None:
                by_node.setdefault(e.node_id, []).append((e.start_s, e.end_s))
        for intervals in by_node.values():
            most = max(sum(1 for s, e in intervals if s <= start < e) for start, _ in intervals)
            assert most <= 3
            batched += most > 1
        assert run_case(case, policy) == outcome
    assert batched  # some node did run a batch


def test_orc_batches_on_a_fast_node_where_one_at_a_time_it_would_spread():
    # A Pi 5 (5.65 s for one agent alone) and a Pi 4 (11.3 s), both warm; three ready agents.
    # One at a time the Pi 5 would finish the third after 17 s, so it goes to the Pi 4; three
    # decoded together on the Pi 5 (at 0.75 of its rate alone each, on a device that batches
    # well) are done after 7.4 s, and place() sees the batch rates to know it.
    curve = (1.0, 0.85, 0.75, 0.65)

    def mesh(capacity: int) -> SimMesh:
        return SimMesh((SimNode("n0", PI5, frozenset({SMOL}), frozenset({SMOL}), capacity=capacity, batch_curve=curve),
                        SimNode("n1", PI4, frozenset({SMOL}), frozenset({SMOL}), capacity=capacity, batch_curve=curve)))
    dag = Dag("d0", tuple(Agent(f"d0/{name}", SMOL, 100, 256) for name in "abc"))
    nodes = {capacity: {e.node_id for e in simulate(Policy.ORC, mesh(capacity), [dag], ["n0"], random.Random(1),
                                                    noise_sigma=0.0).executions}
             for capacity in (1, 4)}
    assert nodes == {1: {"n0", "n1"}, 4: {"n0"}}
