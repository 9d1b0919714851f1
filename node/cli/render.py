"""Live progress of a run on stderr: which agent runs where, the watched agent's tokens, elapsed time."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import TextIO

from typing_extensions import assert_never

from orc.node.events import (
    AgentBegan,
    AgentEnded,
    AgentPlacedOn,
    AgentWorking,
    AgentRetrying,
    RunBegan,
    RunFinished,
    RunPlanned,
    RunProgress,
    TokenStreamed,
)
from orc.scheduler.run import AgentStatus
from orc.scheduler.values import thaw


@dataclass
class ProgressView:
    """Renders events as lines; streams the tokens of one agent at a time (the first to stream)."""

    out: TextIO = field(default_factory=lambda: sys.stderr)
    stream_tokens: bool = True
    watch: str | None = None
    _started: float | None = None
    _resumed: bool = False
    _streaming: str | None = None
    _mid_line: bool = False
    _colour: bool = False

    def __post_init__(self) -> None:
        self._colour = hasattr(self.out, "isatty") and self.out.isatty()

    def _style(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self._colour else text

    def _line(self, text: str) -> None:
        if self._mid_line:
            self.out.write("\n")
            self._mid_line = False
        self.out.write(text + "\n")
        self.out.flush()

    def _elapsed(self, at: float | None) -> str:
        if at is None or self._started is None:
            return ""
        return self._style(f"[{at - self._started:6.1f}s]", "2")

    def show(self, event: RunProgress) -> None:
        match event:
            case RunBegan(run_id=run_id, ensemble=ensemble, agents=agents, at=at, resumed=resumed):
                self._started, self._resumed = at, resumed
                verb = "resuming" if resumed else "running"
                self._line(self._style(f"orc: {verb} {ensemble} ({len(agents)} agents), run {run_id}", "1"))
            case RunPlanned():
                self._line(render_plan(event))
            case AgentPlacedOn(agent=agent, node_name=name, replaces=replaces):
                if replaces is not None:
                    self._line(f"  {self._style('↻', '33')} {agent} moved to {name} ({printable(replaces)})")
                else:
                    self._line(f"  {self._style('→', '36')} {agent} {self._style('on ' + name, '2')}")
            case AgentWorking():
                pass  # the line of its placement already said where it runs
            case AgentBegan(agent=agent, node_id=node, model=model, attempt=attempt, instances=instances):
                where = (f"on {node}" if node else "placing") + (f" · {model}" if model else "")
                extra = f" · attempt {attempt}" if attempt > 1 else ""
                fan = f" · fan-out ×{instances}" if instances is not None else ""
                self._line(f"  {self._style('▶', '36')} {agent} {self._style(where + extra + fan, '2')}")
            case TokenStreamed(agent=agent, text=text):
                if not self.stream_tokens:
                    return
                if self._streaming is None and (self.watch is None or agent == self.watch
                                                or agent.startswith(self.watch + "[")):
                    self._streaming = agent
                    self._line(self._style(f"  ┌ {agent}", "2"))
                    self.out.write("  │ ")
                    self._mid_line = True
                if agent == self._streaming:
                    if not self._mid_line:
                        self.out.write("  │ ")
                        self._mid_line = True
                    self.out.write(text.replace("\n", "\n  │ "))
                    self.out.flush()
            case AgentEnded(agent=agent, record=record, reused=reused):
                if agent == self._streaming:
                    self._streaming = None
                took = ""
                if record.started_at is not None and record.finished_at is not None:
                    took = f"{record.finished_at - record.started_at:.1f}s"
                tokens = record.usage.completion_tokens
                detail = " · ".join(x for x in (took, f"{tokens} tok" if tokens else "",
                                                 "from journal" if reused else "") if x)
                match record.status:
                    case AgentStatus.COMPLETED:
                        elapsed = "" if reused else self._elapsed(record.finished_at)
                        self._line(f"  {self._style('✓', '32')} {agent} {self._style(detail, '2')} {elapsed}".rstrip())
                    case AgentStatus.FAILED:
                        self._line(f"  {self._style('✗', '31')} {agent} failed: {record.error}")
                    case AgentStatus.SKIPPED:
                        self._line(f"  {self._style('↷', '33')} {agent} skipped: {record.error}")
                    case AgentStatus.PENDING | AgentStatus.RUNNING:
                        pass
                    case _:
                        assert_never(record.status)
            case AgentRetrying(agent=agent, error=error, attempt=attempt):
                self._line(f"  {self._style('↻', '33')} {agent} attempt {attempt} failed ({error}); retrying")
            case RunFinished(result=result):
                colour = {"completed": "32", "completed_with_errors": "33"}.get(result.status, "31")
                if self._resumed and self._started is not None:
                    took = f"{result.finished_at - self._started:.1f}s (resumed; the run first started " \
                           f"{result.finished_at - result.started_at:.0f}s ago)"
                else:
                    took = f"{result.finished_at - result.started_at:.1f}s"
                self._line(self._style(f"orc: {result.status} in {took}", colour))
            case _:
                assert_never(event)


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


def printable(text: str) -> str:
    """Text from another node, safe for a terminal: control characters (escape sequences) shown
    as `?`, one line."""
    return "".join(c if c.isprintable() else "?" for c in text.replace("\n", " "))


def render_plan(planned: RunPlanned) -> str:
    """`orc plan` / `--explain`: per agent, the chosen node, the other candidates, and the ruled-out ones."""
    names = {n.node_id: n.name for p in planned.agents for n in (*p.candidates, *p.rejected)}
    coordinator = names.get(planned.coordinator, planned.coordinator)
    lines = [f"placement for {planned.ensemble} (estimated finish from now; coordinator: {coordinator}):"]
    for plan in planned.agents:
        head = f"  {plan.agent}" + (f"  [{plan.model}]" if plan.model else f"  ({plan.kind})")
        lines.append(head)
        if plan.note:
            lines.append(f"      {plan.note}")
        for index, c in enumerate(plan.candidates):
            mark = "→" if index == 0 else " "
            parts = [f"wait {max(c.start_s - planned.at, 0.0):.1f}"]
            if c.load_s:
                parts.append(f"load {c.load_s:.1f}")
            parts += [f"prompt {c.prefill_s:.1f}", f"generate {c.decode_s:.1f}"]
            if c.network_s:
                parts.append(f"network {c.network_s * 1000:.0f} ms")
            flags = ", ".join(f for f in ("warm" if c.warm else "cold", "preferred" if c.preferred else "") if f)
            lines.append(f"    {mark} {c.name:<16} {c.finish_s - planned.at:7.1f}s  ({' + '.join(parts)}; {flags})")
        for r in plan.rejected:
            detail = printable(r.detail)
            why = detail if detail.startswith(r.reason.value) else f"{r.reason.value}: {detail}"
            lines.append(f"    ✗ {r.name:<16} {why}")
        if plan.kind == "llm" and not plan.candidates:
            lines.append("      no node can run it: the run would fail this agent")
    return "\n".join(lines)


def plan_json(planned: RunPlanned) -> dict:
    """The `orc plan --json` object (docs/cli.md)."""
    return {
        "ensemble": planned.ensemble,
        "coordinator": planned.coordinator,
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
            }
            for plan in planned.agents
        },
    }
