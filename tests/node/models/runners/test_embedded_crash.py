"""Embedded mode (`orc run` without a daemon) on runners: an agent whose runner dies mid-generation
is retried on the restarted runner, not failed, and the run's runners end with the run."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest
from support import child_pids

from orc.node.api import Orc
from orc.node.models.catalog import DEFAULT_MODEL_ID
from orc.node.protocol.events import AgentRetrying, RunFinished, TokenStreamed

pytest.importorskip("llama_cpp")
pytestmark = pytest.mark.slow

ENSEMBLE = f"""name: one-story
agents:
  - name: story
    model: {DEFAULT_MODEL_ID}
    system_prompt: You are a storyteller.
    max_tokens: 120
    temperature: 0
"""


def test_an_agent_whose_runner_dies_is_retried_on_the_restarted_runner(home: Path, tmp_path: Path) -> None:
    (tmp_path / "one-story.yaml").write_text(ENSEMBLE)
    orc = Orc(home, cwd=tmp_path, n_threads=2)
    spec = orc.load(str(tmp_path / "one-story.yaml"))

    async def scenario() -> tuple[list[object], list[int]]:
        events: list[object] = []
        killed: list[int] = []
        async for event in orc.run(spec, "A dragon learns to bake bread."):
            events.append(event)
            if isinstance(event, TokenStreamed) and not killed:
                runner = orc.runtimes()["llama_cpp"].runner(DEFAULT_MODEL_ID)  # type: ignore[attr-defined]
                assert runner is not None
                killed.append(runner.pid)
                os.kill(runner.pid, signal.SIGSEGV)
        return events, killed

    events, killed = asyncio.run(scenario())
    retries = [e for e in events if isinstance(e, AgentRetrying)]
    assert len(retries) == 1
    assert retries[0].error == f"the runner of {DEFAULT_MODEL_ID} died: SIGSEGV"
    result = next(e for e in events if isinstance(e, RunFinished)).result
    assert result.status == "completed"
    assert dict(result.results)["story"].status.value == "completed"
    assert not Path(f"/proc/{killed[0]}").exists()
    # The run's runners ended with it: no child of this process is left.
    assert child_pids(os.getpid()) == []
