"""A run's state rebuilt from its journal: for `orc runs show`, and to resume the run."""

from __future__ import annotations

from orc.scheduler.ensemble import EnsembleSpec
from orc.scheduler.journal import JournalContents
from orc.scheduler.run import RunState, apply, initial_state, resumable


def journal_state(contents: JournalContents, spec: EnsembleSpec) -> RunState:
    """The state the journaled events lead to (events of agents `spec` no longer has are ignored)."""
    state = initial_state(contents.header.run_id, spec, contents.header.input, contents.header.started_at)
    for event in contents.events:
        if event.agent in state.agents:
            state = apply(state, event)
    return state


def resumed_state(contents: JournalContents, spec: EnsembleSpec) -> RunState:
    """The state a resume continues from: completed agents kept, every other agent pending again."""
    return resumable(journal_state(contents, spec))
