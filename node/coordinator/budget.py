"""Budgets: what a run, and each agent with a `budget:`, has spent of its tokens and seconds,
and what is left for the next generation.

One `Meter` per top-level run, carried by every `RunContext` of it (nested runs included, so
they count toward the enclosing run). A budget is a *scope*: the run's (key `RUN`) or an
agent's (its shown name, "agent" or "parent/child"). A generation counts toward every scope
over it (the run, the agents enclosing its nested run, its own agent).

Tokens are prompt + completion, as the nodes report them when a generation finishes; a
generation that never finishes (cancelled, failed) counts the chunks it streamed. Before a
generation starts it takes a `Lease`: its max_tokens clamped to what is left in the tightest
scope over it, less what generations already running have claimed, so running generations
together never decode past a budget (prompts, known only once evaluated, can). Nothing left:
`BudgetSpent`, and the generation does not start. Seconds count from when a scope opened: the
run's when the run (or this resume of it) began, an agent's at its first start.

When a scope runs out (`Meter.ran_out`), the work under it stops: at once when its time is up;
when its tokens are spent, once the generations running under it (each within its lease) end,
so an agent whose generation finished keeps its result.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from orc.node.protocol.events import BudgetReport
from orc.scheduler.ensemble import Budget
from orc.scheduler.journal import JournalContents
from orc.scheduler.run import AgentRecord, AgentSucceeded, PartDone, RunState, Usage

RUN = ""  # the run's own scope; agents' scopes are their shown names, never empty
PREFIX = "budget: "  # every message naming a budget starts so: an agent's error says a budget stopped it


class BudgetSpent(Exception):
    """A budget over a generation or an agent is spent; the message names it."""


def tokens(usage: Usage) -> int:
    return usage.prompt_tokens + usage.completion_tokens


class _Scope:
    def __init__(self, key: str, budget: Budget, opened: float, spent: Usage) -> None:
        self.key = key
        self.budget = budget
        self.opened = opened
        self.spent = spent
        self.reserved = 0  # tokens claimed by generations running now
        self.leases = 0  # generations running now under it
        self.exhausted: str | None = None
        self.timed_out = False
        self.stop = asyncio.Event()  # set when the work under it is to be cancelled (`Meter.ran_out`)

    @property
    def deadline(self) -> float | None:
        return None if self.budget.max_seconds is None else self.opened + self.budget.max_seconds

    def whose(self) -> str:
        return "the run's" if self.key == RUN else f"agent '{self.key}''s"

    def check(self, now: float) -> str | None:
        """The message naming this budget if it ran out by `now` (kept once said)."""
        if self.exhausted is None:
            cap, used = self.budget.max_tokens, tokens(self.spent)
            if cap is not None and used >= cap:
                self.exhausted = f"{PREFIX}{self.whose()} max_tokens {cap} is spent ({used} used)"
            elif self.deadline is not None and now >= self.deadline:
                self.timed_out = True
                self.exhausted = (f"{PREFIX}{self.whose()} max_seconds {self.budget.max_seconds:g} ran out "
                                  f"({now - self.opened:.1f} s used)")
        # Out of time, everything under it stops at once. Out of tokens, the generations running
        # were each clamped to what was left when they started: they finish (and their agents
        # keep what they paid for); the rest of the work stops when the last one has.
        if self.exhausted is not None and (self.timed_out or self.leases == 0):
            self.stop.set()
        return self.exhausted

    def headroom(self) -> int | None:
        cap = self.budget.max_tokens
        return None if cap is None else cap - tokens(self.spent) - self.reserved


class Meter:
    """Tokens and seconds spent by one run, against its budget and its agents' budgets.

    `earlier`: what the run spent before this resume of it (`spent_before`). `clock`: wall-clock
    seconds (the engine's), for deadlines.
    """

    def __init__(self, budget: Budget | None, clock: Callable[[], float], started: float,
                 earlier: Usage = Usage()) -> None:
        self._clock = clock
        self._scopes: dict[str, _Scope] = {}
        self._total = earlier
        self._released = asyncio.Event()  # replaced on each release: set wakes the leases waiting
        if budget is not None:
            self._scopes[RUN] = _Scope(RUN, budget, started, earlier)

    @property
    def total(self) -> Usage:
        """Everything the run spent, this resume and before it."""
        return self._total

    def open(self, key: str, budget: Budget | None, earlier: Usage = Usage()) -> None:
        """Start counting agent `key`'s budget (its first start; later starts change nothing)."""
        if budget is not None and key not in self._scopes:
            self._scopes[key] = _Scope(key, budget, self._clock(), earlier)

    def exhausted(self, keys: Iterable[str] = (RUN,)) -> str | None:
        """The message naming the first budget among `keys` (scopes over some work) that ran out."""
        now = self._clock()
        for scope in self._over(keys):
            message = scope.check(now)
            if message is not None:
                return message
        return None

    def report(self, key: str = RUN) -> BudgetReport | None:
        """Scope `key`'s budget and what it used, or None when it has none."""
        scope = self._scopes.get(key)
        if scope is None:
            return None
        now = self._clock()
        scope.check(now)
        return BudgetReport(scope.budget.max_tokens, scope.budget.max_seconds, tokens(scope.spent),
                            max(0.0, now - scope.opened), scope.exhausted)

    async def ran_out(self, key: str = RUN) -> str:
        """Wait until the work under scope `key` is to be stopped: its time is up, or its tokens
        are spent and no generation under it still runs; the message naming the budget. A scope
        without a budget never runs out."""
        scope = self._scopes.get(key)
        if scope is None:
            await asyncio.Event().wait()  # forever: only cancellation ends it
        assert scope is not None
        while True:
            message = scope.check(self._clock())
            if message is not None and scope.stop.is_set():
                return message
            deadline = scope.deadline
            timeout = None if deadline is None else max(0.0, deadline - self._clock())
            try:
                await asyncio.wait_for(scope.stop.wait(), timeout)
            except asyncio.TimeoutError:
                pass

    async def lease(self, keys: Iterable[str], wanted: int) -> "Lease":
        """A claim on up to `wanted` tokens for one generation under scopes `keys`.

        Waits while generations already running hold what is left; BudgetSpent once a budget
        over it is spent or out of time.
        """
        over = self._over(keys)
        while True:
            message = self.exhausted(s.key for s in over)
            if message is not None:
                raise BudgetSpent(message)
            rooms = [room for room in (s.headroom() for s in over) if room is not None]
            grant = min([wanted, *rooms])
            if grant > 0:
                for scope in over:
                    scope.leases += 1
                    scope.reserved += grant if scope.budget.max_tokens is not None else 0
                return Lease(self, over, grant)
            # Running generations claimed the rest: what they leave is known when they end.
            await self._released.wait()

    def _charge(self, over: list[_Scope], usage: Usage) -> None:
        self._total = self._total + usage
        now = self._clock()
        for scope in over:
            scope.spent = scope.spent + usage
            scope.check(now)

    def _release(self, over: list[_Scope], grant: int) -> None:
        # Synchronous on purpose: between a generation's end and its agent posting the result
        # nothing else runs, so stopping the work (`ran_out`) cannot cut off a finished agent.
        now = self._clock()
        for scope in over:
            scope.leases -= 1
            scope.reserved -= grant if scope.budget.max_tokens is not None else 0
            scope.check(now)
        released, self._released = self._released, asyncio.Event()
        released.set()

    def _over(self, keys: Iterable[str]) -> list[_Scope]:
        return [self._scopes[k] for k in dict.fromkeys(keys) if k in self._scopes]


class Lease:
    """One generation's claim, from `Meter.lease`: `max_tokens` to decode at most. Report its
    streamed chunks and its final usage, and `close` it whatever happens."""

    def __init__(self, meter: Meter, over: list[_Scope], max_tokens: int) -> None:
        self.max_tokens = max_tokens
        self._meter = meter
        self._over = over
        self._streamed = 0
        self._usage: Usage | None = None
        self._closed = False

    def streamed(self, chunks: int = 1) -> None:
        """Chunks streamed so far (a chunk is about a token): what an unfinished generation costs."""
        self._streamed += chunks

    def done(self, usage: Usage) -> None:
        """The generation finished; its node reported `usage`."""
        self._usage = usage

    def close(self) -> None:
        """Count what the generation spent (what it streamed if it never finished) and give back
        the claim. Idempotent."""
        if not self._closed:
            self._closed = True
            self._meter._charge(self._over, self._usage if self._usage is not None else Usage(0, self._streamed))
            self._meter._release(self._over, self.max_tokens)


def spent_before(contents: JournalContents) -> Usage:
    """Tokens a journaled run provably spent: the last "end" record's total when it has one,
    else (or if more) each agent's journaled usage, the larger of its results and its parts."""
    results: dict[str, Usage] = {}
    parts: dict[str, Usage] = {}
    for event in contents.events:
        match event:
            case AgentSucceeded(agent=agent, usage=usage):
                results[agent] = results.get(agent, Usage()) + usage
            case PartDone(agent=agent, result=result):
                parts[agent] = parts.get(agent, Usage()) + result.usage
    counted = Usage()
    for agent in results.keys() | parts.keys():
        done, pieces = results.get(agent, Usage()), parts.get(agent, Usage())
        counted = counted + (done if tokens(done) >= tokens(pieces) else pieces)
    ended = [end.usage for end in contents.ends if end.usage is not None]
    if ended and tokens(ended[-1]) > tokens(counted):
        return ended[-1]
    return counted


def run_budget_report(contents: JournalContents, state: RunState) -> BudgetReport | None:
    """The run's budget as its journal shows it (seconds: from the run's start to its end, or
    to its start when it has not ended); None when the ensemble has none."""
    budget = state.spec.budget
    if budget is None:
        return None
    end = contents.finished
    seconds = (end.at if end else contents.header.started_at) - contents.header.started_at
    return BudgetReport(budget.max_tokens, budget.max_seconds, tokens(spent_before(contents)), seconds,
                        end.reason if end and end.reason and end.reason.startswith(PREFIX + "the run's") else None)


def agent_budget_report(budget: Budget, record: AgentRecord) -> BudgetReport:
    """An agent's budget as its journaled record shows it."""
    seconds = record.finished_at - record.started_at if record.finished_at and record.started_at else 0.0
    mine = record.error if record.error and record.error.startswith(PREFIX + "agent") else None
    return BudgetReport(budget.max_tokens, budget.max_seconds, tokens(record.usage), seconds, mine)
