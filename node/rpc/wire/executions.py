"""Running one agent on a peer, on the wire: offers, the Execute request and its payload, the
events of an execution, and cancels."""

from __future__ import annotations

from typing_extensions import assert_never

from orc.node.models.runtimes.base import ChatMessage, GenerationParams
from orc.node.protocol.messages import (
    AgentPayload,
    ExecuteEvent,
    ExecuteRequest,
    ExecutionFailed,
    ExecutionResult,
    ExecutionStarted,
    ExecutionTokens,
    OfferReply,
    OfferRequest,
)
from orc.node.rpc.wire import checks as check
from orc.node.rpc.wire.checks import (
    MAX_MESSAGES,
    MAX_PAYLOAD_BYTES,
    MAX_REASON,
    MAX_STOP,
    MAX_STOP_CHARS,
    capped,
    fail,
    one_of,
    optional,
    required,
)
from orc.proto.v1 import mesh_pb2 as pb
from orc.scheduler.run import Usage

_ROLES = frozenset({"system", "user", "assistant"})
_SEED_RANGE = (-(2**63), 2**63 - 1)  # a sint64


def offer_request_to_wire(request: OfferRequest) -> pb.OfferRequest:
    return pb.OfferRequest(run_id=request.run_id, agent=request.agent, model_id=request.model_id,
                           model_sha256=request.model_sha256, prompt_tokens=request.prompt_tokens,
                           max_tokens=request.max_tokens)


def offer_request_from_wire(message: pb.OfferRequest) -> OfferRequest:
    return OfferRequest(
        run_id=check.label(message.run_id, "run_id"),
        agent=check.agent_name(message.agent),
        model_id=check.label(message.model_id, "model_id"),
        model_sha256=check.sha256(message.model_sha256, "model_sha256"),
        prompt_tokens=message.prompt_tokens,
        max_tokens=message.max_tokens,
    )


def offer_reply_to_wire(reply: OfferReply) -> pb.OfferReply:
    return pb.OfferReply(accepted=reply.accepted, lease_id=reply.lease_id,
                         estimated_finish_ms=reply.estimated_finish_ms, expires_at_ms=reply.expires_at_ms,
                         reason=reply.reason, permanent=reply.permanent)


def offer_reply_from_wire(message: pb.OfferReply) -> OfferReply:
    if message.accepted and not message.lease_id:
        fail("offer reply", "accepted without a lease id")
    return OfferReply(
        accepted=message.accepted,
        lease_id=check.label(message.lease_id, "lease_id", empty=True),
        estimated_finish_ms=message.estimated_finish_ms,
        expires_at_ms=message.expires_at_ms,
        reason=check.text(message.reason, "offer reason", MAX_REASON),
        permanent=message.permanent and not message.accepted,
    )


# ---- the payload: what to generate ----------------------------------------------------------------

def _payload_to_wire(payload: AgentPayload) -> pb.AgentPayload:
    params = payload.params
    wired = pb.GenerationParams(temperature=params.temperature, max_tokens=params.max_tokens, stop=list(params.stop))
    if params.seed is not None:
        wired.seed = params.seed
    if params.top_p is not None:
        wired.top_p = params.top_p
    return pb.AgentPayload(model_id=payload.model_id, model_sha256=payload.model_sha256,
                           messages=[pb.ChatMessage(role=m.role, content=m.content) for m in payload.messages],
                           params=wired)


def _turn_from_wire(message: pb.ChatMessage) -> ChatMessage:
    role = check.label(message.role, "message role")
    if role not in _ROLES:
        fail("message role", f"{role!r} is not one of {sorted(_ROLES)}")
    return ChatMessage(role, check.text(message.content, "message content", MAX_PAYLOAD_BYTES))


