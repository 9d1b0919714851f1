"""Runs and ensembles as the dashboard's JSON (docs/api.md, "Dashboard API"): from the journals in
the home, overlaid with what the run hub holds in memory for live and recent runs.

The journal is the record: a run's status, its agents' results and its input come from it; the
hub adds what only the live run knows (it is active, its events, each agent's node name and
streamed text). A journal without an end that no process holds (`journal_lock`) is an
interrupted run. Every function here reads files: call them off the event loop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from orc.node.coordinator.budget import agent_budget_report, run_budget_report, spent_before
from orc.node.coordinator.journal_lock import journal_in_use
from orc.node.coordinator.journal_replay import journal_state
from orc.node.web.run_record import AgentSeen, Json, LiveRun, as_text, cut, usage_json
from orc.scheduler.ensemble import (
    CascadeTask,
    DispatchTask,
    EnsembleSpec,
    EnsembleTask,
    LlmTask,
    LoopTask,
    ScriptTask,
)
from orc.scheduler.errors import EnsembleInvalid, SchedulerError
from orc.scheduler.journal import JournalContents, read_journal
from orc.scheduler.loader import EnsembleLibrary, load_ensemble
from orc.scheduler.run import AgentRecord, AgentStatus, deliverable
from typing_extensions import assert_never

# Runs listed by /api/runs: the newest journals (by their last write) and the runs in memory.
MAX_LISTED = 100
# Problems listed per invalid ensemble: enough to fix the file, bounded for a broken one.
MAX_PROBLEMS = 20


def graph_json(spec: EnsembleSpec) -> Json:
    """GRAPH: each agent, what it depends on, its kind and the model (or profile) it names."""
    return {"agents": [{"name": agent.name, "depends_on": list(agent.depends_on), **_kind(agent.task)}
                       for agent in spec.agents]}


def _kind(task: object) -> Json:
    match task:
        case LlmTask(model=model, model_profile=profile):
            return {"kind": "llm", "model": model or profile}
        case ScriptTask():
            return {"kind": "script", "model": None}
        case EnsembleTask():
            return {"kind": "ensemble", "model": None}
        case LoopTask():
            return {"kind": "loop", "model": None}
        case DispatchTask():
            return {"kind": "dispatch", "model": None}
        case CascadeTask(levels=levels):  # the first level's model: the one every run starts with
            return {"kind": "cascade", "model": levels[0].task.model or levels[0].task.model_profile}
        case _:
            assert_never(task)  # type: ignore[arg-type]


def ensembles_json(entries: Iterable[tuple[str, Path]], library: EnsembleLibrary) -> Json:
    """/api/ensembles: every ensemble the API runs, loaded and checked (a broken file is listed
    with its problems, not left out)."""
    listed = []
    for name, path in entries:
        try:
            spec = load_ensemble(path, library)
        except EnsembleInvalid as error:
            listed.append({"name": name, "valid": False, "problems": [str(p) for p in error.problems[:MAX_PROBLEMS]],
                           "description": None, "graph": None})
            continue
        except (SchedulerError, OSError) as error:
            listed.append({"name": name, "valid": False, "problems": [str(error)], "description": None, "graph": None})
            continue
        listed.append({"name": name, "valid": True, "problems": [], "description": spec.description.strip() or None,
                       "graph": graph_json(spec)})
    return {"ensembles": listed}


@dataclass(frozen=True)
class JournalSummary:
    run_id: str
    ensemble: str
    started_at: float
    finished_at: float | None
    status: str | None  # the end record's; None without one
    in_use: bool = False  # without an end: some process holds the journal (it runs), as of the listing


class JournalIndex:
    """The journals of a runs folder, summarised; a journal is read again only when it changed
    (its size or time), so listing runs every time one starts or ends stays cheap."""

    def __init__(self, runs_dir: Path) -> None:
        self._runs_dir = runs_dir
        self._cache: dict[Path, tuple[tuple[int, int], JournalSummary | None]] = {}
        self._lock = threading.Lock()

    def newest(self, limit: int = MAX_LISTED) -> list[JournalSummary]:
        """The `limit` journals written last, newest run first; unreadable ones are left out."""
        stamped = []
        for path in self._runs_dir.glob("*.journal") if self._runs_dir.is_dir() else ():
            try:
                stat = path.stat()
            except OSError:
                continue
            stamped.append((stat.st_mtime_ns, stat.st_size, path))
        stamped.sort(reverse=True)
        with self._lock:  # streams list runs from several threads at once
            found: dict[Path, tuple[tuple[int, int], JournalSummary | None]] = {}
            for mtime, size, path in stamped[:limit]:
                cached = self._cache.get(path)
                if cached is None or cached[0] != (mtime, size):
                    cached = ((mtime, size), _summary(path))
                found[path] = cached
            self._cache = found  # forget journals no longer among the newest
        summaries = [replace(summary, in_use=summary.status is None and journal_in_use(path))
                     for path, (_, summary) in found.items() if summary is not None]
        return sorted(summaries, key=lambda s: s.started_at, reverse=True)


def _summary(path: Path) -> JournalSummary | None:
    try:
        contents = read_journal(path)
    except (SchedulerError, OSError):  # one damaged or vanished journal must not hide the others
        return None
    end = contents.finished
    header = contents.header
    return JournalSummary(header.run_id, header.ensemble, header.started_at, end.at if end else None,
                          end.status if end else None)


def runs_json(journals: list[JournalSummary], live: Iterable[LiveRun]) -> Json:
    """/api/runs: the journaled runs and the runs in memory, newest first, at most MAX_LISTED."""
    in_memory = {run.run_id: run for run in live}
    listed: dict[str, Json] = {}
    for summary in journals:
        run = in_memory.pop(summary.run_id, None)
        listed[summary.run_id] = {"run_id": summary.run_id, "ensemble": summary.ensemble,
                                  "status": _journal_status(summary.status, summary.in_use, run),
                                  "active": bool(run and run.active), "started_at": summary.started_at,
                                  "finished_at": summary.finished_at}
    for run in in_memory.values():
        listed[run.run_id] = run.summary_json()
    ordered = sorted(listed.values(), key=lambda r: r["started_at"], reverse=True)
    return {"runs": ordered[:MAX_LISTED]}


def _journal_status(end_status: str | None, in_use: bool, run: LiveRun | None) -> str:
    if run is not None and run.active:
        return "running"
    if end_status is not None:
        return end_status
    return "running" if in_use else "interrupted"


def read_run(path: Path) -> JournalContents | None:
    """The journal at `path`, or None if there is none or it cannot be read."""
    if not path.is_file():
        return None
    try:
        return read_journal(path)
    except (SchedulerError, OSError):
        return None


def spec_of(contents: JournalContents, library: EnsembleLibrary) -> EnsembleSpec | None:
    """The ensemble a journaled run ran, from the file it was read from (else by its name);
    None if it cannot be loaded any more."""
    source = contents.header.source
    try:
        if source and Path(source).is_file():
            return load_ensemble(Path(source), library)
        return load_ensemble(library.resolve(contents.header.ensemble), library)
    except (SchedulerError, OSError):
        return None


def run_json(contents: JournalContents | None, in_use: bool, spec: EnsembleSpec | None, run: LiveRun | None,
             node_names: Callable[[str], str | None]) -> Json:
    """RUN: a run's journal (`contents`; `in_use`: some process holds it) overlaid with the hub's
    record (either may be missing, not both); `spec`: its ensemble, if it still loads.
    `node_names(node_id)`: a node's name as the mesh knows it now. Pure: the caller reads."""
    assert contents is not None or run is not None
    agents: dict[str, Json] = {}
    if run is not None:
        agents = {name: agent.json() for name, agent in run.agents.items()}
    state = journal_state(contents, spec) if contents is not None and spec is not None else None
    end = contents.finished if contents is not None else None
    active = bool(run and run.active)
    if contents is not None:
        status = _journal_status(end.status if end else None, in_use, run)
    else:
        status = run.status  # type: ignore[union-attr]
    budgets = {a.name: a.budget for a in spec.agents if a.budget is not None} if spec is not None else {}
    if state is not None:
        for name, record in state.agents.items():
            seen = run.agents.get(name) if run is not None else None
            agents[name] = _journaled_agent(record, seen, interrupted=status == "interrupted")
            if name in budgets:
                agents[name]["budget"] = agent_budget_report(budgets[name], record).to_json()
    # What the run spent, and of its budget: from the journal, as `orc runs show` says it.
    spent: Json = {"usage": None, "budget": None}
    if contents is not None and state is not None:
        total = spent_before(contents)
        report = run_budget_report(contents, state)
        spent = {"usage": {"prompt_tokens": total.prompt_tokens, "completion_tokens": total.completion_tokens},
                 "budget": report.to_json() if report is not None else None}
    for agent in agents.values():
        if agent["node_name"] is None and agent["node_id"]:
            agent["node_name"] = node_names(agent["node_id"])
    if contents is not None:
        header = contents.header
        run_id, ensemble, run_input, started_at = header.run_id, header.ensemble, header.input, header.started_at
        finished_at = end.at if end else None
        result = as_text(deliverable(state)) if state is not None and end is not None else None
    else:
        assert run is not None
        run_id, ensemble, run_input, started_at = run.run_id, run.ensemble, None, run.began_at
        finished_at, result = run.finished_at, run.deliverable
    if active:
        status, finished_at = "running", None
    return {"run_id": run_id, "ensemble": ensemble, "status": status, "active": active,
            "input": as_text(run_input) or "", "started_at": started_at, "finished_at": finished_at,
            "graph": graph_json(spec) if spec is not None else None, "agents": agents, "deliverable": result,
            **spent, "events": list(run.events) if run is not None else []}


def _journaled_agent(record: AgentRecord, seen: AgentSeen | None, *, interrupted: bool) -> Json:
    status = record.status
    if interrupted and status is AgentStatus.RUNNING:
        status = AgentStatus.PENDING  # nothing runs it any more; a resume starts it again
    # A generation placed on this machine alone is bound to no node in the journal; its events say where it ran.
    node_id = record.node_id or (seen.node_id if seen else None)
    return {"status": status.value, "node_id": node_id, "node_name": seen.node_name if seen else None,
            "model": record.model, "attempts": record.tries, "started_at": record.started_at,
            "finished_at": record.finished_at, "output": as_text(record.output), "error": _error(record.error),
            "usage": usage_json(record), "tokens": seen.tokens if seen else None}


def _error(text: str | None) -> str | None:
    return cut(text) if text is not None else None


__all__ = ["JournalIndex", "ensembles_json", "graph_json", "read_run", "run_json", "runs_json", "spec_of"]
