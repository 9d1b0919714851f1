"""The node's pushed metrics, read back the way Prometheus reads them: every family with its type,
counters and histograms moving with the calls, runs counted without leaking, label values capped."""

from __future__ import annotations

import asyncio
import math

import pytest
from metrics_helpers import samples, scrape, value
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families

from orc.node.metrics import ENDPOINTS, NodeMetrics
from orc.node.metrics.labels import MAX_LABEL_VALUES, OTHER
from orc.node.protocol.events import (
    AgentBegan,
    AgentEnded,
    AgentRetrying,
    RunBegan,
    RunFinished,
    RunResult,
    TokenStreamed,
)
from orc.scheduler.run import AgentRecord, AgentStatus, RunId

PUSHED = {
    "orc_api_requests": "counter",
    "orc_prompt_tokens": "counter",
    "orc_completion_tokens": "counter",
    "orc_time_to_first_token_seconds": "histogram",
    "orc_inter_token_latency_seconds": "histogram",
    "orc_request_duration_seconds": "histogram",
    "orc_runs": "counter",
    "orc_runs_active": "gauge",
    "orc_agents": "counter",
    "orc_agent_retries": "counter",
    "orc_placements": "counter",
    "orc_failovers": "counter",
    "orc_mesh_rpc_errors": "counter",
    "orc_mesh_rpc_rejected": "counter",
}


def began(run_id: str = "r1") -> RunBegan:
    return RunBegan(RunId(run_id), "triage", ("a", "b"), None, 1.0)


def finished(status: str = "completed", run_id: str = "r1") -> RunFinished:
    return RunFinished(RunResult(RunId(run_id), "triage", status, "ok", (), 1.0, 2.0))


def ended(agent: str, status: AgentStatus, reused: bool = False) -> AgentEnded:
    return AgentEnded(agent, AgentRecord(status, 1), reused)


def test_every_pushed_family_is_there_from_the_start_with_its_type_and_orc_prefix():
    families = scrape(NodeMetrics())
    orc = {name: family.type for name, family in families.items() if not name.endswith("_created")}
    assert orc == PUSHED  # nothing more: the scrape-time families need a running node
    assert all(name.startswith("orc_") and ":" not in name for name in families)
    # Known statuses start at 0, so a rate over them works before the first run ends.
    assert value(NodeMetrics(), "orc_runs_total", status="completed_with_errors") == 0
    assert value(NodeMetrics(), "orc_agents_total", status="skipped") == 0
    assert value(NodeMetrics(), "orc_runs_active") == 0 and value(NodeMetrics(), "orc_agent_retries_total") == 0


def test_requests_are_counted_by_endpoint_model_and_code():
    metrics = NodeMetrics()
    metrics.request("chat.completions", "smollm2-135m-instruct", 200)
    metrics.request("chat.completions", "smollm2-135m-instruct", 200)
    metrics.request("chat.completions", "ensemble/triage", 429)
    metrics.request("health", "", 200)
    metrics.request("../../etc/passwd", "", 404)  # not an endpoint of ours: never a label of its own
    assert samples(metrics, "orc_api_requests_total") == {
        (("code", "200"), ("endpoint", "chat.completions"), ("model", "smollm2-135m-instruct")): 2,
        (("code", "429"), ("endpoint", "chat.completions"), ("model", "ensemble/triage")): 1,
        (("code", "200"), ("endpoint", "health"), ("model", "")): 1,
        (("code", "404"), ("endpoint", OTHER), ("model", "")): 1,
    }
    assert ENDPOINTS == {"chat.completions", "completions", "models", "metrics", "health"}


