"""The benchmark grid: many random cases per (mesh size, number of coordinators), every policy on each.

Owns how a grid cell's cases are derived from the seed (the same cases on every machine) and
the aggregation of outcomes into ratios to HEFT. tests/benchmarks/placement.py turns the cells
into the table in docs/benchmarks.md.

May import: the workload and event engine modules. Nothing imports it but the benchmark
script and its tests. Pure and deterministic: no clock, every case seeded.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from orc.scheduler.simulator.event_engine import NOISE_SIGMA, Policy, run_case
from orc.scheduler.simulator.workload import Case, random_case


def benchmark_case(seed: int, nodes: int, coordinators: int, index: int, capacity: int = 1) -> Case:
    """Case `index` of a benchmark cell, its nodes decoding up to `capacity` sequences at once (the
    same devices, models and DAGs whatever the capacity). A string seed is hashed with SHA-512: the
    same case on every machine."""
    case = random_case(random.Random(f"{seed}-{nodes}-{coordinators}-{index}"), nodes, coordinators)
    return case if capacity == 1 else replace(case, mesh=case.mesh.with_capacity(capacity))


@dataclass(frozen=True)
class Cell:
    """Ratios to HEFT for one mesh size and number of coordinators, one per case, and the makespans."""

    nodes: int
    coordinators: int
    makespan: Mapping[Policy, tuple[float, ...]]  # makespan(policy) / makespan(HEFT)
    dag_finish: Mapping[Policy, tuple[float, ...]]  # mean DAG finish time(policy) / HEFT's
    makespan_s: Mapping[Policy, tuple[float, ...]]  # makespan(policy), seconds


def benchmark(node_counts: Sequence[int] = (5, 10, 20, 50), coordinator_counts: Sequence[int] = (1, 2, 4),
              cases: int = 25, seed: int = 1, policies: Sequence[Policy] = tuple(Policy),
              noise_sigma: float = NOISE_SIGMA, capacity: int = 1) -> list[Cell]:
    """For every (nodes, coordinators), `cases` random cases run under every policy, on nodes of `capacity`."""
    cells = []
    for nodes in node_counts:
        for coordinators in coordinator_counts:
            if coordinators > nodes:
                continue
            makespan: dict[Policy, list[float]] = {p: [] for p in policies}
            dag_finish: dict[Policy, list[float]] = {p: [] for p in policies}
            seconds: dict[Policy, list[float]] = {p: [] for p in policies}
            for index in range(cases):
                case = benchmark_case(seed, nodes, coordinators, index, capacity)
                outcomes = {p: run_case(case, p, noise_sigma) for p in dict.fromkeys((Policy.HEFT, *policies))}
                heft = outcomes[Policy.HEFT]
                for policy in policies:
                    seconds[policy].append(outcomes[policy].makespan_s)
                    makespan[policy].append(outcomes[policy].makespan_s / heft.makespan_s)
                    dag_finish[policy].append(statistics.fmean(outcomes[policy].dag_finish_s.values())
                                              / statistics.fmean(heft.dag_finish_s.values()))
            cells.append(Cell(nodes, coordinators, {p: tuple(r) for p, r in makespan.items()},
                              {p: tuple(r) for p, r in dag_finish.items()}, {p: tuple(r) for p, r in seconds.items()}))
    return cells
