"""Live progress of a run on stderr, the deliverable on stdout, and `orc plan` / `--explain`.

`RunView` is the pure part: it follows a run's events and says what to print, as data. Two
shells print it: `LiveView` on a terminal (a rich live region with one line per active agent,
finished agents printed above it, the watched agent's tokens in a panel), and `PlainView` for a
pipe or a file (plain lines, no colour, no cursor movement).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import TextIO, Union

from rich import box
from rich.console import Console, ConsoleOptions, RenderResult
from rich.live import Live
from rich.panel import Panel
from rich.text import Text
from typing_extensions import assert_never

from orc.node.cli.phrasing import duration, plural
from orc.node.cli.terminal import TerminalFilter, is_terminal, one_line
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
from orc.scheduler.ensemble import EnsembleSpec
from orc.scheduler.primitives_view import agent_details, agent_headline, agent_json, budget_json, budget_text
from orc.scheduler.run import AgentStatus
from orc.scheduler.values import thaw

# What the view keeps of the watched agent's tokens, to print them whole when it ends. A peer
# can stream without end; past this only the tail is kept (the deliverable has all of it).
MAX_STREAM_CHARS = 256 * 1024
# Agents shown at once in the live region; more are summed up in one line, so a wide fan-out
# cannot push the region past the screen (a region taller than the screen cannot be redrawn).
MAX_ACTIVE_SHOWN = 12
LIVE_TAIL_CHARS = 4096  # enough for the panel's last lines at any terminal width


class Phase(Enum):
    """An agent that began but whose generation has not started (queued for a model, or not yet
    placed) is WAITING; one whose first token came, or whose node said it started, is WORKING."""

    WAITING = "waiting"
    WORKING = "working"


@dataclass(frozen=True)
class ActiveAgent:
    name: str
    phase: Phase
    began: float  # by the clock of this view
    node: str | None = None  # the node's name (its id until a placement names it)
    model: str | None = None
    tokens: int = 0
    notes: tuple[str, ...] = ()  # "attempt 2", "fan-out ×3"


@dataclass(frozen=True)
class Line:
    """A permanent line. `live_shows`: what it says is already on the live region's agent line,
    so only a plain view prints it."""

    text: Text
    live_shows: bool = False


@dataclass(frozen=True)
class Tokens:
    agent: str
    text: str


@dataclass(frozen=True)
class StreamClosed:
    """The streamed agent ended (or a resume took over its name): its stream is complete."""

    agent: str


Printed = Union[Line, Tokens, StreamClosed]


def _mark(symbol: str, style: str) -> Text:
    return Text(symbol, style=style)


@dataclass
class RunView:
    """What a run looks like from its events: `apply` returns what to print, and keeps the
    agents that are active (for a live region). Every text a model or a peer wrote (errors,
    node names, failover reasons) goes through `clean` before it is put in a line."""

    stream_tokens: bool = True
    watch: str | None = None
    clean: Callable[[str], str] = one_line
    active: dict[str, ActiveAgent] = field(default_factory=dict)
    streaming: str | None = None
    started: float | None = None  # the run's own clock (RunBegan.at), for elapsed times
    resumed: bool = False
    # Both tables grow with the run, not with what a peer sends: agents are the ensemble's (and
    # its fan-out instances), nodes are those the coordinator placed on, out of its capped peers.
    _node_names: dict[str, str] = field(default_factory=dict)

    def _wants_stream(self, agent: str) -> bool:
        if self.watch is None:
            return True
        return agent == self.watch or agent.startswith((self.watch + "[", self.watch + "/"))

    def _node(self, node_id: str | None) -> str | None:
        """The node's name as placements gave it (its id before), made clean."""
        return None if node_id is None else self.clean(self._node_names.get(node_id, node_id))

    def _end(self, agent: str) -> list[Printed]:
        """Forget `agent` and what runs under it (fan-out instances, nested agents)."""
        for name in [n for n in self.active if n == agent or n.startswith((agent + "[", agent + "/"))]:
            del self.active[name]
        if self.streaming is not None and (self.streaming == agent
                                           or self.streaming.startswith((agent + "[", agent + "/"))):
            closed, self.streaming = self.streaming, None
            return [StreamClosed(closed)]
        return []

    def apply(self, event: RunProgress, now: float) -> list[Printed]:
        match event:
            case RunBegan(run_id=run_id, ensemble=ensemble, agents=agents, at=at, resumed=resumed):
                self.started, self.resumed = at, resumed
                verb = "resuming" if resumed else "running"
                return [Line(Text(f"orc: {verb} {ensemble} ({plural(len(agents), 'agent')}), run {run_id}",
                                  style="bold"))]
            case RunPlanned():
                return [Line(Text(line)) for line in render_plan(event, self.clean).splitlines()]
            case AgentBegan(agent=agent, node_id=node, model=model, attempt=attempt, instances=instances):
                notes = tuple(n for n in (f"attempt {attempt}" if attempt > 1 else "",
                                          f"fan-out ×{instances}" if instances is not None else "") if n)
                # A script or a composite agent (no model) starts at once; a generation waits
                # for its node's queue until AgentWorking or its first token says otherwise.
                phase = Phase.WAITING if model is not None else Phase.WORKING
                self.active[agent] = ActiveAgent(agent, phase, now, self._node(node), model, notes=notes)
                where = (f"on {self._node(node)}" if node else "placing") + \
                    (f" · {self.clean(model)}" if model else "")
                return [Line(Text.assemble("  ", _mark("▶", "cyan"), f" {agent} ",
                                           (" · ".join((where, *notes)), "dim")), live_shows=True)]
            case AgentPlacedOn(agent=agent, node_id=node_id, node_name=name, replaces=replaces):
                self._node_names[node_id] = name
                name = self.clean(name)
                current = self.active.get(agent)
                if current is None:  # a fan-out instance, or a placement after a retry
                    current = ActiveAgent(agent, Phase.WAITING, now)
                self.active[agent] = replace(current, node=name, phase=Phase.WAITING if replaces else current.phase)
                if replaces is not None:
                    return [Line(Text.assemble("  ", _mark("↻", "yellow"),
                                               f" {agent} moved to {name} ({self.clean(replaces)})"))]
                return [Line(Text.assemble("  ", _mark("→", "cyan"), f" {agent} ", (f"on {name}", "dim")),
                             live_shows=True)]
            case AgentWorking(agent=agent, node_id=node_id):
                current = self.active.get(agent) or ActiveAgent(agent, Phase.WORKING, now)
                self.active[agent] = replace(current, phase=Phase.WORKING,
                                             node=current.node or self._node(node_id))
                return []
            case TokenStreamed(agent=agent, text=text):
                current = self.active.get(agent)
                if current is not None:
                    self.active[agent] = replace(current, phase=Phase.WORKING, tokens=current.tokens + 1)
                if not self.stream_tokens:
                    return []
                if self.streaming is None and self._wants_stream(agent):
                    self.streaming = agent
                return [Tokens(agent, text)] if agent == self.streaming else []
            case AgentEnded(agent=agent, record=record, reused=reused):
                printed = self._end(agent)
                node = self._node(record.node_id) or ""
                took = duration(record.finished_at - record.started_at) \
                    if record.started_at is not None and record.finished_at is not None else ""
                tokens = record.usage.completion_tokens
                detail = " · ".join(x for x in (took, f"{tokens} tok" if tokens else "",
                                                 "from journal" if reused else node) if x)
                match record.status:
                    case AgentStatus.COMPLETED:
                        printed.append(Line(Text.assemble("  ", _mark("✓", "green"), f" {agent} ", (detail, "dim"))))
                    case AgentStatus.FAILED:
                        printed.append(Line(Text.assemble("  ", _mark("✗", "red"), f" {agent} failed: ",
                                                          self.clean(record.error or "unknown error"),
                                                          (f"  {detail}" if detail else "", "dim"))))
                    case AgentStatus.SKIPPED:
                        printed.append(Line(Text.assemble("  ", _mark("↷", "yellow"), f" {agent} skipped: ",
                                                          self.clean(record.error or ""))))
                    case AgentStatus.PENDING | AgentStatus.RUNNING:
                        pass
                    case _:
                        assert_never(record.status)
                return printed
            case AgentRetrying(agent=agent, error=error, attempt=attempt):
                printed = self._end(agent)
                printed.append(Line(Text.assemble("  ", _mark("↻", "yellow"),
                                                  f" {agent} attempt {attempt} failed ({self.clean(error)}); retrying")))
                return printed
            case RunFinished(result=result):
                printed = self._end(self.streaming) if self.streaming is not None else []
                self.active.clear()
                style = {"completed": "green", "completed_with_errors": "yellow"}.get(result.status, "red")
                if self.resumed and self.started is not None:
                    took = (f"{duration(result.finished_at - self.started)} (resumed; the run first started "
                            f"{duration(result.finished_at - result.started_at)} before)")
                else:
                    took = duration(result.finished_at - result.started_at)
                stopped = f" ({self.clean(result.reason)})" if result.reason else ""
                printed.append(Line(Text(f"orc: {result.status} in {took}{stopped}", style=style)))
                return printed
            case _:
                assert_never(event)


