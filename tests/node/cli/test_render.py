"""What `orc plan`, `--explain` and the progress views print, from events built by hand.

The live view is checked on the screen it leaves: rich writes to a recording console as if to
a terminal, and a terminal emulator (pyte) replays those bytes, cursor movements included."""

from __future__ import annotations

import io
import json

import pyte
from rich.console import Console

from orc.node.cli.render import LiveView, PlainView, plan_json, render_plan
from orc.node.protocol.events import (
    AgentBegan,
    AgentEnded,
    AgentPlacedOn,
    AgentPlan,
    AgentRetrying,
    AgentWorking,
    RunBegan,
    RunFinished,
    RunPlanned,
    RunResult,
    TokenStreamed,
)
from orc.scheduler.placement import Estimate, Exclusion, Rejection
from orc.scheduler.run import AgentRecord, AgentStatus, RunId, Usage

AT = 1_700_000_000.0  # the plan's `now`: every time shown is relative to it
MAC, PI, LAPTOP, NAS = "m" * 20, "p" * 20, "l" * 20, "n" * 20


def _estimate(node_id: str, name: str, *, wait: float, load: float, prefill: float, decode: float,
              network: float, warm: bool, preferred: bool = False) -> Estimate:
    return Estimate(node_id, name, AT + wait, load, prefill, decode, network, warm, preferred, "llama_cpp")


# The coordinator (MAC) finishes first: warm, nothing queued. PI is cold, busy for 2 s, and preferred.
ON_MAC = _estimate(MAC, "mac-mini", wait=0.0, load=0.0, prefill=0.5, decode=3.0, network=0.0, warm=True)
ON_PI = _estimate(PI, "pi", wait=2.0, load=1.0, prefill=1.5, decode=6.0, network=0.012, warm=False, preferred=True)
LOCAL_ONLY = Rejection(LAPTOP, "laptop", Exclusion.LOCAL_ONLY, "local_only: the agent stays on the coordinator's device")
NO_MODEL = Rejection(NAS, "nas", Exclusion.NO_MODEL, "no model 'llama3:70b'")

PLANNED = RunPlanned("review", MAC, AT, (
    AgentPlan("summarize", "llm", "smollm2-135m", (ON_MAC, ON_PI), (LOCAL_ONLY,)),
    AgentPlan("split", "script", None, note="runs on this node: scripts never leave the coordinator"),
    AgentPlan("judge", "llm", "llama3:70b", (), (NO_MODEL, Rejection(PI, "pi", Exclusion.DEAD, "dead (no beat from it)"))),
))


def _lines(text: str, containing: str) -> list[str]:
    return [line for line in text.splitlines() if containing in line]


# ---- render_plan ---------------------------------------------------------------------------------

def test_the_plan_names_the_coordinator_by_its_name():
    text = render_plan(PLANNED)
    header = text.splitlines()[0]
    assert header == "placement for review (estimated finish from now; coordinator: mac-mini):"
    assert MAC not in text


def test_a_coordinator_known_only_from_a_rejection_is_still_named():
    planned = RunPlanned("e", LAPTOP, AT, (AgentPlan("a", "llm", "m", (ON_PI,), (LOCAL_ONLY,)),))
    assert "coordinator: laptop)" in render_plan(planned).splitlines()[0]
    unknown = RunPlanned("e", "q" * 20, AT, (AgentPlan("a", "llm", "m", (ON_PI,)),))
    assert f"coordinator: {'q' * 20})" in render_plan(unknown)  # no name anywhere: the id, not nothing


def test_each_exclusion_is_said_once():
    text = render_plan(PLANNED)
    (laptop,) = _lines(text, "✗ laptop")
    assert laptop.split("laptop", 1)[1].strip() == "local_only: the agent stays on the coordinator's device"
    assert "local_only: local_only" not in text and text.count("local_only") == 1
    # A detail that does not start with its reason gets the reason in front, once.
    (nas,) = _lines(text, "✗ nas")
    assert nas.split("nas", 1)[1].strip() == "no such model: no model 'llama3:70b'"
    (dead,) = _lines(text, "✗ pi")
    assert dead.split("pi", 1)[1].strip() == "dead (no beat from it)"


