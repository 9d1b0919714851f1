"""Cascades: an agent's levels tried in order, the first one accepted giving its output.

Each level is a generation of its own (part "L{k}", shown "NAME/L{k}") or a vote (its samples
"L{k}.s{i}", shown "NAME/L{k}/s{i}", its judge "L{k}.judge"); a finished level is posted as
part "L{k}" (its output, and its vote's detail when it voted) before its `accept_if` is
checked, so a retry or a resume neither reruns a level nor asks it again. The last level is
accepted as it is. Every token is in exactly one part: a voted level's "L{k}" carries none,
its samples' and judge's parts carry them.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import replace

from orc.node.coordinator.agent_errors import AgentError
from orc.node.coordinator.binding import BoundAgent, BoundLevel
from orc.node.coordinator.prompts import AnswerNotJson, answer_output, build_messages, generation_params
from orc.node.coordinator.run_loop import Coordinator, RunContext
from orc.node.coordinator.voting import Ask, Decided, NoBallot, Parts, Voting
from orc.scheduler.ensemble import Condition
from orc.scheduler.run import AgentInput, PartDone, PartResult, Usage
from orc.scheduler.values import holds, resolve, thaw

_NUMERIC: Mapping[str, Callable[[float, float], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}


def accepts(condition: Condition, fields: Mapping[str, object]) -> bool:
    """Whether a level's `accept_if` holds over its fields (CASCADE_FIELDS). A numeric comparison
    of something that is not a number is false, never an error."""
    compare = _NUMERIC.get(condition.op)
    if compare is None:
        return holds(condition, fields)
    value = _number(resolve(condition.ref, fields))
    literal = _number(condition.literal)
    return value is not None and literal is not None and compare(value, literal)


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def level_fields(decided: Decided) -> dict[str, object]:
    """The names an `accept_if` may use, for one finished level."""
    vote = decided.vote or {}
    return {"output": decided.output, "agreement": vote.get("agreement"), "ballot": vote.get("winner"),
            "samples": vote.get("samples", 1), "model": decided.model,
            "prompt_tokens": decided.usage.prompt_tokens, "completion_tokens": decided.usage.completion_tokens}


class Cascades:
    """Performs cascade agents."""

    def __init__(self, parts: Parts, voting: Voting, here: Coordinator, seed: int | None) -> None:
        self._parts = parts
        self._voting = voting
        self._here = here
        self._seed = seed

    async def run(self, agent: BoundAgent, agent_input: AgentInput, value: object, context: RunContext,
                  name: str, key: str) -> tuple[Decided, dict[str, object]]:
        """The accepted level's decision and the agent's detail (`cascade`, and `vote` if that level voted)."""
        tried: list[dict[str, object]] = []
        usage = Usage()
        last = len(agent.levels) - 1
        for index, level in enumerate(agent.levels):
            decided = await self._level(agent, level, agent_input, value, context, name, f"{key}L{index}",
                                        last=index == last)
            usage = usage + decided.usage
            accepted = index == last or (decided.answered and (level.accept_if is None
                                                                or accepts(level.accept_if, level_fields(decided))))
            entry: dict[str, object] = {"model": level.model.ref, "accepted": accepted}
            if decided.vote is not None:
                entry["agreement"] = decided.vote.get("agreement")
            tried.append(entry)
            if accepted:
                detail: dict[str, object] = {"cascade": {"level": index, "tried": index + 1, "levels": tried}}
                if decided.vote is not None:
                    detail["vote"] = dict(decided.vote)
                return replace(decided, usage=usage), detail
        raise AssertionError("a cascade has at least one level")

    async def _level(self, agent: BoundAgent, level: BoundLevel, agent_input: AgentInput, value: object,
                     context: RunContext, name: str, key: str, last: bool) -> Decided:
        index = key.rpartition("L")[2]
        shown = f"{name}/L{index}"
        if level.vote is None:
            # One generation: its part is the level's.
            ask = Ask(shown, level.model, tuple(build_messages(level.model.resolved.system_prompt, agent_input, value)),
                      generation_params(level.model.resolved, replace(agent.spec, task=level.task), self._seed),
                      level.limits)
            result = await self._parts.run(agent, agent_input, context, key, ask)
            try:
                output = answer_output(agent.spec, str(result.output or ""))
            except AnswerNotJson as error:
                raise AgentError(f"cascade level {index}: {error}") from None
            return Decided(output, result.usage, result.node_id, result.model or level.model.ref)
        done = agent_input.parts.get(key)
        if done is not None and isinstance(done.output, Mapping):
            vote = done.output.get("vote")
            vote = vote if isinstance(vote, Mapping) else None
            output = done.output.get("output")
            answered = not (output is None and vote is not None and vote.get("winner") is None)
            usage = Usage()
            for part, result in agent_input.parts.items():
                if part.startswith(f"{key}."):  # its samples and judge carry its tokens
                    usage = usage + result.usage
            return Decided(output, usage, done.node_id, done.model or level.model.ref, vote, answered)
        try:
            decided = await self._voting.decide(agent, level, agent_input, value, context, name, f"{key}.",
                                                f"{shown}/")
        except NoBallot as empty:
            if last:
                raise
            # Escalating is what a cascade is for: a level none of whose samples answered is
            # not accepted (its output nothing, its agreement 0), and the next one is tried.
            decided = Decided(None, empty.usage, None, level.model.ref, empty.vote, answered=False)
        whole = {"output": thaw(decided.output), "vote": thaw(decided.vote)}
        # No usage of its own: its samples' and judge's parts count every token once.
        context.post(PartDone(agent.name, key, PartResult(whole, Usage(), decided.node_id, decided.model),
                              self._here.clock()))
        return decided
