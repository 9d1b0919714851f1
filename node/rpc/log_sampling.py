"""Log lines about what others do to this node, sampled so that nobody can flood the log.

A refused call or connection is worth a line, but a peer that repeats it thousands of times a
second must not write thousands of lines (the log fills the disk and buries everything else).
Per source (a node id, or an address), the first event of each window is logged as it happens;
the rest of that window only counts, and `due()` turns each count into one summary line
("refused N more ...") once the window is over. A pure core: the caller passes `now`.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

DEFAULT_WINDOW_S = 60.0
# Sources remembered at once. Addresses come from the network, so the table is capped; a
# source pushed out loses only the count of its current window, which `dropped` keeps.
DEFAULT_MAX_SOURCES = 1024
OTHER_SOURCES = "other sources"  # the summary of the sources pushed out of the table


@dataclass(frozen=True)
class Summary:
    """`count` more events from `source` were not logged in the window that began at `since`."""

    source: str
    count: int
    since: float


@dataclass
class _Window:
    began: float
    quiet: int = 0  # events counted but not logged


class SampledLog:
    """Which events to log now, and which counts to report later."""

    def __init__(self, window_s: float = DEFAULT_WINDOW_S, max_sources: int = DEFAULT_MAX_SOURCES) -> None:
        if window_s <= 0 or max_sources < 1:
            raise ValueError("the window must be positive and max_sources at least 1")
        self.window_s = window_s
        self.max_sources = max_sources
        self.dropped = 0  # unlogged events of sources pushed out of the table, until `due` reports them
        self._windows: OrderedDict[str, _Window] = OrderedDict()
        self._ended: list[Summary] = []

    def __len__(self) -> int:
        return len(self._windows)

    def event(self, source: str, now: float) -> bool:
        """An event from `source` at `now`: True if it should be logged as it is."""
        window = self._windows.get(source)
        if window is not None and now - window.began < self.window_s:
            window.quiet += 1
            self._windows.move_to_end(source)
            return False
        if window is not None and window.quiet:
            self._ended.append(Summary(source, window.quiet, window.began))
        self._windows[source] = _Window(now)
        self._windows.move_to_end(source)
        while len(self._windows) > self.max_sources:
            _, evicted = self._windows.popitem(last=False)
            self.dropped += evicted.quiet
        return True

    def due(self, now: float) -> tuple[Summary, ...]:
        """Summaries of every window over at `now` that counted events; those windows are forgotten."""
        summaries = self._ended
        self._ended = []
        for source, window in list(self._windows.items()):
            if now - window.began >= self.window_s:
                del self._windows[source]
                if window.quiet:
                    summaries.append(Summary(source, window.quiet, window.began))
        if self.dropped:
            summaries.append(Summary(OTHER_SOURCES, self.dropped, now - self.window_s))
            self.dropped = 0
        return tuple(summaries)

    def next_due(self) -> float | None:
        """When the earliest window with unlogged events ends (None: nothing to report)."""
        if self._ended or self.dropped:
            return min((s.since + self.window_s for s in self._ended), default=0.0)
        ends = [w.began + self.window_s for w in self._windows.values() if w.quiet]
        return min(ends) if ends else None