def test_an_llm_agent_no_node_can_run_is_called_out_and_nothing_else_is():
    text = render_plan(PLANNED)
    (line,) = _lines(text, "no node can run it")
    lines = text.splitlines()
    judge = lines.index("  judge  [llama3:70b]")
    assert lines.index(line) > judge  # under the agent it is about
    assert lines[lines.index("  split  (script)") + 1].strip() == "runs on this node: scripts never leave the coordinator"


def test_times_are_relative_to_the_plan_and_the_choice_is_marked():
    text = render_plan(PLANNED)
    (mac,) = _lines(text, "mac-mini ")
    (pi,) = [line for line in _lines(text, " pi ") if "✗" not in line]  # "✗ pi" is judge's dead node
    assert mac.lstrip().startswith("→ mac-mini") and not pi.lstrip().startswith("→")
    assert "3.5s" in mac and "(wait 0.0 + prompt 0.5 + generate 3.0; warm)" in mac
    assert "load" not in mac and "network" not in mac  # nothing to load, no hop: not shown
    # 2 s queued + 1 load + 1.5 prompt + 6 generate + 12 ms on the network = 10.512 s from `at`.
    assert "10.5s" in pi and "(wait 2.0 + load 1.0 + prompt 1.5 + generate 6.0 + network 12 ms; cold, preferred)" in pi
    assert "1700000" not in text  # no absolute clock readings


def test_a_start_in_the_past_is_no_wait():
    early = _estimate(PI, "pi", wait=-5.0, load=0.0, prefill=1.0, decode=1.0, network=0.0, warm=True)
    text = render_plan(RunPlanned("e", PI, AT, (AgentPlan("a", "llm", "m", (early,)),)))
    assert "wait 0.0" in text and "wait -" not in text


# ---- plan_json -----------------------------------------------------------------------------------

def test_json_choice_is_the_best_candidate_the_coordinator_or_nothing():
    data = plan_json(PLANNED)
    assert json.loads(json.dumps(data)) == data  # plain JSON
    assert data["ensemble"] == "review" and data["coordinator"] == MAC
    agents = data["agents"]
    assert list(agents) == ["summarize", "split", "judge"]
    assert agents["summarize"]["choice"] == MAC
    assert agents["split"]["choice"] == MAC and agents["split"]["kind"] == "script" and agents["split"]["candidates"] == []
    assert agents["judge"]["choice"] is None and agents["judge"]["model"] == "llama3:70b"


def test_json_choice_follows_the_candidate_order_not_the_coordinator():
    planned = RunPlanned("e", MAC, AT, (AgentPlan("a", "llm", "m", (ON_PI, ON_MAC)),
                                       AgentPlan("sub", "ensemble", None, note="placed when it starts")))
    agents = plan_json(planned)["agents"]
    assert agents["a"]["choice"] == PI and agents["sub"]["choice"] == MAC


def test_json_estimates_are_relative_and_rejections_carry_their_reason():
    agents = plan_json(PLANNED)["agents"]
    mac, pi = agents["summarize"]["candidates"]
    assert pi == {"node_id": PI, "name": "pi", "finish_s": 10.512, "wait_s": 2.0, "load_s": 1.0, "prefill_s": 1.5,
                  "decode_s": 6.0, "network_s": 0.012, "warm": False, "preferred": True}
    assert mac["finish_s"] == 3.5 and mac["wait_s"] == 0.0
    assert agents["summarize"]["rejected"] == [{"node_id": LAPTOP, "name": "laptop", "reason": "local_only",
                                                "detail": LOCAL_ONLY.detail}]
    assert [r["reason"] for r in agents["judge"]["rejected"]] == ["no such model", "dead"]
    assert agents["split"]["note"] == "runs on this node: scripts never leave the coordinator"
    assert agents["summarize"]["note"] is None


# ---- ProgressView --------------------------------------------------------------------------------

def _shown(*events, stream_tokens: bool = False, watch: str | None = None) -> list[str]:
    out = io.StringIO()  # not a terminal: no colour codes
    view = PlainView(out, stream_tokens=stream_tokens, watch=watch, clock=lambda: AT)
    for event in events:
        view.show(event)
    view.close()
    return out.getvalue().splitlines()


