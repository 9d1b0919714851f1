import random
import statistics

from orc.scheduler.simulator.benchmark import benchmark, benchmark_case
from orc.scheduler.simulator.event_engine import Policy, run_case
from orc.scheduler.simulator.workload import random_case


def test_orc_stays_near_heft_and_far_ahead_of_random_and_level_by_level_on_a_random_batch():
    ratios: dict[Policy, list[float]] = {p: [] for p in (Policy.ORC, Policy.RANDOM, Policy.LEVEL_BY_LEVEL)}
    for index in range(24):
        case = random_case(random.Random(f"batch-{index}"), 10, 1 + index % 2)
        heft = run_case(case, Policy.HEFT).makespan_s
        for policy, values in ratios.items():
            values.append(run_case(case, policy).makespan_s / heft)
    assert statistics.fmean(ratios[Policy.ORC]) < 1.15
    assert statistics.fmean(ratios[Policy.RANDOM]) > 1.5
    assert statistics.fmean(ratios[Policy.LEVEL_BY_LEVEL]) > 1.5


def test_a_benchmark_case_depends_only_on_the_seed_and_its_place_in_the_grid():
    assert benchmark_case(1, 5, 2, 3) == benchmark_case(1, 5, 2, 3)
    assert benchmark_case(1, 5, 2, 3) != benchmark_case(1, 5, 2, 4)
    assert benchmark_case(1, 5, 2, 3) != benchmark_case(2, 5, 2, 3)


def test_the_grid_has_one_cell_per_possible_pair_of_ratios_to_heft_per_case():
    policies = (Policy.ORC, Policy.HEFT, Policy.RANDOM)
    cells = benchmark(node_counts=(2, 4), coordinator_counts=(1, 3), cases=2, seed=7, policies=policies)
    assert [(c.nodes, c.coordinators) for c in cells] == [(2, 1), (4, 1), (4, 3)]  # 3 coordinators need 3 nodes
    for cell in cells:
        assert set(cell.makespan) == set(cell.dag_finish) == set(policies)
        assert cell.makespan[Policy.HEFT] == cell.dag_finish[Policy.HEFT] == (1.0, 1.0)
        case = benchmark_case(7, cell.nodes, cell.coordinators, 1)
        ratio = run_case(case, Policy.RANDOM).makespan_s / run_case(case, Policy.HEFT).makespan_s
        assert cell.makespan[Policy.RANDOM][1] == ratio
    assert cells == benchmark(node_counts=(2, 4), coordinator_counts=(1, 3), cases=2, seed=7, policies=policies)


def test_a_batched_cell_runs_the_same_cases_on_nodes_of_that_capacity():
    one = benchmark_case(3, 6, 2, 1)
    four = benchmark_case(3, 6, 2, 1, capacity=4)
    assert (four.dags, four.coordinators, four.noise_seed) == (one.dags, one.coordinators, one.noise_seed)
    assert four.mesh == one.mesh.with_capacity(4)
    policies = (Policy.ORC, Policy.HEFT)
    (cell,) = benchmark(node_counts=(6,), coordinator_counts=(2,), cases=2, seed=3, policies=policies, capacity=4)
    assert cell.makespan_s[Policy.ORC][1] == run_case(four, Policy.ORC).makespan_s
    assert cell.makespan[Policy.ORC][1] == cell.makespan_s[Policy.ORC][1] / run_case(four, Policy.HEFT).makespan_s
