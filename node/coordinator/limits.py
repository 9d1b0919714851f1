"""How long an agent attempt may take, and the one rule that decides it.

An attempt's own time is the agent's `timeout_seconds`, else its model profile's, else orc's
default for the agents that do work themselves (LLM and script agents); composite agents (a
nested ensemble, a loop, a dispatch) have none of their own: their agents carry theirs. An
LLM agent's time counts from when its generation starts; how long it may wait for a model
before that is a second limit, `queue_timeout_seconds`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orc.scheduler.ensemble import AgentSpec, LlmTask, ScriptTask
from orc.scheduler.profiles import Profiles, ResolvedModel

DEFAULT_AGENT_TIMEOUT = 300.0  # seconds; llm-orc's default too. Composite agents have none.
# How long an LLM agent's generation may wait for a model before it starts (every node full,
# or queued on one) unless the agent says `queue_timeout_seconds`.
DEFAULT_QUEUE_TIMEOUT = 300.0


@dataclass(frozen=True)
class Limits:
    """An agent attempt's time limits, each with where it was set (for the messages)."""

    timeout_s: float | None  # the attempt's own time; for an LLM agent, from when its generation starts
    timeout_origin: str
    wait_s: float | None  # LLM agents: how long a generation may wait to start
    wait_origin: str

    def timed_out(self, generating: bool) -> str:
        doing = " of generating" if generating else ""
        return f"timed out after {self.timeout_s:g} s{doing} ({self.timeout_origin})"

    def waited(self, answers: str) -> str:
        return (f"waited {self.wait_s:g} s for a model without starting ({self.wait_origin})"
                + (f"; last answers: {answers}" if answers else ""))


def agent_limits(agent: AgentSpec, resolved: ResolvedModel | None, profiles: Profiles,
                 source: Path | None) -> Limits:
    """The limits of `agent` (of the ensemble read from `source`); `resolved` is its model, for an LLM agent."""
    where = source.name if source else "the ensemble"
    profile = profiles.profiles.get(resolved.profile) if resolved is not None and resolved.profile else None
    timeout: float | None = None
    origin = ""
    if agent.timeout_seconds is not None:
        timeout = agent.timeout_seconds
        origin = f"timeout_seconds: {timeout:g} of agent '{agent.name}' in {where}"
    elif profile is not None and profile.timeout_seconds is not None:
        timeout = profile.timeout_seconds
        origin = (f"timeout_seconds: {timeout:g} of profile '{profile.name}' in "
                  f"{profile.source or 'the built-in profiles'}")
    elif isinstance(agent.task, (LlmTask, ScriptTask)):
        timeout, origin = DEFAULT_AGENT_TIMEOUT, f"orc's default of {DEFAULT_AGENT_TIMEOUT:g} s"
    if agent.queue_timeout_seconds is not None:
        wait = agent.queue_timeout_seconds
        wait_origin = f"queue_timeout_seconds: {wait:g} of agent '{agent.name}' in {where}"
    else:
        wait, wait_origin = DEFAULT_QUEUE_TIMEOUT, f"orc's default of {DEFAULT_QUEUE_TIMEOUT:g} s"
    return Limits(timeout, origin, wait, wait_origin)