def test_a_placement_says_where_the_agent_runs():
    assert _shown(AgentPlacedOn("summarize", PI, "pi")) == ["  → summarize on pi"]


def test_a_failover_says_where_it_moved_and_why():
    (line,) = _shown(AgentPlacedOn("fan[2]", MAC, "mac-mini", replaces="pi: peer lost"))
    assert line == "  ↻ fan[2] moved to mac-mini (pi: peer lost)"
    assert PI not in line and MAC not in line  # names, not ids


def test_an_agent_not_yet_bound_is_placing():
    assert _shown(AgentBegan("summarize", None, "smollm2-135m", 1)) == ["  ▶ summarize placing · smollm2-135m"]
    assert _shown(AgentBegan("judge", None, None, 2, 3)) == ["  ▶ judge placing · attempt 2 · fan-out ×3"]
    assert _shown(AgentBegan("split", "local", None, 1)) == ["  ▶ split on local"]


def test_a_plan_event_is_shown_as_the_plan():
    assert _shown(PLANNED) == render_plan(PLANNED).splitlines()


def _done(agent: str, node: str, took: float, tokens: int, status: AgentStatus = AgentStatus.COMPLETED,
          error: str | None = None) -> AgentEnded:
    return AgentEnded(agent, AgentRecord(status=status, node_id=node, started_at=AT, finished_at=AT + took,
                                         usage=Usage(10, tokens), error=error))


def _finished(status: str = "completed") -> RunFinished:
    return RunFinished(RunResult(RunId("r" * 16), "review", status, "", (), AT, AT + 9.5))


BEGAN = RunBegan(RunId("r" * 16), "review", ("summarize", "judge"), None, AT)


def test_plain_lines_carry_no_colour_and_no_cursor_movement():
    lines = _shown(BEGAN, AgentBegan("summarize", None, "m", 1), AgentPlacedOn("summarize", PI, "pi"),
                   _done("summarize", PI, 2.0, 7), _finished())
    assert lines == [f"orc: running review (2 agents), run {'r' * 16}", "  ▶ summarize placing · m",
                     "  → summarize on pi", "  ✓ summarize 2.0s · 7 tok · pi", "orc: completed in 9.5s"]
    assert not any("\x1b" in line for line in lines)


def test_one_agent_is_one_agent():
    began = RunBegan(RunId("r" * 16), "solo", ("only",), None, AT)
    assert _shown(began) == [f"orc: running solo (1 agent), run {'r' * 16}"]


def test_a_plain_stream_box_is_closed_before_any_other_line():
    lines = _shown(AgentBegan("judge", "local", "m", 1), AgentBegan("summarize", "local", "m", 1),
                   TokenStreamed("judge", "first half "), _done("summarize", "local", 1.0, 3),
                   TokenStreamed("judge", "second half\nnext line"), TokenStreamed("summarize", "late"),
                   _done("judge", "local", 2.0, 4), stream_tokens=True)
    done = lines.index("  ✓ summarize 1.0s · 3 tok · local")
    opened = [i for i, line in enumerate(lines) if line.startswith("  ┌ ")]
    closed = [i for i, line in enumerate(lines) if line == "  └"]
    assert len(opened) == len(closed) == 2
    for start, end in zip(opened, closed):
        assert not start < done < end  # the other agent's line is between boxes, never in one
        assert all(line.startswith("  │ ") for line in lines[start + 1:end])
    assert lines[opened[0] + 1] == "  │ first half "
    assert lines[opened[1] + 1:closed[1]] == ["  │ second half", "  │ next line"]
    assert not any("late" in line for line in lines)  # only the first agent to stream is shown


def test_a_plain_stream_keeps_the_text_as_generated():
    lines = _shown(AgentBegan("a", "local", "m", 1), TokenStreamed("a", "x\x1b]0;title\x07y"), stream_tokens=True)
    assert lines[2] == "  │ x\x1b]0;title\x07y"  # a pipe or a file gets the bytes the model wrote


# ---- LiveView, on an emulated terminal -----------------------------------------------------------

