import random

import pytest

from orc.scheduler.dag import critical_path_lengths_of
from orc.scheduler.simulator.workload import (
    BATCH_CURVE,
    DEVICES,
    MODEL_BY_ID,
    MODELS,
    SCRIPT_S,
    Agent,
    Dag,
    SimMesh,
    SimNode,
    random_case,
    random_dag,
    random_mesh,
    upward_ranks,
)

PI4, PI5, LAPTOP, MAC = DEVICES
SMOL = "smollm2-135m"


def test_random_dags_are_acyclic_within_bounds_and_name_only_earlier_agents():
    rng = random.Random(3)
    for index in range(200):
        dag = random_dag(rng, f"d{index}")
        assert 3 <= len(dag.agents) <= 30
        seen: set[str] = set()
        for agent in dag.agents:
            assert set(agent.after) <= seen
            seen.add(agent.key)


def test_random_meshes_hold_every_model_somewhere_and_load_only_what_they_hold():
    rng = random.Random(5)
    for _ in range(50):
        mesh = random_mesh(rng, 3)
        assert {m.id for m in MODELS} <= set().union(*(n.held for n in mesh.nodes))
        assert all(n.warm <= n.held and n.held for n in mesh.nodes)


def test_a_case_is_the_same_from_the_same_seed_with_distinct_coordinators():
    case = random_case(random.Random("case"), 10, 4)
    assert case == random_case(random.Random("case"), 10, 4)
    assert len(set(case.coordinators)) == 4 and len(case.dags) == 4
    assert set(case.coordinators) <= {n.node_id for n in case.mesh.nodes}


def test_a_dag_is_a_dependency_mapping_in_agent_order():
    dag = Dag("d0", (Agent("d0/a", SMOL), Agent("d0/s", None), Agent("d0/b", SMOL, after=("d0/a", "d0/s"))))
    assert dag.dependencies == {"d0/a": (), "d0/s": (), "d0/b": ("d0/a", "d0/s")}
    assert list(dag.dependencies) == ["d0/a", "d0/s", "d0/b"]


def test_upward_ranks_are_mean_costs_over_eligible_nodes_plus_the_longest_path():
    mesh = SimMesh((SimNode("n0", PI4, frozenset({SMOL}), frozenset({SMOL})),
                 SimNode("n1", MAC, frozenset({SMOL}))))
    dag = Dag("d0", (Agent("d0/s", None), Agent("d0/a", SMOL, 160, 24, ("d0/s",))))
    rank = upward_ranks(dag, mesh, "n0")
    on_pi = 160 / 160 + 24 / 24  # warm, local
    on_mac = MODEL_BY_ID[SMOL].size_bytes / MAC.load_bytes_per_s + 160 / 1280 + 24 / 192 + 0.004 + 0.001
    assert rank["d0/a"] == pytest.approx((on_pi + on_mac) / 2)
    assert rank["d0/s"] == pytest.approx(SCRIPT_S + rank["d0/a"])
    assert rank == critical_path_lengths_of(dag.dependencies, {"d0/s": SCRIPT_S, "d0/a": rank["d0/a"]})


def test_upward_ranks_refuse_an_agent_no_node_can_run():
    mesh = SimMesh((SimNode("n0", PI4, frozenset({SMOL})),))
    with pytest.raises(ValueError, match="no node can run d0/a"):
        upward_ranks(Dag("d0", (Agent("d0/a", "llama-3.2-1b", 10, 1),)), mesh, "n0")


def test_a_node_view_is_what_place_needs_from_the_node_as_its_coordinator_sees_it():
    mesh = SimMesh((SimNode("n0", PI4, frozenset()), SimNode("n1", PI5, frozenset({SMOL, "llama-3.2-1b"}))))
    view = mesh.node_view(mesh.node("n1"), "n0", [SMOL], 2.5)
    assert view.node_id == "n1" and view.backlog_s == 2.5 and view.network_s == pytest.approx(0.007)
    by_id = {m.id: m for m in view.models}
    assert by_id[SMOL].loaded and not by_id["llama-3.2-1b"].loaded
    assert (by_id[SMOL].prefill_tokens_per_s, by_id[SMOL].decode_tokens_per_s) == (320.0, 48.0)
    demand = Agent("d0/a", SMOL, 100, 64).demand(3.0)
    assert (demand.key, demand.model_id, demand.prompt_tokens, demand.max_tokens, demand.rank) == (
        "d0/a", SMOL, 100, 64, 3.0)


def test_a_batched_node_view_carries_its_capacity_batch_rates_and_load():
    node = SimNode("n1", PI5, frozenset({SMOL}), capacity=3)
    mesh = SimMesh((SimNode("n0", PI4, frozenset()), node))
    view = mesh.node_view(node, "n0", [SMOL], 4.0, running=2, queued=1)
    (model,) = view.models
    assert model.capacity == 3
    assert model.batch_decode_tokens_per_s == pytest.approx((48.0, 48 * BATCH_CURVE[1], 48 * BATCH_CURVE[2]))
    assert (view.running, view.queued, view.backlog_s) == (2, 1, 4.0)
    cold = mesh.node_view(mesh.node("n1"), "n0", [], 0.0).models[0]
    assert not cold.loaded and cold.batch_decode_tokens_per_s == model.batch_decode_tokens_per_s
    # The work estimate at each batch size decodes at that size's rate; prompt and load are not slowed.
    agent = Agent("d0/a", SMOL, 320, 96)
    assert node.work_s(agent, True, 2) == pytest.approx(1.0 + 96 / (48 * BATCH_CURVE[1]))
    assert node.unbatched_s(agent, False) == pytest.approx(node.load_s(MODEL_BY_ID[SMOL]) + 1.0)


def test_with_capacity_keeps_the_hardware_and_a_node_refuses_a_curve_it_cannot_use():
    mesh = random_mesh(random.Random(2), 6)
    batched = mesh.with_capacity(4)
    assert [(n.node_id, n.device, n.held, n.warm) for n in batched.nodes] == [
        (n.node_id, n.device, n.held, n.warm) for n in mesh.nodes]
    assert {n.capacity for n in mesh.nodes} == {1} and {n.capacity for n in batched.nodes} == {4}
    with pytest.raises(ValueError, match="capacity 5"):
        mesh.with_capacity(5)
    with pytest.raises(ValueError, match="never rises"):
        SimNode("n0", PI4, frozenset({SMOL}), batch_curve=(1.0, 0.7, 0.8))
    with pytest.raises(ValueError, match="starts at 1.0"):
        SimNode("n0", PI4, frozenset({SMOL}), batch_curve=(0.9,))
