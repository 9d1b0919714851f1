"""Votes, cascades and budgets in words and as JSON: what `orc plan`, `orc ensembles show` and
`orc ensembles graph` say about them.

Cascade levels are named `L0`, `L1`, ... as in a run's progress and journal (`AGENT/L1`).
"""

from __future__ import annotations

from orc.scheduler.ensemble import AgentSpec, Budget, CascadeTask, LlmTask, Vote
from orc.scheduler.values import thaw


def model_text(task: LlmTask) -> str:
    """The model a task names, or its profile (`profile NAME`), or `the default model`."""
    if task.model:
        return task.model
    return f"profile {task.model_profile}" if task.model_profile else "the default model"


def vote_text(vote: Vote, task: LlmTask) -> str:
    """`×5 vote (majority) over smollm2-135m-instruct, gemma3-270m`."""
    how = vote.by
    if vote.by == "judge" and vote.judge is not None:
        how = f"judge {vote.judge.model or model_text(task)}"
    elif vote.by == "script" and vote.script:
        how = f"script {vote.script}"
    text = f"×{vote.samples} vote ({how}) over {', '.join(vote.models) if vote.models else model_text(task)}"
    if vote.temperature is not None:
        text += f" at temperature {vote.temperature:g}"
    return text


def level_text(index: int, level_task: LlmTask, accept_if: object) -> str:
    """`L0 smollm2-135m-instruct ×3 vote (majority), accepted if ${agreement} >= 0.67`."""
    what = vote_text(level_task.vote, level_task) if level_task.vote else model_text(level_task)
    accepted = f"accepted if {accept_if}" if accept_if is not None else "accepted as it is"
    return f"L{index} {what}, {accepted}"


def cascade_text(task: CascadeTask) -> str:
    """`cascade smollm2-135m-instruct → gemma3-270m`."""
    return "cascade " + " → ".join(model_text(level.task) for level in task.levels)


def budget_text(budget: Budget) -> str:
    """`budget 4000 tokens, 120 s`."""
    limits = []
    if budget.max_tokens is not None:
        limits.append(f"{budget.max_tokens} tokens")
    if budget.max_seconds is not None:
        limits.append(f"{budget.max_seconds:g} s")
    return "budget " + ", ".join(limits)


def vote_json(vote: Vote, task: LlmTask) -> dict:
    """A vote for `--json` views; `models` is what the samples run on (the task's model when the
    vote names none)."""
    return {
        "samples": vote.samples,
        "by": vote.by,
        "extract": vote.extract,
        "temperature": vote.temperature,
        "models": list(vote.models) or [model_text(task)],
        "judge": None if vote.judge is None else {"model": vote.judge.model or model_text(task),
                                                  "system_prompt": vote.judge.system_prompt,
                                                  "max_tokens": vote.judge.max_tokens},
        "script": vote.script,
    }


def cascade_json(task: CascadeTask) -> list[dict]:
    """A cascade's levels for `--json` views, in order (index = the level's number)."""
    return [
        {
            "level": index,
            "model": level.task.model,
            "model_profile": level.task.model_profile,
            "temperature": level.task.temperature,
            "max_tokens": level.task.max_tokens,
            "options": thaw(level.task.options),
            "vote": vote_json(level.task.vote, level.task) if level.task.vote else None,
            "accept_if": str(level.accept_if) if level.accept_if is not None else None,
        }
        for index, level in enumerate(task.levels)
    ]


def budget_json(budget: Budget | None) -> dict | None:
    return None if budget is None else {"max_tokens": budget.max_tokens, "max_seconds": budget.max_seconds}


def agent_headline(agent: AgentSpec) -> str | None:
    """What a vote or cascade agent does, in one line (None for other agents)."""
    if isinstance(agent.task, LlmTask) and agent.task.vote is not None:
        return vote_text(agent.task.vote, agent.task)
    if isinstance(agent.task, CascadeTask):
        return cascade_text(agent.task)
    return None


def agent_details(agent: AgentSpec) -> list[str]:
    """Lines under an agent's headline: its cascade levels, its budget."""
    lines = []
    if isinstance(agent.task, CascadeTask):
        lines += [level_text(i, level.task, level.accept_if) for i, level in enumerate(agent.task.levels)]
    if agent.budget is not None:
        lines.append(budget_text(agent.budget))
    return lines


def agent_json(agent: AgentSpec) -> dict:
    """`vote`, `cascade` and `budget` of an agent for `--json` views; null when it has none."""
    task = agent.task
    return {
        "vote": vote_json(task.vote, task) if isinstance(task, LlmTask) and task.vote is not None else None,
        "cascade": cascade_json(task) if isinstance(task, CascadeTask) else None,
        "budget": budget_json(agent.budget),
    }