class Terminal:
    """A rich console writing into an emulated terminal of `width` x `height` cells."""

    def __init__(self, width: int = 48, height: int = 30) -> None:
        self.written = io.StringIO()
        self.console = Console(file=self.written, force_terminal=True, width=width, height=height,
                               color_system="standard", record=True, legacy_windows=False)
        self.screen = pyte.Screen(width, height)
        self.screen.set_mode(pyte.modes.LNM)  # a newline returns the carriage, as a tty's onlcr does
        self._stream = pyte.Stream(self.screen)
        self._fed = 0

    def lines(self) -> list[str]:
        """The screen now, trailing blanks cut, empty rows at the bottom dropped."""
        text = self.written.getvalue()
        self._stream.feed(text[self._fed:])
        self._fed = len(text)
        rows = [row.rstrip() for row in self.screen.display]
        while rows and not rows[-1]:
            rows.pop()
        return rows


def _live(terminal: Terminal, watch: str | None = None, now: list[float] | None = None) -> LiveView:
    clock = now if now is not None else [AT]
    return LiveView(terminal.console, watch=watch, clock=lambda: clock[0], auto_refresh=False)


def _panels(rows: list[str]) -> list[tuple[int, int]]:
    tops = [i for i, row in enumerate(rows) if row.startswith("╭")]
    return [(top, next(i for i in range(top, len(rows)) if rows[i].startswith("╰"))) for top in tops]


def test_an_agent_waits_until_its_generation_starts_then_works():
    terminal = Terminal()
    now = [AT]
    view = _live(terminal, now=now)
    view.show(BEGAN)
    view.show(AgentBegan("summarize", None, "m", 1))
    assert "  … summarize waiting for a node · 0.0s" in terminal.lines()
    view.show(AgentPlacedOn("summarize", PI, "pi"))
    now[0] = AT + 4
    view.show(AgentBegan("judge", None, "m", 1))
    assert "  … summarize waiting for a model on pi · 4.0s" in terminal.lines()
    view.show(AgentWorking("summarize", PI, 4.0))
    rows = terminal.lines()
    assert "  ● summarize working on pi · 4.0s" in rows
    assert "  … judge waiting for a node · 0.0s" in rows
    # Without AgentWorking (an engine or a peer that does not send it), the first token says it.
    view.show(AgentPlacedOn("judge", MAC, "mac-mini"))
    view.show(TokenStreamed("judge", "hi"))
    assert "  ● judge working on mac-mini · 1 tok · 0.0s" in terminal.lines()
    view.close()


def test_finished_agents_print_above_the_region_and_never_inside_the_stream_panel():
    terminal = Terminal(width=40)
    view = _live(terminal)
    view.show(BEGAN)
    for name, node, node_id in (("summarize", "pi", PI), ("judge", "mac-mini", MAC)):
        view.show(AgentBegan(name, None, "m", 1))
        view.show(AgentPlacedOn(name, node_id, node))
    view.show(TokenStreamed("summarize", "The first sentence is long enough to wrap twice in a narrow terminal. "))
    view.show(TokenStreamed("judge", "judge's tokens are not streamed"))
    view.show(_done("judge", MAC, 3.0, 5))
    view.show(TokenStreamed("summarize", "More."))
    rows = terminal.lines()
    ((top, bottom),) = _panels(rows)
    done = rows.index("  ✓ judge 3.0s · 5 tok · mac-mini")
    assert done < top  # above the live region, which holds the panel
    assert all(row.startswith("│") and row.endswith("│") for row in rows[top + 1:bottom])  # gutter on every row
    assert bottom - top - 1 >= 3  # it wrapped, and each wrapped row kept its borders
    assert "judge's tokens" not in "\n".join(rows)
    view.show(_done("summarize", PI, 4.0, 9))
    view.show(_finished())
    view.close()
    rows = terminal.lines()
    # The region is gone; the whole stream stays on screen, in a panel, before its agent's line.
    ((top, bottom),) = _panels(rows)
    assert rows.index("  ✓ summarize 4.0s · 9 tok · pi") == bottom + 1
    assert rows[-1] == "orc: completed in 9.5s"
    assert not any("working" in row or "waiting" in row for row in rows)
    assert "More." in "".join(rows[top:bottom])


