"""Votes and cascades on the real embedded models (SmolLM2 135M, Gemma 3 270M), in-process on
one machine: the ballots add up, the samples decode at the same time, a cascade records what it
tried, and a run interrupted in the middle of a vote resumes without redoing a finished sample."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest

from orc.node.api import Orc
from orc.node.coordinator.engine import Engine
from orc.node.coordinator.voting import ballot_of
from orc.node.protocol.events import AgentBegan, AgentEnded, AgentWorking, RunBegan, RunFinished, RunResult
from orc.scheduler.ensemble import (
    AgentName,
    AgentSpec,
    CascadeLevel,
    CascadeTask,
    Condition,
    EnsembleSpec,
    FieldRef,
    LlmTask,
    Vote,
)
from orc.scheduler.journal import read_journal
from orc.scheduler.run import PartDone
from orc.scheduler.values import thaw

SMOL = "smollm2-135m-instruct"
GEMMA = "gemma3-270m"
YES_NO = r"(?i)\b(yes|no)\b"
ASK = "Answer yes or no, then explain in one sentence. Start with 'Answer: yes' or 'Answer: no'."

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def orc(tmp_path: Path) -> Orc:
    home = tmp_path / "home"
    home.mkdir()
    return Orc(home, cwd=tmp_path, seed=7)


def spec_of(folder: Path, agent: AgentSpec) -> EnsembleSpec:
    return EnsembleSpec(name="v", agents=(agent,), source=folder / "v.yaml")


def voter(samples: int, max_tokens: int = 24) -> AgentSpec:
    return AgentSpec(name=AgentName("answer"), task=LlmTask(
        model=SMOL, system_prompt=ASK, max_tokens=max_tokens, vote=Vote(samples, extract=YES_NO, temperature=0.9)))


async def collect(orc: Orc, events) -> tuple[list[tuple[float, object]], RunResult]:
    seen = []
    result = None
    try:
        async for event in events:
            seen.append((time.monotonic(), event))
            if isinstance(event, RunFinished):
                result = event.result
    finally:
        await orc.close_runners()
    assert result is not None
    return seen, result


def test_a_five_sample_vote_on_smollm2_decodes_its_samples_together(orc, tmp_path):
    seen, result = asyncio.run(collect(orc, orc.run(spec_of(tmp_path, voter(5)), "Is the sky blue on a clear day?")))
    data = result.to_json()["results"]["answer"]
    assert data["status"] == "completed", data["error"]
    vote = data["vote"]
    assert sum(vote["ballots"].values()) + vote["abstained"] == 5 == vote["samples"]
    assert vote["agreement"] == round(max(vote["ballots"].values()) / 5, 4)
    assert vote["ballots"][vote["winner"]] == max(vote["ballots"].values())
    assert ballot_of(data["output"], re.compile(YES_NO)) == vote["winner"]  # the output is a winning sample
    assert data["usage"]["completion_tokens"] > 0 and vote["models"] == [SMOL] and vote["by"] == "majority"
    # Decoded together: some sample started generating before another one had finished.
    working = {e.agent: at for at, e in seen if isinstance(e, AgentWorking)}
    ended = {e.agent: at for at, e in seen if isinstance(e, AgentEnded) and e.agent.startswith("answer/s")}
    assert sorted(working) == sorted(ended) == [f"answer/s{i}" for i in range(5)]
    overlapping = max(sum(1 for other in working if working[other] <= working[s] < ended[other]) for s in working)
    assert overlapping >= 2, (working, ended)


def test_a_cascade_from_smollm2_to_gemma_records_the_levels_it_tried(orc, tmp_path):
    cascade = AgentSpec(name=AgentName("route"), task=CascadeTask(levels=(
        CascadeLevel(LlmTask(model=SMOL, system_prompt="Is this review positive or negative? One word.",
                             max_tokens=8, vote=Vote(3, extract="(?i)(positive|negative)")),
                     Condition(FieldRef(AgentName("agreement")), ">=", 0.67)),
        CascadeLevel(LlmTask(model=GEMMA, system_prompt="Is this review positive or negative? One word.",
                             max_tokens=8)),
    )))
    review = "The battery died after two days and support never answered. Avoid."
    seen, result = asyncio.run(collect(orc, orc.run(spec_of(tmp_path, cascade), review)))
    data = result.to_json()["results"]["route"]
    assert data["status"] == "completed", data["error"]
    detail = data["cascade"]
    first = detail["levels"][0]
    assert first["model"] == SMOL and first["agreement"] == data.get("vote", {}).get("agreement", first["agreement"])
    began = [e.agent for _, e in seen if isinstance(e, AgentBegan)]
    if first["agreement"] >= 0.67:
        assert (detail["level"], detail["tried"], first["accepted"]) == (0, 1, True) and "route/L1" not in began
    else:
        assert (detail["level"], detail["tried"], first["accepted"]) == (1, 2, False)
        assert detail["levels"][1] == {"model": GEMMA, "accepted": True} and "route/L1" in began
    assert {"route/L0/s0", "route/L0/s1", "route/L0/s2"} <= set(began)


def test_a_run_stopped_mid_vote_resumes_without_redoing_finished_samples(orc, tmp_path):
    spec = spec_of(tmp_path, voter(8, max_tokens=32))

    async def interrupted() -> tuple[str, int]:
        engine = orc.engine()
        bound = await asyncio.to_thread(engine.preflight, spec)
        events = engine.run(bound, "Is water wet?")
        run_id, finished = "", 0
        try:
            async for event in events:
                if isinstance(event, RunBegan):
                    run_id = event.run_id
                if isinstance(event, AgentEnded) and event.agent.startswith("answer/s"):
                    finished += 1
                    break  # as if the coordinator were killed: the rest is cancelled
                assert not isinstance(event, RunFinished), "the vote ended before it could be stopped"
        finally:
            await events.aclose()
            await orc.close_runners()
        return run_id, finished

    run_id, finished = asyncio.run(interrupted())
    journal = orc.journal_file(run_id)
    done_before = [e.part for e in read_journal(journal).events if isinstance(e, PartDone)]
    assert finished >= 1 and len(done_before) >= 1 and read_journal(journal).finished is None

    async def resumed(engine: Engine) -> tuple[list[str], RunResult]:
        bound = await asyncio.to_thread(engine.preflight, spec)
        seen, result = await collect(orc, engine.run(bound, "Is water wet?", resume=read_journal(journal)))
        return [e.agent for _, e in seen if isinstance(e, AgentBegan)], result

    began, result = asyncio.run(resumed(orc.engine()))
    again = sorted(a for a in began if a.startswith("answer/s"))
    assert again == sorted(f"answer/s{p[1:]}" for p in {f"s{i}" for i in range(8)} - set(done_before))
    record = dict(result.results)["answer"]
    parts = [e.part for e in read_journal(journal).events if isinstance(e, PartDone)]
    assert sorted(parts) == sorted(f"s{i}" for i in range(8)) and len(parts) == len(set(parts))
    if record.status.value == "completed":
        assert thaw(record.detail)["vote"]["samples"] == 8
    else:  # no sample of the eight said yes or no: the agent fails, having run each sample once
        assert record.error == f"none of the 8 samples matched extract '{YES_NO}'"
