"""The labeled task set and the ensembles that `tests.benchmarks.ensemble_eval` evaluates."""