# ---------------------------------------------------------------- plain lines (pipes, files)

class PlainView:
    """Progress as plain lines for a pipe or a file: no colour, no cursor movement, text as
    generated. The streamed agent's tokens go in a box (`┌ name`, `│ ...`, `└`) that is closed
    before any other line, so no other agent's line ever lands inside it."""

    def __init__(self, out: TextIO | None = None, *, stream_tokens: bool = False, watch: str | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.out = out if out is not None else sys.stderr
        # A terminal that cannot take a live region (TERM=dumb) still gets safe text.
        self._safe = TerminalFilter() if is_terminal(self.out) else None
        self.run = RunView(stream_tokens=stream_tokens, watch=watch,
                           clean=one_line if self._safe is not None else lambda text: text)
        self._clock = clock
        self._box: str | None = None  # the agent whose stream box is open
        self._mid_line = False

    def _close_box(self) -> None:
        if self._box is not None:
            self.out.write(("\n" if self._mid_line else "") + "  └\n")
            self._box, self._mid_line = None, False

    def show(self, event: RunProgress) -> None:
        for printed in self.run.apply(event, self._clock()):
            match printed:
                case Line(text=text):
                    self._close_box()
                    self.out.write(text.plain + "\n")
                case Tokens(agent=agent, text=text):
                    if self._safe is not None:
                        text = self._safe.feed(text)
                    if self._box != agent:
                        self._close_box()
                        self.out.write(f"  ┌ {agent}\n")
                        self._box = agent
                    if not self._mid_line:
                        self.out.write("  │ ")
                    body, newline, rest = text.rpartition("\n")
                    if newline:
                        self.out.write(body.replace("\n", "\n  │ ") + "\n" + ("  │ " + rest if rest else ""))
                        self._mid_line = bool(rest)
                    else:
                        self.out.write(rest)
                        self._mid_line = True
                case StreamClosed():
                    self._close_box()
                case _:
                    assert_never(printed)
        self.out.flush()

    def close(self) -> None:
        self._close_box()
        self.out.flush()


# ---------------------------------------------------------------- the live view (terminals)

@dataclass(frozen=True)
class _Stream:
    agent: str
    text: str  # made safe for the terminal


@dataclass(frozen=True)
class LiveRegion:
    """What the live region shows at one moment: immutable, so rich's refresh thread can draw
    it while the next event is being applied."""

    active: tuple[ActiveAgent, ...]
    stream: _Stream | None
    clock: Callable[[], float]

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        now = self.clock()
        if self.stream is not None and self.stream.text:
            room = max(3, min(12, (options.height or console.height) - min(len(self.active), MAX_ACTIVE_SHOWN) - 4))
            inner = max(options.max_width - 4, 10)  # the panel's two borders and its padding
            lines = Text(self.stream.text.rstrip("\n")).wrap(console, inner)
            tail = Text("\n").join(lines[-room:])
            yield Panel(tail, title=Text(self.stream.agent), title_align="left", box=box.ROUNDED,
                        border_style="dim", expand=True)
        for agent in self.active[:MAX_ACTIVE_SHOWN]:
            yield agent_line(agent, now)
        if len(self.active) > MAX_ACTIVE_SHOWN:
            yield Text(f"  … and {plural(len(self.active) - MAX_ACTIVE_SHOWN, 'more agent')}", style="dim")


def agent_line(agent: ActiveAgent, now: float) -> Text:
    """The live region's line for one active agent: waiting for a model on NODE, or working on
    NODE · tokens · elapsed."""
    where = f" on {agent.node}" if agent.node else ""
    elapsed = duration(now - agent.began)
    match agent.phase:
        case Phase.WAITING:
            what = f"waiting for a model{where}" if agent.node else "waiting for a node"
            line = Text.assemble("  ", ("…", "yellow"), f" {agent.name} ", (" · ".join((what, *agent.notes, elapsed)),
                                                                              "dim"))
        case Phase.WORKING:
            parts = [f"working{where}", *agent.notes, f"{agent.tokens} tok" if agent.tokens else "", elapsed]
            line = Text.assemble("  ", ("●", "cyan"), f" {agent.name} ", (" · ".join(p for p in parts if p), "dim"))
        case _:
            assert_never(agent.phase)
    # One row per agent, whatever the width: a wrapped row would make the region jump.
    line.no_wrap, line.overflow = True, "ellipsis"
    return line


class LiveView:
    """Progress on a terminal: a live region of the active agents (and the streamed agent's
    tokens), redrawn in place; finished agents and everything else printed above it for good."""

    def __init__(self, console: Console, *, stream_tokens: bool = True, watch: str | None = None,
                 clock: Callable[[], float] = time.time, auto_refresh: bool = True) -> None:
        self.console = console
        self.run = RunView(stream_tokens=stream_tokens, watch=watch, clean=one_line)
        self._clock = clock
        self._auto_refresh = auto_refresh
        self._stream: _Stream | None = None
        self._filter = TerminalFilter()
        self._full: list[str] = []  # the streamed agent's text, safe for the terminal
        self._full_chars = 0
        self._live = Live(self._region(), console=console, auto_refresh=auto_refresh, refresh_per_second=8,
                          transient=True, redirect_stdout=False, redirect_stderr=False)
        self._live.start()

    def _region(self) -> LiveRegion:
        return LiveRegion(tuple(self.run.active.values()), self._stream, self._clock)

    def _keep(self, text: str) -> None:
        self._full.append(text)
        self._full_chars += len(text)
        if self._full_chars > MAX_STREAM_CHARS:
            joined = "".join(self._full)[-MAX_STREAM_CHARS:]
            self._full, self._full_chars = [joined], len(joined)

    def show(self, event: RunProgress) -> None:
        above: list[Text | Panel] = []  # printed for good, above the live region
        for printed in self.run.apply(event, self._clock()):
            match printed:
                case Line(text=text, live_shows=live_shows):
                    if not live_shows:
                        above.append(text)
                case Tokens(agent=agent, text=text):
                    if self._stream is None or self._stream.agent != agent:
                        self._filter, self._full, self._full_chars = TerminalFilter(), [], 0
                    safe = self._filter.feed(text)
                    self._keep(safe)
                    # The region shows only the last lines: it keeps a tail, not the whole text.
                    tail = self._stream.text if self._stream is not None and self._stream.agent == agent else ""
                    self._stream = _Stream(agent, (tail + safe)[-LIVE_TAIL_CHARS:])
                case StreamClosed(agent=agent):
                    if self._full_chars:
                        above.append(Panel(Text("".join(self._full).rstrip("\n")), title=Text(agent),
                                           title_align="left", box=box.ROUNDED, border_style="dim"))
                    self._stream, self._full, self._full_chars = None, [], 0
                case _:
                    assert_never(printed)
        # The region changes first: each print redraws it below what it printed, and it must
        # not show an agent that the printed line just said has finished.
        # With auto refresh rich redraws a few times a second; a redraw per token would cost
        # more than the tokens.
        self._live.update(self._region(), refresh=not self._auto_refresh and not above)
        for item in above:
            self.console.print(item, soft_wrap=False, overflow="fold", markup=False, highlight=False)

    def close(self) -> None:
        self._live.update(self._region(), refresh=True)
        self._live.stop()


ProgressView = Union[LiveView, PlainView]


def progress_view(out: TextIO, *, watch: str | None, terminal: bool) -> ProgressView:
    """A live view for a terminal, plain lines for anything else. Tokens stream on a terminal,
    and on a pipe only when `--watch` asked for them."""
    if terminal and os.environ.get("TERM") != "dumb":  # a dumb terminal cannot move its cursor
        return LiveView(Console(file=out, highlight=False, markup=False, soft_wrap=False), watch=watch)
    return PlainView(out, stream_tokens=watch is not None, watch=watch)


# ---------------------------------------------------------------- deliverable and plan

def render_deliverable(value: object) -> str:
    """The deliverable as text for stdout: strings as they are, several sinks under headings."""
    data = thaw(value)
    if isinstance(data, str):
        return data
    if isinstance(data, dict) and data and all(isinstance(v, str) for v in data.values()):
        return "\n\n".join(f"## {name}\n{text}" for name, text in data.items())
    if data is None:
        return ""
    return json.dumps(data, indent=2, ensure_ascii=False, default=str)


def render_plan(planned: RunPlanned, clean: Callable[[str], str] = one_line, spec: EnsembleSpec | None = None) -> str:
    """`orc plan` / `--explain`: per agent, the chosen node, the other candidates, and the
    ruled-out ones. Node names and reasons come from peers: each goes through `clean`, one line.
    With the ensemble's `spec`, also each vote's samples, each cascade's levels and the budgets."""
    names = {n.node_id: n.name for p in planned.agents for n in (*p.candidates, *p.rejected)}
    coordinator = clean(names.get(planned.coordinator, planned.coordinator))
    lines = [f"placement for {planned.ensemble} (estimated finish from now; coordinator: {coordinator}):"]
    agents = {a.name: a for a in spec.agents} if spec is not None else {}
    for plan in planned.agents:
        agent = agents.get(plan.agent)
        headline = agent_headline(agent) if agent is not None else None
        head = f"  {plan.agent}" + (f" {clean(headline)}" if headline else "")
        head += f"  [{clean(plan.model)}]" if plan.model else f"  ({plan.kind})"
        lines.append(head)
        lines += [f"      {clean(line)}" for line in (agent_details(agent) if agent is not None else ())]
        if plan.note:
            lines.append(f"      {clean(plan.note)}")
        for index, c in enumerate(plan.candidates):
            mark = "→" if index == 0 else " "
            parts = [f"wait {max(c.start_s - planned.at, 0.0):.1f}"]
            if c.load_s:
                parts.append(f"load {c.load_s:.1f}")
            parts += [f"prompt {c.prefill_s:.1f}", f"generate {c.decode_s:.1f}"]
            if c.network_s:
                parts.append(f"network {c.network_s * 1000:.0f} ms")
            flags = ", ".join(f for f in ("warm" if c.warm else "cold", "preferred" if c.preferred else "") if f)
            lines.append(f"    {mark} {clean(c.name):<16} {c.finish_s - planned.at:7.1f}s  "
                         f"({' + '.join(parts)}; {flags})")
        for r in plan.rejected:
            detail = clean(r.detail)
            why = detail if detail.startswith(r.reason.value) else f"{r.reason.value}: {detail}"
            lines.append(f"    ✗ {clean(r.name):<16} {why}")
        if plan.kind == "llm" and not plan.candidates:
            lines.append("      no node can run it: the run would fail this agent")
    if spec is not None and spec.budget is not None:
        lines.append(f"the whole run: {budget_text(spec.budget)}")
    return "\n".join(lines)


def plan_json(planned: RunPlanned, spec: EnsembleSpec | None = None) -> dict:
    """The `orc plan --json` object (docs/cli.md); with the ensemble's `spec`, each agent's
    `vote`, `cascade` and `budget` and the run's `budget` too."""
    agents = {a.name: a for a in spec.agents} if spec is not None else {}
    extra = {"budget": budget_json(spec.budget)} if spec is not None else {}
    return {
        "ensemble": planned.ensemble,
        "coordinator": planned.coordinator,
        **extra,
        "agents": {
            plan.agent: {
                "kind": plan.kind,
                "model": plan.model,
                "choice": plan.candidates[0].node_id if plan.candidates else
                (planned.coordinator if plan.kind != "llm" else None),
                "candidates": [{"node_id": c.node_id, "name": c.name,
                                "finish_s": round(c.finish_s - planned.at, 3),
                                "wait_s": round(max(c.start_s - planned.at, 0.0), 3), "load_s": round(c.load_s, 3),
                                "prefill_s": round(c.prefill_s, 3), "decode_s": round(c.decode_s, 3),
                                "network_s": round(c.network_s, 4), "warm": c.warm, "preferred": c.preferred}
                               for c in plan.candidates],
                "rejected": [{"node_id": r.node_id, "name": r.name, "reason": r.reason.value, "detail": r.detail}
                             for r in plan.rejected],
                "note": plan.note,
                **(agent_json(agents[plan.agent]) if plan.agent in agents else {}),
            }
            for plan in planned.agents
        },
    }
