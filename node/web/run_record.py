"""A run as the dashboard keeps it in memory while it runs and for a while after: its events as
JSON (stamped with the time the daemon saw them), each agent as its events describe it, the text
each agent streamed. Pure: the hub (`orc.node.web.runs`) feeds it events and the time.

Everything here is fed by runs, whose agents' names, tokens and outputs come from models and
scripts, some on other nodes; every table has a cap, so one long or wide run cannot grow the
daemon's memory without bound.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orc.node.protocol.events import (
    AgentBegan,
    AgentEnded,
    AgentPlacedOn,
    AgentRetrying,
    AgentWorking,
    RunBegan,
    RunFinished,
    RunPlanned,
    RunProgress,
    TokenStreamed,
)
from orc.scheduler.run import AgentRecord
from orc.scheduler.values import thaw
from typing_extensions import assert_never

# Events kept per run (the page draws a run it opens late from them). Token events stop being
# kept at TOKEN_EVENTS_KEPT, so a long generation cannot push the agents' own events out;
# the text itself is still in each agent's `tokens`.
MAX_EVENTS = 5000
TOKEN_EVENTS_KEPT = 4000
# Text kept per agent (streamed tokens, an output or a deliverable rendered as text), in bytes
# of UTF-8: a model that never stops, or a script printing megabytes, is cut here.
MAX_TEXT_BYTES = 64 * 1024
# Agents tracked per run, fan-out instances and nested agents included: a fan-out over a huge
# list is cut here (the journal still has every top-level agent).
MAX_AGENTS = 1000

Json = dict[str, Any]


def as_text(value: object, limit: int = MAX_TEXT_BYTES) -> str | None:
    """An output or a deliverable as the page shows it: a string as it is, several named strings
    under headings, anything else as JSON; None for no value. Cut to `limit` bytes of UTF-8."""
    data = thaw(value)
    if data is None:
        return None
    if isinstance(data, str):
        text = data
    elif isinstance(data, dict) and data and all(isinstance(v, str) for v in data.values()):
        text = "\n\n".join(f"## {name}\n{part}" for name, part in data.items())
    else:
        text = json.dumps(data, indent=2, ensure_ascii=False, default=str)
    return cut(text, limit)


def cut(text: str, limit: int = MAX_TEXT_BYTES) -> str:
    """`text` cut to at most `limit` bytes of UTF-8, never inside a character."""
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return text
    return encoded[:limit].decode("utf-8", errors="ignore")


def event_json(event: RunProgress, at: float) -> Json | None:
    """The dashboard's EVENT for a run event seen at `at` (docs/api.md); None for a forecast,
    which is not part of the run."""
    match event:
        case RunBegan():
            return {"type": "run_began", "at": at, "run_id": event.run_id, "ensemble": event.ensemble,
                    "agents": list(event.agents), "resumed": event.resumed}
        case AgentBegan():
            return {"type": "agent_began", "at": at, "agent": event.agent, "node_id": event.node_id,
                    "model": event.model, "attempt": event.attempt}
        case AgentPlacedOn():
            return {"type": "agent_placed", "at": at, "agent": event.agent, "node_id": event.node_id,
                    "node_name": event.node_name, "replaces": event.replaces}
        case AgentWorking():
            return {"type": "agent_working", "at": at, "agent": event.agent, "node_id": event.node_id,
                    "waited_s": event.waited_s}
        case TokenStreamed():
            return {"type": "token", "at": at, "agent": event.agent, "text": event.text}
        case AgentEnded(record=record):
            return {"type": "agent_ended", "at": at, "agent": event.agent, "status": record.status.value,
                    "node_id": record.node_id, "model": record.model, "attempts": record.tries,
                    "started_at": record.started_at, "finished_at": record.finished_at, "error": record.error,
                    "usage": usage_json(record)}
        case AgentRetrying():
            return {"type": "agent_retrying", "at": at, "agent": event.agent, "error": event.error,
                    "attempt": event.attempt}
        case RunFinished(result=result):
            return {"type": "run_finished", "at": at, "status": result.status,
                    "deliverable": as_text(result.deliverable)}
        case RunPlanned():
            return None
        case _:
            assert_never(event)


def usage_json(record: AgentRecord) -> Json:
    return {"prompt_tokens": record.usage.prompt_tokens, "completion_tokens": record.usage.completion_tokens}


@dataclass
class AgentSeen:
    """One agent as its events describe it (AGENT of docs/api.md, plus its streamed text)."""

    status: str = "pending"
    node_id: str | None = None
    node_name: str | None = None
    model: str | None = None
    attempts: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    output: str | None = None
    error: str | None = None
    usage: Json = field(default_factory=lambda: {"prompt_tokens": 0, "completion_tokens": 0})
    tokens: str = ""  # the text its current attempt streamed, cut at MAX_TEXT_BYTES
    token_bytes: int = 0

    def json(self) -> Json:
        return {"status": self.status, "node_id": self.node_id, "node_name": self.node_name, "model": self.model,
                "attempts": self.attempts, "started_at": self.started_at, "finished_at": self.finished_at,
                "output": self.output, "error": self.error, "usage": dict(self.usage), "tokens": self.tokens}


@dataclass
class LiveRun:
    """A run the hub watches or watched: what its events said, in the order they came."""

    run_id: str
    ensemble: str
    began_at: float  # when this daemon saw it begin (a resume begins again)
    journal: Path | None
    resumed: bool
    active: bool = True
    status: str = "running"  # then the run's own status, or "interrupted" if it ended without one
    finished_at: float | None = None
    deliverable: str | None = None
    events: list[Json] = field(default_factory=list)
    token_events: int = 0
    events_dropped: int = 0
    agents: dict[str, AgentSeen] = field(default_factory=dict)

    @classmethod
    def began(cls, event: RunBegan, at: float) -> LiveRun:
        run = cls(event.run_id, event.ensemble, at, event.journal, event.resumed)
        for name in event.agents[:MAX_AGENTS]:
            run.agents[name] = AgentSeen()
        return run

    def observe(self, event: RunProgress, as_json: Json) -> None:
        """Take one event of this run (and its JSON, stamped) into account."""
        self._keep(as_json)
        match event:
            case AgentBegan():
                agent = self._agent(event.agent)
                if agent is not None:
                    agent.status, agent.model, agent.attempts = "running", event.model, event.attempt
                    agent.node_id = event.node_id or agent.node_id
                    agent.started_at, agent.finished_at = as_json["at"], None
                    agent.error, agent.output, agent.tokens, agent.token_bytes = None, None, "", 0
            case AgentPlacedOn():
                agent = self._agent(event.agent)
                if agent is not None:
                    agent.node_id, agent.node_name = event.node_id, event.node_name
            case TokenStreamed():
                agent = self._agent(event.agent)
                if agent is not None and agent.token_bytes < MAX_TEXT_BYTES:
                    piece = cut(event.text, MAX_TEXT_BYTES - agent.token_bytes)
                    agent.tokens += piece
                    agent.token_bytes += len(piece.encode("utf-8"))
            case AgentEnded(record=record):
                agent = self._agent(event.agent)
                if agent is not None:
                    agent.status, agent.model, agent.attempts = record.status.value, record.model, record.tries
                    agent.node_id = record.node_id or agent.node_id
                    agent.started_at, agent.finished_at = record.started_at, record.finished_at
                    agent.output, agent.error, agent.usage = as_text(record.output), record.error, usage_json(record)
            case AgentRetrying():
                agent = self._agent(event.agent)
                if agent is not None:
                    agent.status, agent.error = "pending", event.error
            case RunFinished(result=result):
                self.status, self.finished_at = result.status, as_json["at"]
                self.deliverable = as_json.get("deliverable")
            case AgentWorking():
                agent = self._agent(event.agent)
                if agent is not None:
                    agent.node_id = event.node_id
            case RunBegan() | RunPlanned():
                pass
            case _:
                assert_never(event)

    def ended(self, at: float) -> None:
        """The run's stream ended: with its RunFinished, or without (cancelled, or it failed), in
        which case its journal has no end either and it is interrupted (resumable)."""
        self.active = False
        if self.status == "running":
            self.status, self.finished_at = "interrupted", None
            for agent in self.agents.values():
                if agent.status == "running":
                    agent.status = "pending"

    def summary_json(self) -> Json:
        return {"run_id": self.run_id, "ensemble": self.ensemble, "status": self.status, "active": self.active,
                "started_at": self.began_at, "finished_at": self.finished_at}

    def _keep(self, as_json: Json) -> None:
        is_token = as_json["type"] == "token"
        if len(self.events) >= MAX_EVENTS or (is_token and self.token_events >= TOKEN_EVENTS_KEPT):
            self.events_dropped += 1
            return
        self.events.append(as_json)
        self.token_events += is_token

    def _agent(self, name: str) -> AgentSeen | None:
        agent = self.agents.get(name)
        if agent is None and len(self.agents) < MAX_AGENTS:
            agent = self.agents[name] = AgentSeen()
        return agent
