"""The llm-orc corpus: every real ensemble file loads, except the cycle demo, which names its cycle."""

import os
from pathlib import Path

import pytest

from orc.scheduler.ensemble import LlmTask
from orc.scheduler.loader import EnsembleLibrary, load_ensemble
from orc.scheduler.profiles import builtin_profiles, load_profiles, resolve_model

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "compat" / "llm-orc"
ENSEMBLES = sorted((CORPUS / "ensembles").rglob("*.yaml")) if CORPUS.is_dir() else []
CYCLE_DEMO = "cycle-detection-demo.yaml"

# CI always has the corpus beside the clone: there, its absence fails instead of skipping.
pytestmark = pytest.mark.skipif(not ENSEMBLES and not os.environ.get("CI"),
                                reason=f"llm-orc corpus not found at {CORPUS}")


def profiles():
    files = [CORPUS / "config.yaml", *sorted((CORPUS / "profiles").glob("*.yaml"))]
    return load_profiles(files, builtin_profiles("smollm2-135m-instruct"))


def test_corpus_is_complete():
    assert len(ENSEMBLES) == 101


@pytest.mark.parametrize("path", ENSEMBLES, ids=lambda p: str(p.relative_to(CORPUS / "ensembles")))
def test_corpus_file(path):
    library = EnsembleLibrary((CORPUS / "ensembles",))
    spec = load_ensemble(path, library)
    problems = []
    for agent in spec.agents:
        if isinstance(agent.task, LlmTask):
            resolved = resolve_model(agent, agent.task, profiles(), spec.source)
            if not hasattr(resolved, "model"):
                problems.append(resolved)
    cycles = [p for p in problems if "fallback cycle" in p.message]
    if path.name == CYCLE_DEMO:
        assert cycles and "cycle-test-a -> cycle-test-b -> cycle-test-c -> cycle-test-a" in cycles[0].message
    else:
        assert not cycles