def _params_from_wire(message: pb.GenerationParams) -> GenerationParams:
    low, high = _SEED_RANGE
    return GenerationParams(
        temperature=check.number(message.temperature, "temperature", maximum=100.0),
        max_tokens=check.integer(message.max_tokens, "max_tokens", minimum=1, maximum=1 << 24),
        seed=optional(message, "seed", lambda v: check.integer(v, "seed", minimum=low, maximum=high)),
        stop=tuple(check.text(s, "stop string", MAX_STOP_CHARS, empty=False)
                   for s in capped(message.stop, "stop strings", MAX_STOP)),
        top_p=optional(message, "top_p", lambda v: check.number(v, "top_p", maximum=1.0)),
    )


def _payload_from_wire(message: pb.AgentPayload) -> AgentPayload:
    return AgentPayload(
        model_id=check.label(message.model_id, "payload model_id"),
        model_sha256=check.sha256(message.model_sha256, "payload model_sha256"),
        messages=tuple(_turn_from_wire(m)
                       for m in capped(message.messages, "agent payload messages", MAX_MESSAGES)),
        params=_params_from_wire(required(message, "params", "agent payload")),
    )


def execute_request_to_wire(request: ExecuteRequest) -> pb.ExecuteRequest:
    return pb.ExecuteRequest(execution_id=request.execution_id, run_id=request.run_id, agent=request.agent,
                             lease_id=request.lease_id, deadline_ms=request.deadline_ms,
                             payload=_payload_to_wire(request.payload))


def execute_request_from_wire(message: pb.ExecuteRequest) -> ExecuteRequest:
    return ExecuteRequest(
        execution_id=check.label(message.execution_id, "execution_id"),
        run_id=check.label(message.run_id, "run_id"),
        agent=check.agent_name(message.agent),
        lease_id=check.label(message.lease_id, "lease_id", empty=True),
        deadline_ms=message.deadline_ms,
        payload=_payload_from_wire(required(message, "payload", "execute request")),
    )


# ---- the events of an execution ---------------------------------------------------------------

def execute_event_to_wire(event: ExecuteEvent) -> pb.ExecuteEvent:
    match event:
        case ExecutionStarted(node_id=node_id, model=model):
            return pb.ExecuteEvent(started=pb.ExecuteEvent.Started(node_id=node_id, model=model))
        case ExecutionTokens(text=text):
            return pb.ExecuteEvent(tokens=pb.ExecuteEvent.TokenChunk(text=text))
        case ExecutionResult(output=output, usage=usage, finish_reason=finish_reason):
            return pb.ExecuteEvent(result=pb.ExecuteEvent.Result(
                output=output, finish_reason=finish_reason, usage=usage_to_wire(usage)))
        case ExecutionFailed(code=code, message=text, retryable=retryable):
            return pb.ExecuteEvent(error=pb.ExecuteEvent.Error(code=code, message=text, retryable=retryable))
        case _:
            assert_never(event)


def execute_event_from_wire(message: pb.ExecuteEvent) -> ExecuteEvent:
    match one_of(message, "event", "execute event"):
        case "started":
            return ExecutionStarted(check.node_id(message.started.node_id, "started node_id"),
                                    check.label(message.started.model, "started model"))
        case "tokens":
            return ExecutionTokens(message.tokens.text)
        case "result":
            result = message.result
            return ExecutionResult(result.output, usage_from_wire(result.usage),
                                   check.label(result.finish_reason, "finish reason", 32, empty=True))
        case "error":
            error = message.error
            return ExecutionFailed(check.label(error.code, "error code", 64),
                                   check.text(error.message, "error message", MAX_REASON), error.retryable)
        case unknown:
            fail("execute event", f"unknown event {unknown!r}")


def usage_to_wire(usage: Usage) -> pb.ExecuteEvent.Usage:
    return pb.ExecuteEvent.Usage(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens)


def usage_from_wire(message: pb.ExecuteEvent.Usage) -> Usage:
    return Usage(message.prompt_tokens, message.completion_tokens)
