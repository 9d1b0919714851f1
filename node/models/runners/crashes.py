"""When a model whose runner keeps crashing stops being offered: a pure record of one model's crashes.

    available ──crash──> available (safe settings from now on)
        ^                    │ MAX_CRASHES crashes within CRASH_WINDOW_S
        │                    v
        └── COOL_DOWN_S ── unavailable ("its runner crashed 3 times in 10 minutes (last: SIGSEGV)")

After the first crash a runner restarts with its safe settings (`hosted.safe_settings`) for as
long as the node runs. When the model trips, its crash count starts over: once the cool-down
has passed, the next generation starts a runner again, and it takes MAX_CRASHES new crashes to
trip once more. Restarting the node forgets everything.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = ["COOL_DOWN_S", "CRASH_WINDOW_S", "MAX_CRASHES", "CrashRecord"]

# Three crashes in ten minutes is no accident (one OOM kill in a burst of work, one bad page):
# the model, its file or this machine's llama.cpp do not get along. Each crash costs a reload
# and fails the generations in flight, so the node stops offering the model rather than let
# the mesh keep sending it work that dies.
MAX_CRASHES = 3
CRASH_WINDOW_S = 600.0
# How long a tripped model stays unavailable: long enough for memory pressure to pass, short
# enough that a node which is fine again serves the model again without a restart.
COOL_DOWN_S = 600.0


@dataclass(frozen=True)
class CrashRecord:
    """One model's recent crashes (times in seconds of a monotonic clock) and its trip, if any."""

    crashes: tuple[float, ...] = ()
    ever_crashed: bool = False
    last_cause: str = ""
    tripped_at: float | None = None

    def crashed(self, now: float, cause: str) -> CrashRecord:
        """The record after a crash at `now` (`cause`: a signal name or an exit status)."""
        recent = tuple(t for t in self.crashes if now - t < CRASH_WINDOW_S) + (now,)
        if len(recent) >= MAX_CRASHES:
            return CrashRecord((), True, cause, now)
        return replace(self, crashes=recent, ever_crashed=True, last_cause=cause)

    def unavailable_reason(self, now: float) -> str | None:
        """Why the model is not offered at `now`, or None."""
        if self.tripped_at is None or now - self.tripped_at >= COOL_DOWN_S:
            return None
        return (f"its runner crashed {MAX_CRASHES} times in {CRASH_WINDOW_S / 60:g} minutes "
                f"(last: {self.last_cause})")

    @property
    def safe(self) -> bool:
        """Whether the next runner starts with its safe settings."""
        return self.ever_crashed
