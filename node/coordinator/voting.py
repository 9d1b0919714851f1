"""Votes: an LLM agent (or one level of a cascade) sampled N times, one answer kept.

The pure part: the ballot each sample casts, the tally, the judge's prompt and how its answer
is read, the samples' seeds, and the `vote` detail a result carries. The shell (`Parts` and
`Voting`) runs every sample at once through the agent kinds' one generation method (so they
reach placement together and, on one node, decode together), posts each finished sample as a
`PartDone` before anything uses it, and never reruns a part an earlier attempt (or, before a
resume, an earlier run) finished.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from orc.node.coordinator.agent_errors import AgentError, ScriptRunner
from orc.node.coordinator.binding import BoundAgent, BoundLevel, BoundModel
from orc.node.coordinator.limits import Limits
from orc.node.coordinator.prompts import AnswerNotJson, answer_output, build_messages, generation_params
from orc.node.coordinator.run_loop import Coordinator, RunContext
from orc.node.models.runtimes.base import ChatMessage, GenerationError, GenerationParams
from orc.node.protocol.events import AgentBegan, AgentEnded
from orc.scheduler.ensemble import AgentSpec
from orc.scheduler.run import AgentInput, AgentRecord, AgentStatus, PartDone, PartResult, Usage
from orc.scheduler.values import thaw

# What a judge is shown of each sample: one rambling sample cannot push the others out of a
# small model's context window.
JUDGE_SAMPLE_CHARS = 1200
DEFAULT_JUDGE_PROMPT = ("You compare several answers to the same request and pick the best one. "
                        "Reply with the number of the best answer only.")
SEED_MASK = 0x7FFF_FFFF  # derived seeds fit every runtime's seed type
FAILURES_QUOTED = 5  # failed samples quoted in the agent's error; the rest are counted
_TRAILING = ".,;:!?"
_INTEGER = re.compile(r"\d+")


# ---- pure: ballots, tallies, the judge -----------------------------------------------------------

def normalize(text: str) -> str:
    """A ballot as votes are compared: stripped, casefolded, inner whitespace collapsed, trailing
    `.,;:!?` dropped ("Yes." and " yes" are one ballot)."""
    return " ".join(text.split()).casefold().rstrip(_TRAILING).rstrip()


def ballot_of(text: str, extract: re.Pattern[str] | None) -> str | None:
    """The ballot a sample casts: `extract`'s group 1 (its whole match when it has no group), or
    the whole text without `extract`; normalized. None: the sample abstains (no match, or nothing
    left of it)."""
    if extract is not None:
        match = extract.search(text)
        if match is None:
            return None
        found = match.group(1) if extract.groups else match.group(0)
        if found is None:  # the group did not take part in the match
            return None
        text = found
    return normalize(text) or None


@dataclass(frozen=True)
class Tally:
    """The ballots of a vote's samples."""

    counts: tuple[tuple[str, int], ...]  # each ballot and its votes, in the order first cast
    samples: int
    abstained: int

    @property
    def top(self) -> tuple[str, ...]:
        """The ballots with the most votes, in the order first cast (more than one: a tie)."""
        if not self.counts:
            return ()
        most = max(count for _, count in self.counts)
        return tuple(ballot for ballot, count in self.counts if count == most)

    @property
    def winner(self) -> str | None:
        """The majority's ballot; a tie goes to the ballot cast first (the lowest sample index)."""
        top = self.top
        return top[0] if top else None

    def agreement(self, ballot: str | None) -> float:
        """The share of all samples (abstentions included) that cast `ballot`, to 4 decimals."""
        count = dict(self.counts).get(ballot, 0) if ballot is not None else 0
        return round(count / self.samples, 4) if self.samples else 0.0


def tally(ballots: Sequence[str | None]) -> Tally:
    counts: dict[str, int] = {}
    for ballot in ballots:
        if ballot is not None:
            counts[ballot] = counts.get(ballot, 0) + 1
    return Tally(tuple(counts.items()), len(ballots), sum(1 for b in ballots if b is None))