def test_a_generation_moves_its_token_counters_and_its_three_histograms():
    metrics = NodeMetrics()
    metrics.generation("m", prompt_tokens=12, completion_tokens=3, first_token_s=0.08, token_gaps_s=[0.012, 0.3],
                       total_s=0.5)
    metrics.generation("m", prompt_tokens=5, completion_tokens=0, first_token_s=None, token_gaps_s=[], total_s=0.02)
    assert value(metrics, "orc_prompt_tokens_total", model="m") == 17
    assert value(metrics, "orc_completion_tokens_total", model="m") == 3
    assert value(metrics, "orc_time_to_first_token_seconds_count", model="m") == 1  # the one that wrote a token
    assert value(metrics, "orc_time_to_first_token_seconds_sum", model="m") == pytest.approx(0.08)
    assert value(metrics, "orc_time_to_first_token_seconds_bucket", model="m", le="0.1") == 1
    assert value(metrics, "orc_time_to_first_token_seconds_bucket", model="m", le="0.05") == 0
    assert value(metrics, "orc_inter_token_latency_seconds_count", model="m") == 2  # each gap, not each call
    assert value(metrics, "orc_inter_token_latency_seconds_bucket", model="m", le="0.02") == 1
    assert value(metrics, "orc_request_duration_seconds_count", model="m") == 2
    assert value(metrics, "orc_request_duration_seconds_bucket", model="m", le="0.05") == 1
    assert value(metrics, "orc_request_duration_seconds_bucket", model="m", le="+Inf") == 2


def test_histogram_buckets_reach_from_milliseconds_to_minutes():
    families = scrape(_one_generation())
    for name, smallest, largest in (("orc_time_to_first_token_seconds", 0.01, 300),
                                    ("orc_inter_token_latency_seconds", 0.002, 5),
                                    ("orc_request_duration_seconds", 0.05, 1200)):
        bounds = [float(s.labels["le"]) for s in families[name].samples if s.name.endswith("_bucket")]
        assert min(bounds) == smallest and max(b for b in bounds if math.isfinite(b)) == largest, name


def _one_generation() -> NodeMetrics:
    metrics = NodeMetrics()
    metrics.generation("m", 1, 1, 0.1, [0.01], 0.2)
    return metrics


def test_impossible_timings_are_left_out_not_recorded():
    metrics = NodeMetrics()
    metrics.generation("m", -4, -1, -0.5, [math.nan, -1.0, math.inf, 0.01], math.nan)
    assert value(metrics, "orc_prompt_tokens_total", model="m") is None
    assert value(metrics, "orc_time_to_first_token_seconds_count", model="m") is None
    assert value(metrics, "orc_inter_token_latency_seconds_count", model="m") == 1
    assert value(metrics, "orc_request_duration_seconds_count", model="m") is None


def test_run_events_count_runs_agents_and_retries_and_the_active_runs():
    metrics = NodeMetrics()
    metrics.run_event(began())
    metrics.run_event(began("r2"))
    assert value(metrics, "orc_runs_active") == 2
    for event in (AgentBegan("a", "n1", "m", 1), TokenStreamed("a", "hi"), AgentRetrying("a", "boom", 1),
                  ended("a", AgentStatus.COMPLETED), ended("b", AgentStatus.FAILED),
                  ended("c", AgentStatus.COMPLETED, reused=True), finished("completed_with_errors")):
        metrics.run_event(event)
    assert value(metrics, "orc_runs_active") == 1
    assert value(metrics, "orc_runs_total", status="completed_with_errors") == 1
    assert value(metrics, "orc_runs_total", status="completed") == 0
    assert value(metrics, "orc_agents_total", status="completed") == 1  # the reused one counted when it ran
    assert value(metrics, "orc_agents_total", status="failed") == 1
    assert value(metrics, "orc_agent_retries_total") == 1


async def _stream(*events, fail: BaseException | None = None):
    for event in events:
        yield event
        await asyncio.sleep(0)
    if fail is not None:
        raise fail


