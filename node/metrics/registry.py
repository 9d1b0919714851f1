"""`NodeMetrics`: everything one node counts, in a Prometheus registry of its own.

Two kinds of metrics live here. Observations are pushed as they happen by the parts that see
them: the HTTP face (`request`, `generation`), the control service (`run_event`, `watched_run`),
the mesh placer (`placed`, `failed_over`), the peer clients and the mesh server's authorizer
(`rpc_failed`, `rpc_rejected`). State that already lives somewhere (peers, admission lanes,
runner restarts) is read at scrape time (`orc.node.metrics.scrape`). `render` produces the
`/metrics` body. docs/api.md lists every metric.

Each node owns its registry, never prometheus_client's global one: tests run several nodes in
one process, and the global registry would merge their counts (and refuse a second node's names).
Every label value passes a `LabelCap` first (`orc.node.metrics.labels`): several come from peers.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from typing_extensions import assert_never

from orc.node.metrics.labels import OTHER, LabelCap
from orc.node.metrics.scrape import RunningCollector
from orc.node.metrics.sources import RunningSources
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
from orc.scheduler.run import AgentStatus

log = logging.getLogger(__name__)

# What the HTTP face serves (docs/api.md); anything else is counted as OTHER, never as itself.
ENDPOINTS = frozenset({"chat.completions", "completions", "models", "metrics", "health"})

# Buckets, in seconds, for models of 100M to a few billion parameters on laptop CPUs, Raspberry
# Pis and small accelerators. Prometheus' defaults (5 ms to 10 s) cut off exactly where these
# devices live: a cold load or a long prompt on a Pi takes minutes, and decoding runs at 2 to
# 100 tokens a second, not thousands.
#
# First token: a warm 135M model on a laptop answers in tens of milliseconds; a queued request,
# a cold model load or a 2000-token prompt on a Pi takes from seconds to a few minutes.
FIRST_TOKEN_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
# Between tokens: 70 tokens/s (14 ms) for SmolLM2 on two laptop cores, 2 to 10 tokens/s for a
# 1B model on a Pi, slower still when several sequences share a batch; a gap past a few seconds
# is a stall worth seeing.
TOKEN_GAP_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)
# End to end: a short answer on a laptop in a fraction of a second, a long one on a Pi (or an
# ensemble of several agents) in many minutes.
REQUEST_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0)

# A finished run's status (docs/cli.md, `orc run --json`) and a terminal agent's.
RUN_STATUSES = ("completed", "completed_with_errors", "failed")
AGENT_STATUSES = tuple(status.value for status in AgentStatus if status.terminal)

_M = TypeVar("_M", Counter, Gauge, Histogram)


class _Capped(Generic[_M]):
    """A labelled metric whose label values pass a `LabelCap` before they make a series."""

    def __init__(self, metric: _M, family: str, labels: Sequence[str]) -> None:
        self.metric = metric
        self.cap = LabelCap(family, labels)

    def labels(self, *values: object) -> _M:
        return self.metric.labels(*self.cap.values(*values))


class NodeMetrics:
    """One node's metrics: pushed observations, scrape-time state, and the `/metrics` body.

    `running` returns the running node's parts (`orc.node.daemon.startup.Running` fits) or None
    while the daemon starts; it is called at each scrape. Implements `PlacementObserver` and
    `RpcObserver` (`orc.node.metrics.observers`). Not thread-safe beyond what prometheus_client
    guarantees: call it from the event loop.
    """

    def __init__(self, *, running: Callable[[], RunningSources | None] = lambda: None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._requests = _Capped(Counter("orc_api_requests", "HTTP API requests answered, by endpoint, model "
                                         "and status code.", ["endpoint", "model", "code"], registry=r),
                                 "orc_api_requests_total", ["endpoint", "model", "code"])
        self._prompt_tokens = _Capped(Counter("orc_prompt_tokens", "Prompt tokens read for API generations.",
                                              ["model"], registry=r), "orc_prompt_tokens_total", ["model"])
        self._completion_tokens = _Capped(Counter("orc_completion_tokens", "Completion tokens written for API "
                                                  "generations.", ["model"], registry=r),
                                          "orc_completion_tokens_total", ["model"])
        self._first_token = _Capped(Histogram("orc_time_to_first_token_seconds", "From the request to its first "
                                              "token.", ["model"], buckets=FIRST_TOKEN_BUCKETS, registry=r),
                                    "orc_time_to_first_token_seconds", ["model"])
        self._token_gap = _Capped(Histogram("orc_inter_token_latency_seconds", "Between consecutive tokens of "
                                            "one generation.", ["model"], buckets=TOKEN_GAP_BUCKETS, registry=r),
                                  "orc_inter_token_latency_seconds", ["model"])
        self._duration = _Capped(Histogram("orc_request_duration_seconds", "From the request to its last token "
                                           "(end to end).", ["model"], buckets=REQUEST_BUCKETS, registry=r),
                                 "orc_request_duration_seconds", ["model"])
        self._runs = _Capped(Counter("orc_runs", "Runs this node coordinated to their end, by status.",
                                     ["status"], registry=r), "orc_runs_total", ["status"])
        self._runs_active = Gauge("orc_runs_active", "Runs this node coordinates now.", registry=r)
        self._agents = _Capped(Counter("orc_agents", "Agents of this node's runs that ended, by status "
                                       "(agents taken from a resumed run's journal are not counted).",
                                       ["status"], registry=r), "orc_agents_total", ["status"])
        self._retries = Counter("orc_agent_retries", "Agent attempts that failed and were tried again.", registry=r)
        self._placements = _Capped(Counter("orc_placements", "Generations the mesh placer bound, by node name.",
                                           ["node"], registry=r), "orc_placements_total", ["node"])
        self._failovers = _Capped(Counter("orc_failovers", "Generations moved off a node that failed them, by "
                                          "the node left.", ["node"], registry=r), "orc_failovers_total", ["node"])
        self._rpc_errors = _Capped(Counter("orc_mesh_rpc_errors", "Calls to peers that failed, by method and "
                                           "gRPC status.", ["method", "code"], registry=r),
                                   "orc_mesh_rpc_errors_total", ["method", "code"])
        self._rpc_rejected = _Capped(Counter("orc_mesh_rpc_rejected", "Calls from peers this node's mesh server "
                                             "refused before serving them, by reason.", ["reason"], registry=r),
                                     "orc_mesh_rpc_rejected_total", ["reason"])
        # Statuses known in advance start at 0, so a rate over them works from the first scrape.
        for status in RUN_STATUSES:
            self._runs.labels(status)
        for status in AGENT_STATUSES:
            self._agents.labels(status)
        r.register(RunningCollector(running))

    # ---- the HTTP face ----

    def request(self, endpoint: str, model: str, code: int) -> None:
        """One API request answered: `endpoint` one of ENDPOINTS, `model` a model id the mesh
        knows, an `ensemble/NAME` or "", `code` its HTTP status."""
        self._requests.labels(endpoint if endpoint in ENDPOINTS else OTHER, model, int(code)).inc()

    def generation(self, model: str, prompt_tokens: int, completion_tokens: int, first_token_s: float | None,
                   token_gaps_s: Sequence[float], total_s: float) -> None:
        """One generation the API served: its token counts, seconds to its first token (None if it
        wrote none), the seconds between its consecutive tokens, and its seconds end to end.
        Negative or non-finite numbers (a clock stepped back) are left out, never recorded."""
        if prompt_tokens > 0:
            self._prompt_tokens.labels(model).inc(prompt_tokens)
        if completion_tokens > 0:
            self._completion_tokens.labels(model).inc(completion_tokens)
        if first_token_s is not None and _usable(first_token_s):
            self._first_token.labels(model).observe(first_token_s)
        gaps = [gap for gap in token_gaps_s if _usable(gap)]
        if gaps:
            histogram = self._token_gap.labels(model)
            for gap in gaps:
                histogram.observe(gap)
        if _usable(total_s):
            self._duration.labels(model).observe(total_s)

    # ---- runs ----

    def run_event(self, event: RunProgress) -> None:
        """Count one event of a run this node coordinates (use `watched_run` around a whole stream)."""
        match event:
            case RunBegan():
                self._runs_active.inc()
            case RunFinished(result=result):
                self._runs.labels(result.status).inc()
                self._runs_active.dec()
            case AgentEnded(reused=True):
                pass  # ended in an earlier attempt of the run, and counted then
            case AgentEnded(record=record):
                self._agents.labels(record.status.value).inc()
            case AgentRetrying():
                self._retries.inc()
            case RunPlanned() | AgentBegan() | AgentPlacedOn() | AgentWorking() | TokenStreamed():
                pass
            case _:
                assert_never(event)

    async def watched_run(self, events: AsyncIterable[RunProgress]) -> AsyncIterator[RunProgress]:
        """`events`, each counted as it passes. A run whose stream ends, fails or is abandoned
        before its RunFinished (a client gone, a cancelled task) leaves `orc_runs_active` as it
        found it; the wrapped stream is closed with this one."""
        iterator = aiter(events)
        unfinished = 0
        try:
            async for event in iterator:
                self.run_event(event)
                if isinstance(event, RunBegan):
                    unfinished += 1
                elif isinstance(event, RunFinished):
                    unfinished -= 1
                yield event
        finally:
            if unfinished > 0:
                self._runs_active.dec(unfinished)
            close = getattr(iterator, "aclose", None)
            if close is not None:
                await close()

    # ---- the mesh (PlacementObserver, RpcObserver) ----

    def placed(self, node: str) -> None:
        self._placements.labels(node).inc()

    def failed_over(self, node: str) -> None:
        self._failovers.labels(node).inc()

    def rpc_failed(self, method: str, code: str) -> None:
        self._rpc_errors.labels(method, code).inc()

    def rpc_rejected(self, reason: str) -> None:
        self._rpc_rejected.labels(reason).inc()

    # ---- the scrape ----

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The `/metrics` body and its content type: the Prometheus text format (0.0.4), or
        OpenMetrics when the `Accept` header asks for it (as Prometheus itself does)."""
        encode, content_type = choose_encoder(accept or "")
        return encode(self.registry), content_type


def _usable(seconds: float) -> bool:
    return math.isfinite(seconds) and seconds >= 0


__all__ = ["ENDPOINTS", "FIRST_TOKEN_BUCKETS", "REQUEST_BUCKETS", "TOKEN_GAP_BUCKETS", "NodeMetrics"]
