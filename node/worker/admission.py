"""Admission: how much work this node takes on, decided here so no coordinator can overload it.

Sparrow's "probe and bind late" (DESIGN.md section 7): a coordinator asks for an `Offer` and
gets this node's own finish estimate plus a short lease on one place; its `Execute` quoting the
lease takes that place. Several coordinators placing at the same moment therefore never push a
node past its limits, and no global lock is needed: each node enforces its own.

Work is counted per **lane**, one per served model selector (`id@runtime`). A lane has as
many places that generate now as its runtime runs generations of that model at once (its
capacity: `lane_slots`, else `slots`; a batching runtime decodes them together) and `queue_limit`
places that wait. Running executions, queued executions and live leases of a lane together never
exceed its slots + `queue_limit`. Across lanes,
at most `max_running` executions generate at once; beyond that, admitted executions wait in
their lane's queue.

An execution's life (a queued one starts when another finishes, oldest first across lanes):

    admit ──a slot is free──▶ RUNNING ──finish──▶ gone
      │                         ▲
      ├──slots busy──▶ QUEUED ──┘ (promoted by `finish` of another)
      │                  └──cancel / finish──▶ gone
      └──no room──▶ refused

A lease's life: `offer` ──▶ LEASED ──`admit` quoting it, same caller and model──▶ an execution;
LEASED ──`now` ≥ `expires_at`──▶ gone (purged lazily at the start of every call), reported by
`expired_unused` and counted in its caller's debt; LEASED ──`release` by its holder──▶ gone.

**Fair share.** Places are first come, first served only while nobody else wants them. Once
another caller was refused a place for want of room on a lane (within `CONTENTION_WINDOW_S`)
or has an execution queued there, each caller may hold (leases, queued and running executions together) at most its share
of the lane's places: `ceil(places / callers active on the lane)`, less its debt, at least one.
The debt is what its leases held without ever being executed: an expired lease adds 1, a lease
given back adds the fraction of its life it was held (the coordinator's own probe-and-bind-late
gives the loser back within milliseconds: next to nothing). The debt halves every
`DEBT_HALF_LIFE_S`, so a caller whose coordinator crashed once is forgiven within minutes, and
one that keeps hoarding keeps a share of one place. This node's own coordinator is a caller
like the others: one remote member cannot starve its local runs.

Pure and synchronous: nothing here reads a clock or sleeps; every call takes `now` (seconds).
The async shell (`orc.node.worker.service`) reads the clock, wakes the executions `finish` promotes,
and maps refusals to RPC errors.
"""

from __future__ import annotations

import enum
import math
import uuid
from collections.abc import Callable, Iterable, Mapping
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
# A caller refused on a lane this recently still wants a place there: the others are held to
# their fair share until it stops asking. A refused coordinator asks again within a second.
CONTENTION_WINDOW_S = 10.0
# Unused leases are forgiven by halves: a crash costs a minute or two, hoarding never pays.
DEBT_HALF_LIFE_S = 60.0
# Callers remembered per table (recent activity per lane, debts, expired leases not yet
# reported). Callers are authenticated members, but a leaked CA key or a long-lived node sees
# many: the oldest (or smallest debt) is forgotten first, so the tables stay bounded.
MAX_TRACKED_CALLERS = 256
# Debts this small are forgotten outright (after about six half-lives for one lease).
FORGOTTEN_DEBT = 0.02


class Refusal(enum.Enum):
    """Why a node refused an offer or an execution (the value is the message a peer sees)."""

    UNKNOWN_MODEL = "this node does not serve that model"
    LANE_FULL = "every slot and queue place for this model is taken here; try another node"
    DUPLICATE = "an execution with this id is already admitted here"
    CALLER_LEASES = "you hold too many leases on this node; execute on them or let them expire"
    NODE_LEASES = "this node holds as many leases as it keeps; try again in a few seconds"
    FAIR_SHARE = "you hold your fair share of this model's places here while others wait for them"


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
    """No room for it here (or the request is not acceptable); `detail`, when given, is the
    message with this caller's numbers in it."""

    why: Refusal
    detail: str = ""

    @property
    def reason(self) -> str:
        return self.detail or self.why.value


@dataclass(frozen=True)
class ExpiredLease:
    """A lease that expired without an execution quoting it: its place was held for nothing."""

    lease_id: str
    model: str
    caller: str
    granted_at: float
    expires_at: float
    about: object = None  # what the shell passed to `offer` (the run and agent it was for)


