"""Run-event values the wire tests share: records with and without bindings, and a whole plan."""

from __future__ import annotations

from orc.node.protocol.events import AgentPlan, RunPlanned
from orc.scheduler.placement import Estimate, Exclusion, Rejection
from orc.scheduler.run import AgentRecord, AgentStatus, Usage
from orc.scheduler.values import freeze

NODE = "abcdefghijklmnopqrst"
SHA = "0123456789abcdef" * 4

RECORD = AgentRecord(AgentStatus.COMPLETED, 2, freeze({"answer": [1, 2.5, None, True, "x"], "n": {"k": "v"}}),
                     None, NODE, "smollm2-135m", 1.5, 2.5, Usage(10, 20))
BOUND_RECORD = AgentRecord(AgentStatus.COMPLETED, 1, "ok", None, "c" * 20, "smollm2-135m", 1.0, 4.0, Usage(5, 6),
                           nodes=("b" * 20, "c" * 20), failovers=1,
                           detail=freeze({"vote": {"ballots": {"yes": 3, "no": 1}, "agreement": 0.6, "samples": 5,
                                                   "winner": "yes", "by": "majority", "abstained": 1,
                                                   "models": ["smollm2-135m"], "pick": 0}}))
PLANNED = RunPlanned("digest", NODE, 1_700_000_000.5, (
    AgentPlan("summarize", "llm", "smollm2-135m",
              (Estimate(NODE, "mac-mini", 1_700_000_000.5, 0.0, 0.25, 1.5, 0.0, True, False, "llama_cpp", SHA),
               Estimate("b" * 20, "pi", 1_700_000_002.0, 3.5, 1.25, 6.0, 0.004, False, True, "mlx")),
              (Rejection("c" * 20, "laptop", Exclusion.NO_MODEL, "no model 'smollm2-135m'"),
               Rejection("d" * 20, "nas", Exclusion.LOCAL_ONLY, "local_only: the agent stays on the coordinator's device"))),
    AgentPlan("split", "script", None, note="runs on this node: scripts never leave the coordinator"),
    AgentPlan("nowhere", "llm", "llama3:70b", (),
              tuple(Rejection(n * 20, n, reason, reason.value) for n, reason in zip("efghijkl", Exclusion))),
))
