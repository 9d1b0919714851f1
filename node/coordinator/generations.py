"""What the mesh placer is given and what it says back: a generation to place and perform, the
events of its performance, the ways it can fail, and what the placer needs of its peers.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol, Union

from orc.node.models.runtimes.base import ChatMessage, GenerationDone, GenerationParams, TokenChunk
from orc.node.protocol.description import Load, NodeDescription
from orc.node.protocol.messages import ExecuteEvent, ExecuteRequest, OfferReply, OfferRequest
from orc.scheduler.ensemble import Placement
from orc.scheduler.placement import Decision, HeldModel, NodeView


@dataclass(frozen=True)
class Generation:
    """One LLM generation of a run, to be placed and performed."""

    run_id: str
    agent: str  # as the progress shows it: "name", "parent/name", "name[i]"
    model: str  # "ID" or "ID@RUNTIME"
    sha256: str | None  # the weights this node has under that id; None when it has none
    messages: tuple[ChatMessage, ...]
    params: GenerationParams
    placement: Placement
    rank: float  # critical-path length from this agent to the end of its ensemble, seconds
    attempts: int  # nodes it may be tried on
    deadline_s: float | None = None  # the generation's own time, from when its node starts it
    wait_s: float | None = None  # how long it may wait to start (refused everywhere, or queued); None: forever
    local: bool = False  # `--local`: this node only
    epoch: float = 0.0  # when this run, or this resume of it, began: attempts of a resume get new ids

    @property
    def prompt_chars(self) -> int:
        return sum(len(m.content) for m in self.messages)


@dataclass(frozen=True)
class Bound:
    """The generation now runs on this node; `replaces` tells why an earlier node was dropped."""

    node_id: str
    node_name: str
    replaces: str | None = None


@dataclass(frozen=True)
class Working:
    """The node left its queue and started generating, `waited_s` after the generation was first placed."""

    node_id: str
    waited_s: float


MeshEvent = Union[Bound, Working, TokenChunk, GenerationDone]


class NoNode(Exception):
    """No node of the mesh can run this generation now (the message says why, node by node)."""


class NoRoom(NoNode):
    """The generation waited `waited_s` (its `wait_s`) without any node starting it; `answers`
    pairs each node asked with its last answer."""

    def __init__(self, waited_s: float, answers: tuple[tuple[str, str], ...]) -> None:
        self.waited_s = waited_s
        self.answers = answers
        super().__init__(f"waited {waited_s:.0f} s without a node starting it ("
                         + ("; ".join(f"{name}: {why}" for name, why in answers) or "no node answered") + ")")


class TimedOut(NoNode):
    """The node ended the generation at its deadline (`Generation.deadline_s` from its start)."""


@dataclass(frozen=True)
class Answer:
    """A node's refusal of an Offer: `permanent` when waiting cannot change it."""

    name: str
    reason: str
    permanent: bool = False


@dataclass(frozen=True)
class PeerState:
    """A peer as the coordinator knows it: its last description, liveness and last beat's load."""

    node_id: str
    description: NodeDescription | None
    alive: bool
    load: Load | None = None
    load_at: float | None = None  # when that beat arrived
    address: str | None = None  # where this node reached it (the address that verified)


class PeerLink(Protocol):
    """What the coordinator needs of a connection to a peer (`orc.node.rpc.client.PeerClient`)."""

    async def offer(self, request: OfferRequest, timeout: float = ...) -> OfferReply: ...

    def execute(self, request: ExecuteRequest, timeout: float | None = None) -> AsyncIterator[ExecuteEvent]: ...

    async def cancel(self, execution_id: str, timeout: float = ...) -> bool: ...

    async def close(self) -> None: ...


def execution_id(run_id: str, agent: str, attempt: int, epoch: float = 0.0) -> str:
    """Derived, not negotiated: the same generation attempt has the same id everywhere."""
    return hashlib.sha256(f"{run_id}\0{agent}\0{attempt}\0{epoch!r}".encode()).hexdigest()[:32]


def node_view_of(description: NodeDescription, alive: bool, load: Load | None, load_at: float | None,
               network_s: float) -> NodeView:
    models = tuple(HeldModel(m.id, m.runtime, m.sha256, m.size_bytes, m.loaded, m.prefill_tokens_per_s,
                             m.decode_tokens_per_s, m.capacity, m.batch_decode_tokens_per_s, m.unavailable)
                   for m in description.models)
    load = load or description.load
    return NodeView(node_id=description.node_id, name=description.name, alive=alive, models=models,
                    tags=frozenset(description.tags), memory_available_bytes=description.hardware.ram_available_bytes,
                    backlog_s=load.backlog_ms / 1000, network_s=network_s, running=load.active_generations,
                    queued=load.queued)


def failed_message(failed: dict[str, str], names: dict[str, str]) -> str:
    return f"failed on {len(failed)} node(s): " + "; ".join(f"{names.get(n, n)}: {why}" for n, why in failed.items())


def no_node_message(decision: Decision, failed: dict[str, str], names: dict[str, str]) -> str:
    parts = []
    for rejection in decision.rejected:
        why = failed.get(rejection.node_id)
        parts.append(f"{rejection.name}: {why}" if why else f"{rejection.name}: {rejection.detail}")
    head = "no node can run it" if not failed else "no other node can run it"
    return f"{head} ({'; '.join(parts) or 'no node is known'})"