OfferDecision = Offered | Refused
AdmitDecision = Running | Queued | Refused


@dataclass(frozen=True)
class _Lease:
    lease_id: str
    model: str
    caller: str
    work_s: float
    expires_at: float
    granted_at: float = 0.0
    about: object = None


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
    """The admission limits of one node: leases, running slots and bounded queues per model,
    shared fairly between callers when more than one wants a lane."""

    def __init__(self, models: Iterable[str], *, slots: int = DEFAULT_SLOTS,
                 lane_slots: Mapping[str, int] | None = None, queue_limit: int = DEFAULT_QUEUE_LIMIT,
                 max_running: int = MAX_ACTIVE_EXECUTIONS,
                 lease_seconds: float = LEASE_SECONDS, max_leases_per_caller: int = MAX_LEASES_PER_CALLER,
                 max_leases: int = MAX_LEASES, max_callers: int = MAX_TRACKED_CALLERS,
                 new_id: Callable[[], str] = lambda: uuid.uuid4().hex) -> None:
        if min([slots, *(lane_slots or {}).values()]) < 1 or queue_limit < 0 or max_running < 1:
            raise ValueError("admission needs slots >= 1, queue_limit >= 0 and max_running >= 1")
        self.queue_limit = queue_limit
        self._max_running = max_running
        self._lease_seconds = lease_seconds
        self._max_leases_per_caller = max_leases_per_caller
        self._max_leases = max_leases
        self._max_callers = max_callers
        self._new_id = new_id
        # Lanes exist only for the models this node serves, never for a name a peer sends.
        self._lanes = {model: _Lane() for model in models}
        self._slots = {model: (lane_slots or {}).get(model, slots) for model in self._lanes}
        self._leases: dict[str, _Lease] = {}
        self._lane_of: dict[str, str] = {}  # execution id -> its model, running or queued
        self._admitted = 0
        # Per lane: when each caller last asked for a place, and when it was last refused one.
        self._asked: dict[str, dict[str, float]] = {model: {} for model in self._lanes}
        self._refused: dict[str, dict[str, float]] = {model: {} for model in self._lanes}
        self._debt: dict[str, tuple[float, float]] = {}  # caller -> (amount, as of when)
        self._expired: list[ExpiredLease] = []  # not yet taken by `expired_unused`

    # ---- inputs ----

    def offer(self, model: str, caller: str, work_s: float, now: float, about: object = None) -> OfferDecision:
        """Hold one place of `model`'s lane for `caller` until now + LEASE_SECONDS, with this
        node's estimate of when it would finish `work_s` seconds of work; or refuse. `about`
        comes back in `ExpiredLease` if the lease is never used."""
        self._purge(now)
        lane = self._lanes.get(model)
        if lane is None:
            return Refused(Refusal.UNKNOWN_MODEL)
        self._note(self._asked[model], caller, now)
        unfair = self._over_share(model, lane, caller, now)
        if unfair is not None:
            return unfair
        if self._free(model, lane) <= 0:
            return self._refuse(model, caller, now, Refused(Refusal.LANE_FULL))
        if sum(1 for lease in self._leases.values() if lease.caller == caller) >= self._max_leases_per_caller:
            return Refused(Refusal.CALLER_LEASES)
        if len(self._leases) >= self._max_leases:
            return Refused(Refusal.NODE_LEASES)
        work = _work(work_s)
        # With a free slot it joins the batch now (`work_s` is its work at that batch size);
        # otherwise it waits for the lane's admitted work, done `slots` at a time.
        slots = self._slots[model]
        estimate = work + (self._lane_backlog(model, lane, now) / slots if self.occupied(model, now) >= slots else 0.0)
        lease = _Lease(self._new_id(), model, caller, work, now + self._lease_seconds, now, about)
        self._leases[lease.lease_id] = lease
        return Offered(lease.lease_id, lease.expires_at, estimate)

    def admit(self, model: str, caller: str, lease_id: str | None, execution_id: str, work_s: float,
              now: float) -> AdmitDecision:
        """Admit an execution: it runs now, or waits in the queue, or is refused.

        A live lease of the same caller and model converts into the execution. Without one (none,
        unknown, expired, another caller's or another model's) it gets only room no other caller
        holds a live lease on, within its fair share: free room first, else one of its own
        leases on this lane."""
        self._purge(now)
        lane = self._lanes.get(model)
        if lane is None:
            return Refused(Refusal.UNKNOWN_MODEL)
        if execution_id in self._lane_of:
            return Refused(Refusal.DUPLICATE)
        self._note(self._asked[model], caller, now)
        lease = self._leases.get(lease_id) if lease_id else None
        own = [held for held in self._leases.values() if held.caller == caller and held.model == model]
        if lease is not None and lease.caller == caller and lease.model == model:
            del self._leases[lease.lease_id]
        else:
            unfair = self._over_share(model, lane, caller, now)
            if unfair is None and self._free(model, lane) > 0:
                pass
            elif own:
                # A place it holds already: using it adds nothing to what it holds.
                del self._leases[min(own, key=lambda held: held.expires_at).lease_id]
            elif unfair is not None:
                return unfair
            else:
                return self._refuse(model, caller, now, Refused(Refusal.LANE_FULL))
        self._admitted += 1
        execution = _Execution(execution_id, caller, _work(work_s), self._admitted)
        self._lane_of[execution_id] = model
        # A non-empty queue means no slot could take it (the lane or the node is full): wait behind it.
        if not lane.queue and len(lane.running) < self._slots[model] and self.running() < self._max_running:
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
        takes one); False if `caller` holds no such live lease. The holder's debt grows by the
        fraction of the lease's life it held the place."""
        self._purge(now)
        lease = self._leases.get(lease_id)
        if lease is None or lease.caller != caller:
            return False
        del self._leases[lease_id]
        held = (now - lease.granted_at) / max(lease.expires_at - lease.granted_at, 1e-9)
        self._owe(caller, min(max(held, 0.0), 1.0), now)
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

    def expired_unused(self, now: float) -> tuple[ExpiredLease, ...]:
        """The leases that expired unused since the last call (for the shell to log), oldest first."""
        self._purge(now)
        expired, self._expired = tuple(self._expired), []
        return expired

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

    def set_lane_slots(self, model: str, slots: int, now: float) -> tuple[str, ...]:
        """The runtime now runs `slots` of `model` at once. Fewer: the running beyond it finish
        first. More: the queued that now fit start; their ids are returned."""
        self._purge(now)
        if model not in self._slots:
            return ()
        self._slots[model] = max(slots, 1)
        started = []
        while (promoted := self._promote(now)) is not None:
            started.append(promoted)
        return tuple(started)

    def lane_slots(self, model: str) -> int:
        """The running places of `model`'s lane (0 for a model this node does not serve)."""
        return self._slots.get(model, 0)

    def occupied(self, model: str, now: float) -> int:
        """Places of the lane taken by running or queued executions or live leases."""
        self._purge(now)
        lane = self._lanes.get(model)
        if lane is None:
            return 0
        return len(lane.running) + len(lane.queue) + sum(1 for lease in self._leases.values() if lease.model == model)

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

    def debt(self, caller: str, now: float) -> float:
        """How many unused leases `caller` owes, decayed to `now`."""
        self._purge(now)
        return self._debt_at(caller, now)

    def _debt_at(self, caller: str, now: float) -> float:
        amount, since = self._debt.get(caller, (0.0, now))
        return amount * 0.5 ** (max(now - since, 0.0) / DEBT_HALF_LIFE_S)

    def share(self, model: str, caller: str, now: float) -> int | None:
        """How many of the lane's places `caller` may hold now; None while nobody else wants them."""
        self._purge(now)
        lane = self._lanes.get(model)
        if lane is None or not self._contended(model, lane, caller, now):
            return None
        return self._share_of(model, lane, caller, now)[0]

    # ---- fairness ----

    def _held(self, model: str, lane: _Lane, caller: str) -> int:
        return (sum(1 for e in lane.running.values() if e.caller == caller)
                + sum(1 for e in lane.queue.values() if e.caller == caller)
                + sum(1 for lease in self._leases.values() if lease.model == model and lease.caller == caller))

    def _contended(self, model: str, lane: _Lane, caller: str, now: float) -> bool:
        """Another caller waits in this lane's queue, or was refused a place on it recently."""
        return (any(e.caller != caller for e in lane.queue.values())
                or any(other != caller and now - at < CONTENTION_WINDOW_S
                       for other, at in self._refused[model].items()))

    def _share_of(self, model: str, lane: _Lane, caller: str, now: float) -> tuple[int, int, int]:
        """(share, callers wanting the lane, whole unused leases owed)."""
        active = {other for other, at in self._asked[model].items() if now - at < CONTENTION_WINDOW_S}
        active |= {other for other, at in self._refused[model].items() if now - at < CONTENTION_WINDOW_S}
        active |= {e.caller for e in (*lane.running.values(), *lane.queue.values())}
        active |= {lease.caller for lease in self._leases.values() if lease.model == model}
        active.add(caller)
        owed = round(self._debt_at(caller, now))
        places = self._slots[model] + self.queue_limit
        return max(1, math.ceil(places / len(active)) - owed), len(active), owed

    def _over_share(self, model: str, lane: _Lane, caller: str, now: float) -> Refused | None:
        """A refusal if `caller` already holds its fair share of a lane others want."""
        if not self._contended(model, lane, caller, now):
            return None
        share, wanting, owed = self._share_of(model, lane, caller, now)
        held = self._held(model, lane, caller)
        if held < share:
            return None
        places = self._slots[model] + self.queue_limit
        if owed:
            detail = (f"{owed} of your leases here expired unused, so your share of this model's {places} places "
                      f"is {share} while {wanting} callers want them; execute on the leases you take "
                      f"(that count halves every {DEBT_HALF_LIFE_S:g} s)")
        else:
            detail = (f"you hold {held} of this model's {places} places here and your fair share is {share} while "
                      f"{wanting} callers want them; execute on what you hold, or wait")
        return Refused(Refusal.FAIR_SHARE, detail)

    def _refuse(self, model: str, caller: str, now: float, refusal: Refused) -> Refused:
        """Refuse for want of room, remembering that `caller` wants a place on the lane. (A
        refusal for being over its share is not remembered: it must not cap the others.)"""
        self._note(self._refused[model], caller, now)
        return refusal

    def _note(self, table: dict[str, float], caller: str, now: float) -> None:
        """Remember when `caller` did something, forgetting the oldest beyond the cap."""
        table.pop(caller, None)
        table[caller] = now  # insertion order = oldest first
        while len(table) > self._max_callers:
            del table[next(iter(table))]

    def _owe(self, caller: str, amount: float, now: float) -> None:
        if amount <= 0:
            return
        self._debt[caller] = (self._debt_at(caller, now) + amount, now)
        if len(self._debt) > self._max_callers:
            # Forget the smallest debt: the worst hoarders stay remembered.
            del self._debt[min(self._debt, key=lambda other: self._debt_at(other, now))]

    # ---- the arithmetic ----

    def _select(self, model: str | None) -> list[_Lane]:
        if model is None:
            return list(self._lanes.values())
        lane = self._lanes.get(model)
        return [lane] if lane is not None else []

    def _free(self, model: str, lane: _Lane) -> int:
        """Places of the lane that neither an execution nor a live lease holds."""
        leased = sum(1 for lease in self._leases.values() if lease.model == model)
        return self._slots[model] + self.queue_limit - len(lane.running) - len(lane.queue) - leased

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
        heads = [(next(iter(lane.queue.values())), lane) for model, lane in self._lanes.items()
                 if lane.queue and len(lane.running) < self._slots[model]]
        if not heads:
            return None
        execution, lane = min(heads, key=lambda head: head[0].order)
        del lane.queue[execution.execution_id]
        lane.running[execution.execution_id] = replace(execution, started_at=now)
        return execution.execution_id

    def _purge(self, now: float) -> None:
        """Forget expired leases: their places are free again, and their holders owe them."""
        for lease_id in [key for key, lease in self._leases.items() if now >= lease.expires_at]:
            lease = self._leases.pop(lease_id)
            self._owe(lease.caller, 1.0, lease.expires_at)
            if len(self._expired) < self._max_leases:  # bounded even if the shell never reads it
                self._expired.append(ExpiredLease(lease.lease_id, lease.model, lease.caller, lease.granted_at,
                                                  lease.expires_at, lease.about))
        for caller in [c for c in self._debt if self._debt_at(c, now) < FORGOTTEN_DEBT]:
            del self._debt[caller]
        for table in (*self._asked.values(), *self._refused.values()):
            while table and now - next(iter(table.values())) >= CONTENTION_WINDOW_S:
                del table[next(iter(table))]
