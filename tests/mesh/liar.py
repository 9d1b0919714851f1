"""A lying member for the multi-host tests: the real `orc-node start` whose node service makes things up.

    liar.py --mode MODE --record FILE [--prefill TPS --decode TPS] -- PYTHON -m orc.node.cli.orc_node start ARGS...

It wraps the daemon's own command line (`Node.start(..., wrapper=...)` in nodes.py) and runs it
in this process, so the pid the test holds is the daemon's.

Everything but the service is the real daemon: it joins with an invitation, holds a real
certificate, talks mTLS, advertises on mDNS, beats on every Watch stream. Only what a hostile
member can fake is fake:

    zero        describes absurd speeds for every model it serves (--prefill and --decode are
                ignored) and answers every Offer at once, accepting, with an estimate of 0 ms
    plausible   describes the speeds it is given and answers every Offer, accepting, with the
                estimate those speeds give: nothing to catch until it returns a result

It loads no model. Asked to Execute, it answers at once with a made-up text and usage numbers no
generation can have (ten times max_tokens of completion). Every Offer and every Execute it gets
is appended to FILE as a JSON line (an Execute with the prompt it was sent), so a test sees what
reached this node.

The daemon builds its `NodeService` itself (`orc.node.daemon.root.Daemon.run`), so this program puts
`LyingService` in that module's place for it before handing over to the real command line.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import orc.node.daemon.root
from orc.node.cli import daemon_process, orc_node
from orc.node.protocol.description import NodeDescription
from orc.node.protocol.ids import NodeId
from orc.node.protocol.messages import ExecuteEvent, ExecuteRequest, ExecutionResult, ExecutionStarted, OfferReply, OfferRequest
from orc.node.worker.service import NodeService
from orc.scheduler.run import Usage

ABSURD_PREFILL = 1e7  # tokens per second: no device reads a prompt this fast
ABSURD_DECODE = 1e6
MADE_UP = "LIAR-MADE-UP-ANSWER: trust me, this is what the model said."
LEASE_S = 5.0


@dataclass(frozen=True)
class Lies:
    """What the service makes up, and where it writes down what reached it."""

    mode: str  # "zero" | "plausible"
    record: Path
    prefill: float
    decode: float

    def note(self, entry: dict) -> None:
        with self.record.open("a", encoding="utf-8") as out:
            out.write(json.dumps(entry) + "\n")


class LyingService(NodeService):
    """A node service that claims speeds it does not have, promises what it cannot do and returns made-up results."""

    def __init__(self, *, lies: Lies, **parts) -> None:
        super().__init__(**parts)
        self.lies = lies

    async def warm_up(self) -> None:
        """Nothing to load: every model is described warm and measured from the start."""

    def describe(self) -> NodeDescription:
        honest = super().describe()
        models = tuple(replace(m, loaded=True, prefill_tokens_per_s=self.lies.prefill,
                               decode_tokens_per_s=self.lies.decode) for m in honest.models)
        return replace(honest, models=models)

    async def offer(self, caller: NodeId, request: OfferRequest) -> OfferReply:
        estimate_s = 0.0
        if self.lies.mode == "plausible":
            estimate_s = request.prompt_tokens / self.lies.prefill + request.max_tokens / self.lies.decode
        self.lies.note({"offer": request.agent, "run_id": request.run_id, "caller": caller,
                        "estimated_finish_ms": round(estimate_s * 1000)})
        return OfferReply(accepted=True, lease_id=f"lie-{uuid.uuid4().hex}",
                          estimated_finish_ms=round(estimate_s * 1000),
                          expires_at_ms=int((time.time() + LEASE_S) * 1000))

    async def execute(self, caller: NodeId, request: ExecuteRequest) -> AsyncIterator[ExecuteEvent]:
        payload = request.payload
        self.lies.note({"execute": request.agent, "run_id": request.run_id, "caller": caller,
                        "prompt": [message.content for message in payload.messages]})
        yield ExecutionStarted(self.membership.identity.node_id, payload.model_id)
        max_tokens = payload.params.max_tokens
        yield ExecutionResult(MADE_UP, Usage(prompt_tokens=1, completion_tokens=10 * max_tokens), "stop")


DAEMON = ["-m", "orc.node.cli.orc_node", "start"]


def main() -> None:
    own, command = sys.argv[1:], []
    if "--" in own:
        split = own.index("--")
        own, command = own[:split], own[split + 1:]
    parser = argparse.ArgumentParser(prog="liar.py")
    parser.add_argument("--mode", choices=("zero", "plausible"), required=True)
    parser.add_argument("--record", type=Path, required=True)
    parser.add_argument("--prefill", type=float)
    parser.add_argument("--decode", type=float)
    args = parser.parse_args(own)
    if command[1:4] != DAEMON:
        parser.error(f"after --, give the daemon's command line (PYTHON {' '.join(DAEMON)} ARGS), not {command}")
    if args.mode == "zero":
        prefill, decode = ABSURD_PREFILL, ABSURD_DECODE
    elif args.prefill is None or args.decode is None or min(args.prefill, args.decode) <= 0:
        parser.error("--mode plausible needs --prefill and --decode (tokens per second, above 0)")
    else:
        prefill, decode = args.prefill, args.decode
    lies = Lies(args.mode, args.record, prefill, decode)
    orc.node.daemon.root.NodeService = functools.partial(LyingService, lies=lies)  # type: ignore[misc]
    # `orc-node start` hands over to a fresh interpreter (exec), which would drop the lies: the
    # liar runs the daemon in this process instead, holding the lock the command took.

    def run_here(home, lock, options, debug):  # type: ignore[no-untyped-def]
        daemon_process.run(home, lock, options)
        sys.exit(0)

    daemon_process.hand_over = run_here  # type: ignore[assignment]
    sys.argv = ["orc-node", "start", *command[4:]]
    orc_node.main()


if __name__ == "__main__":
    main()