def test_an_agent_keeps_one_row_in_a_narrow_terminal():
    terminal = Terminal(width=30)
    view = _live(terminal)
    view.show(AgentBegan("summarize-the-document", None, "m", 1))
    view.show(AgentPlacedOn("summarize-the-document", PI, "raspberry-pi-in-the-attic"))
    (row,) = [row for row in terminal.lines() if "summarize" in row]
    assert row.endswith("…") and len(row) <= 30
    view.close()


def test_failed_skipped_and_retried_agents_are_permanent_lines():
    terminal = Terminal(width=60)
    view = _live(terminal)
    view.show(AgentBegan("judge", None, "m", 1))
    view.show(AgentRetrying("judge", "pi: peer lost", 1))
    view.show(_done("judge", "local", 1.0, 0, AgentStatus.FAILED, "no node has model 'm'"))
    view.show(AgentEnded("polish", AgentRecord(status=AgentStatus.SKIPPED, error="when: ${a.x} == 1 is false")))
    view.close()
    rows = terminal.lines()
    assert "  ↻ judge attempt 1 failed (pi: peer lost); retrying" in rows
    assert "  ✗ judge failed: no node has model 'm'  1.0s · local" in rows
    assert "  ↷ polish skipped: when: ${a.x} == 1 is false" in rows


def test_the_watched_agent_streams_and_fan_out_instances_count():
    terminal = Terminal(width=64)
    view = _live(terminal, watch="judge")
    view.show(AgentBegan("summarize", "local", "m", 1))
    view.show(AgentBegan("judge", "local", "m", 1, 2))
    view.show(AgentPlacedOn("judge[1]", MAC, "mac-mini"))
    view.show(TokenStreamed("summarize", "not this one"))
    view.show(TokenStreamed("judge[1]", "this one"))
    rows = terminal.lines()
    ((top, _),) = _panels(rows)
    assert rows[top].startswith("╭─ judge[1] ")
    assert "  ● judge[1] working on mac-mini · 1 tok · 0.0s" in rows
    assert "  … judge waiting for a model on local · fan-out ×2 · 0.0s" in rows
    view.show(_done("judge", "local", 1.0, 2))  # the parent's end ends its instances too
    view.close()
    assert not any("judge[1] working" in row for row in terminal.lines())


HOSTILE = ("title\x1b]0;pwned\x07|clear\x1b[2J\x1b[H|clip\x1b]52;c;aGVsbG8=\x1b\\|csi8\x9b31m|"
           "bidi\u202eevil\u2069|dcs\x1bPq#0\x1b\\|bell\x07|end")


def test_nothing_a_model_or_a_peer_wrote_reaches_the_terminal_as_a_control():
    terminal = Terminal(width=120)
    view = _live(terminal)
    view.show(AgentBegan("a", None, "m", 1))
    view.show(AgentPlacedOn("a", PI, "pi\x1b]0;x\x07"))  # a peer's name
    view.show(TokenStreamed("a", HOSTILE[:9]))  # a sequence split across two tokens
    view.show(TokenStreamed("a", HOSTILE[9:]))
    view.show(AgentRetrying("a", "peer says \x1b[31mred\x1b]52;c;eA==\x07", 1))
    view.show(_done("a", PI, 1.0, 2))
    view.close()
    written = terminal.written.getvalue()
    for control in ("\x1b]", "\x1b[2J", "\x1b[H", "\x9b", "\u202e", "\u2069", "\x1bP", "\x07", "\x1b[31m"):
        assert control not in written, repr(control)
    assert "title|clear|clip|csi8|bidievil|dcs|bell|end" in "".join(terminal.lines())


def test_a_plain_view_on_a_terminal_still_makes_text_safe():
    class DumbTerminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = DumbTerminal()
    view = PlainView(out, stream_tokens=True, clock=lambda: AT)
    view.show(AgentBegan("a", "local", "m", 1))
    view.show(AgentPlacedOn("a", PI, "pi\x1b]0;x\x07"))
    view.show(TokenStreamed("a", "ok\x1b]52;c;"))
    view.show(TokenStreamed("a", "eA==\x07 done"))
    view.close()
    assert "\x1b" not in out.getvalue() and "\x07" not in out.getvalue()
    assert "  → a on pi" in out.getvalue() and "  │ ok done" in out.getvalue()
