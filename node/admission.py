"""Admission: how much work this node takes on, decided here so no coordinator can overload it.

Sparrow's "probe and bind late" (DESIGN.md section 7): a coordinator asks for an `Offer` and
gets this node's own finish estimate plus a short lease on one place; its `Execute` quoting the
lease takes that place. Several coordinators placing at the same moment therefore never push a
node past its limits, and no global lock is needed: each node enforces its own.

Work is counted per **lane**, one per served model selector (`id@runtime`). A lane has
`slots` places that generate now (default 1: on a small CPU device two generations of the same
model only share the cores) and `queue_limit` places that wait. Running executions, queued
executions and live leases of a lane together never exceed `slots + queue_limit`. Across lanes,
at most `max_running` executions generate at once; beyond that, admitted executions wait in
their lane's queue.

An execution's life (a queued one starts when another finishes, oldest first across lanes):

    admit ──a slot is free──▶ RUNNING ──finish──▶ gone
      │                         ▲
      ├──slots busy──▶ QUEUED ──┘ (promoted by `finish` of another)
      │                  └──cancel / finish──▶ gone
      └──no room──▶ refused

A lease's life: `offer` ──▶ LEASED ──`admit` quoting it, same caller and model──▶ an execution;
LEASED ──`now` ≥ `expires_at`──▶ gone (purged lazily at the start of every call).

Pure and synchronous: nothing here reads a clock or sleeps; every call takes `now` (seconds).
The async shell (`orc.node.service`) reads the clock, wakes the executions `finish` promotes,
and maps refusals to RPC errors.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

# How long an offer's reservation lasts. Long enough for a coordinator to hear from its second
# candidate and send Execute; short enough that a coordinator that chose elsewhere (or died)
# does not keep the place from others for long.
LEASE_SECONDS = 5.0
# Executions generating at once, from all peers together and across all models. More wait in
# their lane's queue; a peer that floods Execute is refused instead of starting unbounded work.
MAX_ACTIVE_EXECUTIONS = 16
# Leases one caller may hold at once: a peer that floods Offer cannot reserve the node away
# from everyone else (with large lanes; a lane's own places bound its leases too).
MAX_LEASES_PER_CALLER = 64
# Leases held at once by all callers together: bounds the table however many peers flood Offer.
MAX_LEASES = 1024

DEFAULT_SLOTS = 1
DEFAULT_QUEUE_LIMIT = 4


class Refusal(enum.Enum):
    """Why a node refused an offer or an execution (the value is the message a peer sees)."""

    UNKNOWN_MODEL = "this node does not serve that model"
    LANE_FULL = "every slot and queue place for this model is taken here; try another node"
    DUPLICATE = "an execution with this id is already admitted here"
    CALLER_LEASES = "you hold too many leases on this node; execute on them or let them expire"
    NODE_LEASES = "this node holds as many leases as it keeps; try again in a few seconds"


@dataclass(frozen=True)
class Offered:
    """An accepted offer: a place is held for the caller until `expires_at`."""

    lease_id: str
    expires_at: float  # same clock as `now`
    estimate_s: float  # from now until this node expects to finish the work


@dataclass(frozen=True)
class Running:
    """The execution holds a slot and generates now."""

    execution_id: str


@dataclass(frozen=True)
class Queued:
    """The execution waits for a slot; `position` 1 is the next of its lane to start."""

    execution_id: str
    position: int


@dataclass(frozen=True)
class Refused:
    """No room for it here (or the request is not acceptable)."""

    why: Refusal

    @property
    def reason(self) -> str:
        return self.why.value


OfferDecision = Offered | Refused
AdmitDecision = Running | Queued | Refused


@dataclass(frozen=True)
class _Lease:
    lease_id: str
    model: str
    caller: str
    work_s: float
    expires_at: float


@dataclass(frozen=True)
class _Execution:
    execution_id: str
    caller: str
    work_s: float
    order: int  # admission order: the oldest queued execution starts first
    started_at: float | None = None  # None while queued


@dataclass
class _Lane:
    running: dict[str, _Execution] = field(default_factory=dict)
    queue: dict[str, _Execution] = field(default_factory=dict)  # insertion order = FIFO


def _work(work_s: float) -> float:
    """A usable work estimate: negative or NaN counts as none."""
    return work_s if work_s > 0 else 0.0


class Admission:
    """The admission limits of one node: leases, running slots and bounded queues per model."""

    def __init__(self, models: Iterable[str], *, slots: int = DEFAULT_SLOTS,
                 queue_limit: int = DEFAULT_QUEUE_LIMIT, max_running: int = MAX_ACTIVE_EXECUTIONS,
                 lease_seconds: float = LEASE_SECONDS, max_leases_per_caller: int = MAX_LEASES_PER_CALLER,
                 max_leases: int = MAX_LEASES, new_id: Callable[[], str] = lambda: uuid.uuid4().hex) -> None:
        if slots < 1 or queue_limit < 0 or max_running < 1:
            raise ValueError("admission needs slots >= 1, queue_limit >= 0 and max_running >= 1")
        self.slots = slots
        self.queue_limit = queue_limit
        self._max_running = max_running
        self._lease_seconds = lease_seconds
        self._max_leases_per_caller = max_leases_per_caller
        self._max_leases = max_leases
        self._new_id = new_id
        # Lanes exist only for the models this node serves, never for a name a peer sends.
        self._lanes = {model: _Lane() for model in models}
        self._leases: dict[str, _Lease] = {}
        self._lane_of: dict[str, str] = {}  # execution id -> its model, running or queued
        self._admitted = 0

    # ---- inputs ----

    def offer(self, model: str, caller: str, work_s: float, now: float) -> OfferDecision:
        """Hold one place of `model`'s lane for `caller` until now + LEASE_SECONDS, with this
        node's estimate of when it would finish `work_s` seconds of work; or refuse."""
        self._purge(now)
        lane = self._lanes.get(model)
        if lane is None:
            return Refused(Refusal.UNKNOWN_MODEL)
        if self._free(model, lane) <= 0:
            return Refused(Refusal.LANE_FULL)
        if sum(1 for lease in self._leases.values() if lease.caller == caller) >= self._max_leases_per_caller:
            return Refused(Refusal.CALLER_LEASES)
        if len(self._leases) >= self._max_leases:
            return Refused(Refusal.NODE_LEASES)
        work = _work(work_s)
        estimate = self._lane_backlog(model, lane, now) / self.slots + work
        lease = _Lease(self._new_id(), model, caller, work, now + self._lease_seconds)
        self._leases[lease.lease_id] = lease
        return Offered(lease.lease_id, lease.expires_at, estimate)

    def admit(self, model: str, caller: str, lease_id: str | None, execution_id: str, work_s: float,
              now: float) -> AdmitDecision:
        """Admit an execution: it runs now, or waits in the queue, or is refused.

        A live lease of the same caller and model converts into the execution. Without one (none,
        unknown, expired, another caller's or another model's) it gets only room no other caller
        holds a live lease on: free room first, else one of its own leases on this lane."""
        self._purge(now)
        lane = self._lanes.get(model)
        if lane is None:
            return Refused(Refusal.UNKNOWN_MODEL)
        if execution_id in self._lane_of:
            return Refused(Refusal.DUPLICATE)
        lease = self._leases.get(lease_id) if lease_id else None
        if lease is not None and lease.caller == caller and lease.model == model:
            del self._leases[lease.lease_id]
        elif self._free(model, lane) > 0:
            pass
        else:
            own = [held for held in self._leases.values() if held.caller == caller and held.model == model]
            if not own:
                return Refused(Refusal.LANE_FULL)
            del self._leases[min(own, key=lambda held: held.expires_at).lease_id]
        self._admitted += 1
        execution = _Execution(execution_id, caller, _work(work_s), self._admitted)
        self._lane_of[execution_id] = model
        # A non-empty queue means no slot could take it (the lane or the node is full): wait behind it.
        if not lane.queue and len(lane.running) < self.slots and self.running() < self._max_running:
            lane.running[execution_id] = replace(execution, started_at=now)
            return Running(execution_id)
        lane.queue[execution_id] = execution
        return Queued(execution_id, len(lane.queue))

    def finish(self, execution_id: str, now: float) -> str | None:
        """The execution ended (or left the queue): free its place, and return the id of the
        queued execution that starts in its stead (the oldest that a free slot can take), if any."""
        self._purge(now)
        model = self._lane_of.pop(execution_id, None)
        if model is None:
            return None
        lane = self._lanes[model]
        if lane.queue.pop(execution_id, None) is not None:
            return None  # a queued one held no slot: nothing can start in its stead
        del lane.running[execution_id]
        return self._promote(now)

    def release(self, lease_id: str, caller: str, now: float) -> bool:
        """Give back a lease its holder will not use (probe-and-bind-late asks two nodes and
        takes one); False if `caller` holds no such live lease."""
        self._purge(now)
        lease = self._leases.get(lease_id)
        if lease is None or lease.caller != caller:
            return False
        del self._leases[lease_id]
        return True

    def cancel(self, execution_id: str, now: float) -> bool:
        """Take a queued execution out of its queue; False if it is not queued (a running one
        must be stopped by the shell, which then calls `finish`)."""
        self._purge(now)
        model = self._lane_of.get(execution_id)
        if model is None or execution_id not in self._lanes[model].queue:
            return False
        del self._lanes[model].queue[execution_id]
        del self._lane_of[execution_id]
        return True

    # ---- what the node reports ----

    def status(self, execution_id: str) -> Running | Queued | None:
        """Where an admitted execution is now; None once it finished (or was never admitted)."""
        model = self._lane_of.get(execution_id)
        if model is None:
            return None
        lane = self._lanes[model]
        if execution_id in lane.running:
            return Running(execution_id)
        return Queued(execution_id, list(lane.queue).index(execution_id) + 1)

    def running(self, model: str | None = None) -> int:
        """Executions generating now, on one lane or all of them."""
        return sum(len(lane.running) for lane in self._select(model))

    def queued(self, model: str | None = None) -> int:
        """Executions waiting for a slot, on one lane or all of them."""
        return sum(len(lane.queue) for lane in self._select(model))

    def leases(self, now: float, model: str | None = None) -> int:
        """Live leases, on one lane or all of them."""
        self._purge(now)
        return sum(1 for lease in self._leases.values() if model is None or lease.model == model)

    def backlog(self, now: float, model: str | None = None) -> float:
        """Seconds of admitted work not finished yet, by this node's own estimates: what is left of
        the running executions, the queued ones and the leased places; one lane or all of them."""
        self._purge(now)
        names = self._lanes if model is None else [model] if model in self._lanes else []
        return sum(self._lane_backlog(name, self._lanes[name], now) for name in names)

    # ---- the arithmetic ----

    def _select(self, model: str | None) -> list[_Lane]:
        if model is None:
            return list(self._lanes.values())
        lane = self._lanes.get(model)
        return [lane] if lane is not None else []

    def _free(self, model: str, lane: _Lane) -> int:
        """Places of the lane that neither an execution nor a live lease holds."""
        leased = sum(1 for lease in self._leases.values() if lease.model == model)
        return self.slots + self.queue_limit - len(lane.running) - len(lane.queue) - leased

    def _lane_backlog(self, model: str, lane: _Lane, now: float) -> float:
        # A running execution past its estimate counts as about to finish, not as negative work.
        running = sum(max(e.work_s - (now - e.started_at), 0.0) for e in lane.running.values()
                      if e.started_at is not None)
        queued = sum(e.work_s for e in lane.queue.values())
        leased = sum(lease.work_s for lease in self._leases.values() if lease.model == model)
        return running + queued + leased

    def _promote(self, now: float) -> str | None:
        """Start the oldest queued execution a free slot can take (at most one slot came free)."""
        if self.running() >= self._max_running:
            return None
        heads = [(next(iter(lane.queue.values())), lane) for lane in self._lanes.values()
                 if lane.queue and len(lane.running) < self.slots]
        if not heads:
            return None
        execution, lane = min(heads, key=lambda head: head[0].order)
        del lane.queue[execution.execution_id]
        lane.running[execution.execution_id] = replace(execution, started_at=now)
        return execution.execution_id

    def _purge(self, now: float) -> None:
        """Forget expired leases: their places are free again."""
        for lease_id in [key for key, lease in self._leases.items() if now >= lease.expires_at]:
            del self._leases[lease_id]