def judge_messages(system_prompt: str | None, request: Sequence[ChatMessage],
                   outputs: Sequence[str]) -> tuple[ChatMessage, ...]:
    """What a judge is sent: the samples' request (their instructions and input) and every
    sample, numbered from 1."""
    asked = "\n\n".join(f"{'Instructions' if m.role == 'system' else 'Request'}:\n{m.content}" for m in request)
    listed = "\n\n".join(f"[{index}]\n{_cut(text.strip(), JUDGE_SAMPLE_CHARS)}"
                         for index, text in enumerate(outputs, 1))
    user = (f"{asked}\n\nAnswers:\n\n{listed}\n\n"
            f"Which answer is best? Reply with its number, 1 to {len(outputs)}.")
    return (ChatMessage("system", system_prompt or DEFAULT_JUDGE_PROMPT), ChatMessage("user", user))


def judge_pick(answer: str, samples: int) -> int | None:
    """The sample (0-based) a judge's answer picks: its first whole number from 1 to `samples`."""
    for found in _INTEGER.finditer(answer):
        number = int(found.group())
        if 1 <= number <= samples:
            return number - 1
    return None


def sample_seed(seed: int | None, run_id: str, agent: str, part: str, index: int) -> int:
    """Sample `index`'s seed: `seed + index` when the run (or the agent's options) gave one, else
    one derived from the run, the agent and the part: reproducible, different per sample."""
    if seed is not None:
        return seed + index
    digest = hashlib.sha256(f"{run_id}\0{agent}\0{part}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & SEED_MASK


def vote_detail(counted: Tally, winner: str | None, by: str, models: Sequence[str], pick: int,
                note: str | None = None) -> dict[str, object]:
    """The `vote` a result carries (docs: results JSON); `tie` only when the majority broke one."""
    detail: dict[str, object] = {
        "ballots": dict(counted.counts), "agreement": counted.agreement(winner), "samples": counted.samples,
        "winner": winner, "by": by, "abstained": counted.abstained, "models": list(dict.fromkeys(models)),
        "pick": pick,
    }
    if by == "majority" and len(counted.top) > 1 and winner == counted.top[0]:
        detail["tie"] = list(counted.top)
    if note:
        detail["note"] = note
    return detail


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + " …"


# ---- the shell -----------------------------------------------------------------------------------

class NoBallot(AgentError):
    """No sample of a majority vote cast a ballot. A cascade moves on to its next level; any other
    vote fails its agent. `usage` is what the samples took, `vote` the detail of the empty tally."""

    def __init__(self, message: str, usage: Usage, vote: Mapping[str, object]) -> None:
        super().__init__(message)
        self.usage = usage
        self.vote = vote


@dataclass(frozen=True)
class Ask:
    """One generation an agent asks for: of its own, of a sample, of a level, of a judge."""

    shown: str  # as progress shows it: "name", "name/s2", "name/L1/judge"
    model: BoundModel
    messages: tuple[ChatMessage, ...]
    params: GenerationParams
    limits: Limits


@dataclass(frozen=True)
class Generated:
    text: str
    usage: Usage
    node_id: str | None  # where it ran (None: the placer never said)


# The agent kinds' one generation method: every generation of a run goes through it.
Generate = Callable[[BoundAgent, Ask, RunContext], Awaitable[Generated]]


@dataclass(frozen=True)
class Decided:
    """What one level decided: its output and what it took, and its vote's detail if it voted."""

    output: object
    usage: Usage
    node_id: str | None
    model: str
    vote: Mapping[str, object] | None = None
    answered: bool = True  # False: no sample of its vote cast a ballot (a cascade level never accepted)


class Parts:
    """Runs the parts of composite agents: each one once, posted as it finishes."""

    def __init__(self, generate: Generate, here: Coordinator) -> None:
        self._generate = generate
        self._here = here

    async def run(self, agent: BoundAgent, agent_input: AgentInput, context: RunContext, key: str,
                  ask: Ask) -> PartResult:
        """Part `key` of `agent`: as an earlier attempt finished it, or generated now, posted as a
        `PartDone` (journaled by the run loop) and shown as an agent of its own under `ask.shown`."""
        done = agent_input.parts.get(key)
        if done is not None:
            return done
        clock = self._here.clock
        began = clock()
        where = None if self._here.places_later else self._here.node_id
        context.post(AgentBegan(ask.shown, where, ask.model.ref, agent_input.attempt))
        try:
            generated = await self._generate(agent, ask, context)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            context.post(AgentEnded(ask.shown, AgentRecord(AgentStatus.FAILED, 1, error=str(error), model=ask.model.ref,
                                                           started_at=began, finished_at=clock())))
            raise
        result = PartResult(generated.text, generated.usage, generated.node_id, ask.model.ref)
        context.post(PartDone(agent.name, key, result, clock()))
        node = generated.node_id
        context.post(AgentEnded(ask.shown, AgentRecord(
            AgentStatus.COMPLETED, 1, output=generated.text.strip(), node_id=node, model=ask.model.ref,
            started_at=began, finished_at=clock(), usage=generated.usage, nodes=(node,) if node else ())))
        return result


@dataclass(frozen=True)
class _Sample:
    index: int
    output: str
    ballot: str | None
    model: str | None
    node_id: str | None


class Voting:
    """Performs votes: the samples, then the majority, the judge or the script."""

    def __init__(self, parts: Parts, scripts: ScriptRunner, workdir: Path, seed: int | None) -> None:
        self._parts = parts
        self._scripts = scripts
        self._workdir = workdir
        self._seed = seed

    async def decide(self, agent: BoundAgent, level: BoundLevel, agent_input: AgentInput, value: object,
                     context: RunContext, name: str, key: str, shown: str) -> Decided:
        """`level` (with its vote) on `value`. Part keys start with `key` ("", "L1."), progress
        names with `shown` ("NAME/", "NAME/L1/")."""
        vote = level.vote
        assert vote is not None, "a voting level"
        spec = vote.spec
        as_llm = replace(agent.spec, task=level.task)
        messages = tuple(build_messages(level.model.resolved.system_prompt, agent_input, value))
        base = generation_params(level.model.resolved, as_llm, self._seed)
        temperature = spec.temperature if spec.temperature is not None else base.temperature

        def ask(index: int) -> Ask:
            model = vote.models[index % len(vote.models)]
            seed = sample_seed(base.seed, context.run_id, name, f"{key}s{index}", index)
            return Ask(f"{shown}s{index}", model, messages, replace(base, temperature=temperature, seed=seed),
                       level.limits)

        # All at once: placement sees them together, and one node's batched runner decodes them together.
        results = await asyncio.gather(*(self._parts.run(agent, agent_input, context, f"{key}s{i}", ask(i))
                                         for i in range(spec.samples)), return_exceptions=True)
        failures = [(i, r) for i, r in enumerate(results) if isinstance(r, BaseException)]
        for _, failure in failures:
            if not isinstance(failure, Exception):
                raise failure  # cancelled: the attempt is being stopped
        for _, failure in failures:
            if isinstance(failure, AgentError) and failure.permanent:
                raise failure  # a budget over the vote ran out: its message, and no retry
        if failures:
            retryable = all(_retryable(f) for _, f in failures)
            quoted = "; ".join(f"s{i}: {f}" for i, f in failures[:FAILURES_QUOTED])
            raise AgentError(f"{len(failures)} of {spec.samples} samples failed: {quoted}", retryable)
        done: list[PartResult] = [r for r in results if isinstance(r, PartResult)]
        pattern = re.compile(spec.extract) if spec.extract is not None else None
        samples = [_Sample(i, str(r.output or ""), ballot_of(str(r.output or ""), pattern), r.model, r.node_id)
                   for i, r in enumerate(done)]
        counted = tally([s.ballot for s in samples])
        usage = Usage()
        for result in done:
            usage = usage + result.usage
        models = [s.model or level.model.ref for s in samples]
        note: str | None = None
        pick: int | None = None
        if spec.by == "judge":
            pick, note, judged = await self._judge(agent, level, agent_input, context, key, shown, messages, samples)
            usage = usage + judged.usage
        elif spec.by == "script":
            chosen = await self._script(agent, level, vote.script, value, samples, counted)
            if not isinstance(chosen, int):  # the script wrote the output itself
                winner = ballot_of(_text(chosen), pattern)
                return Decided(chosen, usage, None, level.model.ref,
                               vote_detail(counted, winner, spec.by, models, -1, "the script wrote the output"))
            pick = chosen
        if pick is None:
            winner = counted.winner
            if winner is None:
                raise NoBallot(_no_ballot(spec.samples, spec.extract), usage,
                               vote_detail(counted, None, spec.by, models, -1, note))
            pick = next(s.index for s in samples if s.ballot == winner)
        winner = samples[pick].ballot
        output, pick = _output(agent.spec, samples, pick)
        return Decided(output, usage, samples[pick].node_id, samples[pick].model or level.model.ref,
                       vote_detail(counted, winner, spec.by, models, pick, note))

    async def _judge(self, agent: BoundAgent, level: BoundLevel, agent_input: AgentInput, context: RunContext,
                     key: str, shown: str, request: tuple[ChatMessage, ...],
                     samples: Sequence[_Sample]) -> tuple[int | None, str | None, PartResult]:
        """The judge's pick (None: fall back to the majority, the note says why), and its part."""
        vote = level.vote
        assert vote is not None and vote.judge is not None, "bound with its judge"
        judge = vote.judge
        # Greedy: a judge that picks differently each time it is asked would be no judge.
        params = GenerationParams(temperature=0.0, max_tokens=judge.resolved.max_tokens, seed=self._seed)
        ask = Ask(f"{shown}judge", judge, judge_messages(judge.resolved.system_prompt, request,
                                                         [s.output for s in samples]), params, level.limits)
        judged = await self._parts.run(agent, agent_input, context, f"{key}judge", ask)
        pick = judge_pick(str(judged.output or ""), len(samples))
        if pick is None:
            said = " ".join(str(judged.output or "").split())[:80]
            return None, f"the judge's answer named no sample 1 to {len(samples)} ({said!r}): majority used", judged
        return pick, None, judged

    async def _script(self, agent: BoundAgent, level: BoundLevel, script: Path | None, value: object,
                      samples: Sequence[_Sample], counted: Tally) -> int | object:
        """The sample the vote's script chose (an index), or the output it wrote itself."""
        assert script is not None, "bound with its script"
        payload = {
            "samples": [{"index": s.index, "output": s.output, "ballot": s.ballot, "model": s.model,
                         "node_id": s.node_id} for s in samples],
            "ballots": dict(counted.counts),
            "input": thaw(value),
            "agent_name": agent.name,
        }
        result = await self._scripts(script, payload, timeout=level.limits.timeout_s, cwd=self._workdir)
        answer = result.output
        if isinstance(answer, Mapping):
            choice = answer.get("choice")
            if isinstance(choice, int) and not isinstance(choice, bool) and 0 <= choice < len(samples):
                return choice
            if "output" in answer:
                return answer["output"]
        raise AgentError(f"vote script {script.name} answered {_cut(repr(thaw(answer)), 200)}; expected "
                         f'{{"choice": INDEX}} with INDEX 0 to {len(samples) - 1}, or {{"output": ...}}')


def _output(spec: AgentSpec, samples: Sequence[_Sample], pick: int) -> tuple[object, int]:
    """The output of sample `pick`, through `answer_output`; with `output_format: json`, the first
    sample of the same ballot whose answer is JSON, when `pick`'s is not."""
    ballot = samples[pick].ballot
    candidates = [pick] + [s.index for s in samples if s.index != pick and ballot is not None and s.ballot == ballot]
    for index in candidates:
        try:
            return answer_output(spec, samples[index].output), index
        except AnswerNotJson:
            continue
    raise AgentError("output_format is json but no sample of the winning ballot answered JSON")


def _no_ballot(samples: int, extract: str | None) -> str:
    if extract is not None:
        return f"none of the {samples} samples matched extract '{extract}'"
    return f"none of the {samples} samples answered anything"


def _retryable(error: BaseException) -> bool:
    return isinstance(error, GenerationError) or (isinstance(error, AgentError) and error.retryable)


def _text(value: object) -> str:
    data = thaw(value)
    return data if isinstance(data, str) else str(data)
