"""Placement in simulation: orc's real `place()` against the classic baselines on synthetic meshes.

Four modules, each importing only those before it:

- `workload`: the devices and models with their rates and batch curve, meshes, DAGs, random cases, the
  agents' upward ranks, and their translation into `place()`'s input types;
- `baselines`: HEFT's and `forecast()`'s static schedules, and the naive policies (random,
  round-robin, llm-orc's level-by-level);
- `event_engine`: the discrete-event simulation that runs a case under one policy, calling
  `place()` for orc (`simulate`, `run_case`);
- `benchmark`: the grid of seeded cases and the ratios to HEFT that docs/benchmarks.md reports.

The graph algorithms (orders, levels, upward ranks) are orc.scheduler.dag's, the same the
scheduler uses for ensembles. Pure and deterministic throughout: randomness comes in as a
`random.Random`, time is simulated.
"""