# ---- the node's settings (`admission:` in its config.yaml) ----

# Beyond these a node is misconfigured, not generous: every slot is a model instance in memory,
# every queue place a peer's prompt held waiting.
MAX_SLOTS = 16
MAX_QUEUE_LIMIT = 64


class BadAdmissionConfig(ValueError):
    """The `admission:` section of the node's config.yaml is not usable; the message says what to fix."""


@dataclass(frozen=True)
class AdmissionConfig:
    slots: int = DEFAULT_SLOTS
    queue: int = DEFAULT_QUEUE_LIMIT


def admission_config(root: object, source: str = "the config file") -> AdmissionConfig:
    """The `admission:` section of a parsed node config (`slots`, `queue`); defaults when absent."""
    section = root.get("admission") if isinstance(root, dict) else None
    if section is None:
        return AdmissionConfig()
    if not isinstance(section, dict):
        raise BadAdmissionConfig(f"{source}: `admission:` must be a mapping with slots and queue")
    problems = [f"unknown key {key!r} (known: slots, queue)" for key in section if key not in ("slots", "queue")]
    values = {}
    for key, default, top, minimum in (("slots", DEFAULT_SLOTS, MAX_SLOTS, 1),
                                       ("queue", DEFAULT_QUEUE_LIMIT, MAX_QUEUE_LIMIT, 0)):
        value = section.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= top:
            problems.append(f"{key}: must be a whole number from {minimum} to {top}, not {value!r}")
        else:
            values[key] = value
    if problems:
        raise BadAdmissionConfig(f"{source}: admission: " + "; ".join(problems))
    return AdmissionConfig(**values)

