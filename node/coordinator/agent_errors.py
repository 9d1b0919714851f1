"""How an agent attempt fails on purpose, and the seam it runs scripts through: shared by the
agent kinds and the composite agents (votes, cascades) they hand work to."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from orc.node.models.runtimes.script import ScriptResult

# Runs a script (`orc.node.models.runtimes.script.run_script`'s signature).
ScriptRunner = Callable[..., Awaitable[ScriptResult]]


class AgentError(Exception):
    """An agent failed for a reason stated in the message; `permanent`: no retry can help (a
    budget ran out)."""

    def __init__(self, message: str, retryable: bool = False, permanent: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.permanent = permanent
