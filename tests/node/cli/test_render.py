"""What `orc plan`, `--explain` and the progress lines print, from events built by hand."""

from __future__ import annotations

import io
import json

from orc.node.cli.render import ProgressView, plan_json, render_plan
from orc.node.events import AgentBegan, AgentPlacedOn, AgentPlan, RunPlanned
from orc.scheduler.placement import Estimate, Exclusion, Rejection

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

def _shown(*events) -> list[str]:
    out = io.StringIO()  # not a terminal: no colour codes
    view = ProgressView(out=out, stream_tokens=False)
    for event in events:
        view.show(event)
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
