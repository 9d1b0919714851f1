"""The scheduler's errors. Leaf docstrings are written for the person running orc."""

from __future__ import annotations

import difflib

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an ensemble: where, what, and how to fix it."""

    file: Path | None
    agent: str | None
    message: str
    fix: str | None = None

    def __str__(self) -> str:
        where = str(self.file) if self.file else "<ensemble>"
        if self.agent:
            where += f": agent '{self.agent}'"
        text = f"{where}: {self.message}"
        if self.fix:
            text += f" ({self.fix})"
        return text


class SchedulerError(Exception):
    """Base of every error raised by orc.scheduler."""


class EnsembleInvalid(SchedulerError):
    """The ensemble file is not valid; nothing was run."""

    def __init__(self, problems: list[Problem] | tuple[Problem, ...]) -> None:
        self.problems = tuple(problems)
        super().__init__(self.summary())

    def summary(self) -> str:
        if len(self.problems) == 1:
            return str(self.problems[0])
        lines = [f"{len(self.problems)} problems in the ensemble:"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


class EnsembleNotFound(SchedulerError):
    """No ensemble of that name or path exists in the places orc looks."""

    def __init__(self, name: str, searched: tuple[Path, ...], available: tuple[str, ...] = (), *,
                 suggestion: str | None = None, missing_file: Path | None = None) -> None:
        self.name = name
        self.searched = searched
        self.available = available
        where = ", ".join(str(p) for p in searched) or "(no ensemble folders exist)"
        if missing_file is not None and not searched:
            # A path: there is no library search to speak of, only the file that is not there.
            text = f"no file {name} ({missing_file.parent} has no '{missing_file.name}')"
        elif missing_file is not None:
            text = f"no file {name}, and no ensemble named '{Path(name).stem}' (looked in: {where})"
        else:
            text = f"ensemble '{name}' not found (looked in: {where})"
        if suggestion and searched:
            text += f"; {suggestion}"
        elif available and searched:
            shown = ", ".join(available[:12]) + (" ..." if len(available) > 12 else "")
            text += f"; available: {shown}"
        super().__init__(text)


class JournalCorrupt(SchedulerError):
    """A run journal could not be read back; the run cannot be shown or resumed from it."""


class JournalWriteFailed(SchedulerError):
    """The run journal could not be written (a full disk, a read-only folder); the run stopped."""


class RunNotFound(SchedulerError):
    """No run with that id is recorded under this orc home."""


def did_you_mean(word: str, choices: tuple[str, ...] | list[str]) -> str | None:
    """"did you mean 'X'?" for the choice closest to a mistyped `word`, or None when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None