def test_a_watched_run_is_counted_and_leaves_the_active_gauge_as_it_found_it_however_it_ends():
    metrics = NodeMetrics()

    async def scenario() -> None:
        whole = [e async for e in metrics.watched_run(_stream(began(), ended("a", AgentStatus.COMPLETED),
                                                              finished()))]
        assert len(whole) == 3 and value(metrics, "orc_runs_active") == 0
        assert value(metrics, "orc_runs_total", status="completed") == 1

        abandoned = metrics.watched_run(_stream(began("r2"), TokenStreamed("a", "x"), finished(run_id="r2")))
        assert isinstance(await abandoned.__anext__(), RunBegan)
        assert value(metrics, "orc_runs_active") == 1
        await abandoned.aclose()  # the client went away mid-run
        assert value(metrics, "orc_runs_active") == 0

        with pytest.raises(RuntimeError):
            async for _ in metrics.watched_run(_stream(began("r3"), fail=RuntimeError("engine died"))):
                pass
        assert value(metrics, "orc_runs_active") == 0

        task = asyncio.create_task(_consume(metrics.watched_run(_hangs_after(began("r4")))))
        while value(metrics, "orc_runs_active") != 1:
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert value(metrics, "orc_runs_active") == 0
        assert value(metrics, "orc_runs_total", status="completed") == 1  # only the whole run ended

    asyncio.run(scenario())


async def _hangs_after(event):
    yield event
    await asyncio.Event().wait()


async def _consume(events) -> None:
    async for _ in events:
        pass


def test_the_wrapped_stream_is_closed_with_the_watched_one():
    metrics = NodeMetrics()
    closed = []

    async def source():
        try:
            yield began()
            yield finished()
        finally:
            closed.append(True)

    async def scenario() -> None:
        watched = metrics.watched_run(source())
        await watched.__anext__()
        await watched.aclose()

    asyncio.run(scenario())
    assert closed == [True]


def test_placements_failovers_and_mesh_rpc_failures_are_counted_by_their_labels():
    metrics = NodeMetrics()
    for node in ("kitchen-pi", "kitchen-pi", "attic"):
        metrics.placed(node)
    metrics.failed_over("kitchen-pi")
    metrics.rpc_failed("Offer", "UNAVAILABLE")
    metrics.rpc_failed("Offer", "UNAVAILABLE")
    metrics.rpc_failed("Execute", "DEADLINE_EXCEEDED")
    metrics.rpc_rejected("revoked")
    assert value(metrics, "orc_placements_total", node="kitchen-pi") == 2
    assert value(metrics, "orc_placements_total", node="attic") == 1
    assert value(metrics, "orc_failovers_total", node="kitchen-pi") == 1
    assert value(metrics, "orc_mesh_rpc_errors_total", method="Offer", code="UNAVAILABLE") == 2
    assert value(metrics, "orc_mesh_rpc_errors_total", method="Execute", code="DEADLINE_EXCEEDED") == 1
    assert value(metrics, "orc_mesh_rpc_rejected_total", reason="revoked") == 1


def test_a_peer_renaming_itself_in_a_loop_is_folded_into_other_past_the_cap():
    metrics = NodeMetrics()
    for number in range(MAX_LABEL_VALUES + 50):
        metrics.placed(f"sybil-{number}")
    metrics.placed("sybil-0")  # one seen before the cap keeps its own series
    placements = samples(metrics, "orc_placements_total")
    assert len(placements) == MAX_LABEL_VALUES + 1
    assert placements[(("node", OTHER),)] == 50
    assert placements[(("node", "sybil-0"),)] == 2
    # Each family has its own cap: failovers still name nodes.
    metrics.failed_over("sybil-999")
    assert value(metrics, "orc_failovers_total", node="sybil-999") == 1


def test_two_nodes_in_one_process_count_apart():
    first, second = NodeMetrics(), NodeMetrics()
    first.placed("b")
    assert value(first, "orc_placements_total", node="b") == 1
    assert value(second, "orc_placements_total", node="b") is None


def test_it_renders_prometheus_text_by_default_and_openmetrics_when_asked():
    metrics = NodeMetrics()
    metrics.placed("b")
    body, content_type = metrics.render(None)
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    assert body.startswith(b"# HELP") and b'orc_placements_total{node="b"} 1.0' in body
    assert metrics.render("text/plain")[1] == content_type
    body, content_type = metrics.render("application/openmetrics-text; version=1.0.0; charset=utf-8")
    assert content_type.startswith("application/openmetrics-text; version=1.0.0")
    assert body.endswith(b"# EOF\n")
    families = {family.name: family for family in openmetrics_families(body.decode())}
    assert families["orc_placements"].type == "counter"
    assert [s.value for s in families["orc_placements"].samples if s.name == "orc_placements_total"] == [1]
