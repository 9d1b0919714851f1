"""Budgets on the embedded model: `orc run` stopped by the run's tokens (exit 1, `--json`'s
usage and budget, `orc runs show`), and a run out of time whose generation is cancelled in its
runner, which then stops decoding."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from support import write

from orc.node.api import Orc
from orc.node.models.catalog import DEFAULT_MODEL_ID
from orc.node.protocol.events import RunFinished, TokenStreamed

pytest.importorskip("llama_cpp")
pytestmark = pytest.mark.slow


def test_a_run_budget_of_few_tokens_stops_a_three_agent_ensemble(orc):
    write(orc.work, "three.yaml", f"""\
        name: three
        budget: {{max_tokens: 40}}
        agents:
          - {{name: poet, model: {DEFAULT_MODEL_ID}, system_prompt: Write a poem., max_tokens: 64}}
          - {{name: critic, model: {DEFAULT_MODEL_ID}, system_prompt: Criticise the topic., max_tokens: 64}}
          - name: editor
            model: {DEFAULT_MODEL_ID}
            system_prompt: Summarise.
            max_tokens: 64
            depends_on: [poet]
        """)
    result = orc("run", "three.yaml", "the sea", "--json")
    assert result.code == 1, result.stderr
    data = result.json()
    assert data["status"] == "completed_with_errors"
    budget = data["budget"]
    message = budget["exhausted"]
    assert message.startswith("budget: the run's max_tokens 40 is spent (")
    r = data["results"]
    ran = [n for n in r if r[n]["usage"]["completion_tokens"] > 0]
    # The first generation runs to its clamp; a waiting one gets only what it left, if it ended
    # early (sampling decides): whatever ran completed, everything else failed naming the budget.
    assert ran and all(r[n]["status"] == "completed" for n in ran)
    assert set(r) - set(ran), "the budget stopped nothing"
    for name in set(r) - set(ran):
        assert r[name]["status"] == "failed" and r[name]["error"] == message
    total = data["usage"]["total_tokens"]
    prompts = [r[n]["usage"]["prompt_tokens"] for n in ran]
    assert total == budget["used_tokens"] and total <= 40 + max(prompts)  # a started prompt may pass it
    assert data["usage"] == {"prompt_tokens": sum(prompts),
                             "completion_tokens": sum(r[n]["usage"]["completion_tokens"] for n in ran),
                             "total_tokens": total}
    # The journal keeps it: `orc runs show` says what stopped the run, in text and JSON.
    shown = orc("runs", "show", data["run_id"], "--json").json()
    assert shown["status"] == "completed_with_errors" and shown["reason"] == message
    assert shown["usage"] == data["usage"] and shown["budget"]["used_tokens"] == total
    text = orc("runs", "show", data["run_id"]).stdout
    assert f"stopped: {message}" in text and f"budget {total}/40 tok (exhausted)" in text
    # The progress on stderr names it too.
    plain = orc("run", "three.yaml", "the sea")
    assert plain.code == 1 and "orc: completed_with_errors in" in plain.stderr and "max_tokens 40 is spent" in plain.stderr


def test_a_run_out_of_time_cancels_its_generation_and_the_runner_stops_decoding(home: Path, tmp_path: Path) -> None:
    write(tmp_path, "timed.yaml", f"""\
        name: timed
        budget: {{max_seconds: 0.4}}
        agents:
          - name: story
            model: {DEFAULT_MODEL_ID}
            system_prompt: Count from 1 to 2000, one number per line, and write nothing else.
            max_tokens: 8000
            temperature: 0
          - {{name: moral, model: {DEFAULT_MODEL_ID}, system_prompt: Give the moral., depends_on: [story]}}
        """)
    orc = Orc(home, cwd=tmp_path, n_threads=2)
    spec = orc.load(str(tmp_path / "timed.yaml"))

    async def scenario() -> tuple[list[object], float, float | None]:
        engine = orc.engine()
        bound = await asyncio.to_thread(engine.preflight, spec)
        # The model loads first, in a run of its own: the budget's seconds are then all decoding.
        await orc.runtimes()["llama_cpp"].load(orc.catalog.prepare(DEFAULT_MODEL_ID))
        began = time.monotonic()
        events = [event async for event in engine.run(bound, "Start counting now.")]
        took = time.monotonic() - began
        try:
            runner = orc.runtimes()["llama_cpp"].runner(DEFAULT_MODEL_ID)  # type: ignore[attr-defined]
            assert runner is not None
            # The runner's own account: the cancelled generation leaves it (a runner still
            # decoding would report it active for the minutes its thousands of tokens take).
            stopped_after = None
            for tick in range(15):
                stats = await runner.stats()
                if stats.active == 0 and stats.queued == 0:
                    stopped_after = tick * 0.1
                    break
                await asyncio.sleep(0.1)
        finally:
            await orc.close_runners()
        return events, took, stopped_after

    events, took, stopped_after = asyncio.run(scenario())
    result = next(e for e in events if isinstance(e, RunFinished)).result
    records = dict(result.results)
    assert result.status == "completed_with_errors" and result.exit_code == 1
    # SmolLM2 answers this prompt with about 115 tokens, a second's work on an idle machine: the
    # budget must end well before, or a fast machine finishes the story first.
    assert result.reason is not None and result.reason.startswith("budget: the run's max_seconds 0.4 ran out (")
    assert records["story"].error == result.reason and records["moral"].error == result.reason
    assert records["moral"].status.value == "failed"  # never started, failed rather than skipped
    assert took < 11  # stopped at its budget, not after thousands of tokens
    streamed = sum(1 for e in events if isinstance(e, TokenStreamed) and e.agent == "story")
    assert stopped_after is not None, "the runner kept decoding the cancelled generation"
    assert result.budget is not None and result.budget.used_seconds >= 0.4
    assert result.usage is not None and result.usage.completion_tokens == streamed  # what it streamed counts
