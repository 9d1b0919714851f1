"""This node as peers see it: its description, beats, and executions on the real runtime."""

from __future__ import annotations

import asyncio
import os
from datetime import datetime, timezone

import pytest

from orc.node.catalog import Catalog
from orc.node.identity.store import IdentityStore
from orc.node.membership import Membership
from orc.node.rpc.errors import PermissionDenied
from orc.node.rpc.types import (
    AgentPayload,
    ExecuteRequest,
    ExecutionFailed,
    ExecutionResult,
    ExecutionStarted,
    ExecutionTokens,
    OfferRequest,
)
from orc.node.runtimes.base import ChatMessage, GenerationParams
from orc.node.runtimes.llama_cpp import LlamaCppRuntime
from orc.node.service import NodeService
from orc.node.speed import Speed, speed_from_timing

SMOL = "smollm2-135m-instruct"
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def runtime():
    return LlamaCppRuntime(n_threads=2)


@pytest.fixture
def service(tmp_path, runtime):
    store = IdentityStore(tmp_path / "identity")
    membership = Membership(store, store.init_mesh("attic", NOW))
    catalog = Catalog(tmp_path / "models")
    return NodeService(membership=membership, runtimes={"llama_cpp": runtime},
                       served=[catalog.prepare(SMOL)], addresses=lambda: ("10.0.0.1:7733",),
                       known_peers=lambda: (), tags=("attic",))


def request(service: NodeService, execution_id: str = "e1", sha: str | None = None, max_tokens: int = 12,
            deadline_ms: int = 0) -> ExecuteRequest:
    entry = service._served[f"{SMOL}@llama_cpp"].entry
    payload = AgentPayload(SMOL, entry.sha256 if sha is None else sha,
                           (ChatMessage("user", "Name one colour."),),
                           GenerationParams(temperature=0.0, max_tokens=max_tokens, seed=1))
    return ExecuteRequest(execution_id, "run1", "agent", "", deadline_ms, payload)


async def collect(stream) -> list:
    return [event async for event in stream]


def test_describe_tells_the_truth_about_this_node(service):
    description = service.describe()
    assert description.node_id == service.membership.identity.node_id
    assert description.mesh_id == service.membership.identity.mesh_id
    assert description.hardware.cores == os.cpu_count()
    assert description.addresses == ("10.0.0.1:7733",) and description.tags == ("attic",)
    assert description.certificate_authority is True and description.revocation_seq == 0
    [model] = description.models
    assert model.id == SMOL and model.loaded is False and model.decode_tokens_per_s is None
    assert len(model.sha256) == 64


def test_warm_up_loads_measures_and_bumps_the_version(service):
    before = service.version
    asyncio.run(service.warm_up())
    [model] = service.describe().models
    assert model.loaded is True and model.decode_tokens_per_s > 0 and model.prefill_tokens_per_s > 0
    assert service.version > before


def test_execute_streams_tokens_then_a_result(service):
    events = asyncio.run(collect(service.execute("peer", request(service))))
    assert isinstance(events[0], ExecutionStarted) and events[0].model == SMOL
    assert isinstance(events[-1], ExecutionResult)
    text = "".join(e.text for e in events if isinstance(e, ExecutionTokens))
    assert text == events[-1].output and events[-1].usage.completion_tokens > 0
    assert service.load().active_generations == 0


def test_execute_refuses_other_weights_and_unknown_models(service):
    [failed] = asyncio.run(collect(service.execute("peer", request(service, sha="0" * 64))))
    assert isinstance(failed, ExecutionFailed) and failed.code == "no_such_model" and not failed.retryable


def test_a_deadline_ends_the_execution_as_retryable(service):
    events = asyncio.run(collect(service.execute("peer", request(service, max_tokens=400, deadline_ms=1))))
    assert isinstance(events[-1], ExecutionFailed) and events[-1].code == "deadline" and events[-1].retryable


def test_only_the_starter_may_cancel(service):
    async def scenario():
        stream = service.execute("peer", request(service, "e2", max_tokens=200))
        first = await stream.__anext__()
        assert isinstance(first, ExecutionStarted)
        with pytest.raises(PermissionDenied):
            await service.cancel("intruder", "e2")
        assert await service.cancel("peer", "e2") is True
        rest = [event async for event in stream]
        return rest

    rest = asyncio.run(scenario())
    assert isinstance(rest[-1], ExecutionFailed) and rest[-1].code == "cancelled"
    assert asyncio.run(service.cancel("peer", "e2")) is False


def test_offers_estimate_from_measured_speed(service):
    service._served[f"{SMOL}@llama_cpp"].speed = Speed(100.0, 10.0, 0.0)
    reply = asyncio.run(service.offer("peer", OfferRequest("run", "a", SMOL, "", 200, 50)))
    assert reply.accepted and reply.lease_id and reply.estimated_finish_ms == 7000
    refused = asyncio.run(service.offer("peer", OfferRequest("run", "a", "gpt-9", "", 1, 1)))
    assert not refused.accepted and "gpt-9" in refused.reason


def test_speed_arithmetic():
    speed = speed_from_timing(100, 11, started=0.0, first_token=0.5, finished=1.5, now=7.0)
    assert speed == Speed(200.0, 10.0, 7.0)
    assert speed_from_timing(100, 1, 0.0, 0.5, 1.0, 0.0) is None  # one token: no decode rate
    assert speed.refreshed(Speed(100.0, 20.0, 8.0)) == Speed(170.0, 13.0, 8.0)
