"""Admission as a pure state machine: leases, slots, bounded queues and caps, time passed as `now`."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from orc.node.worker.admission import (
    CONTENTION_WINDOW_S,
    DEBT_HALF_LIFE_S,
    DEFAULT_QUEUE_LIMIT,
    LEASE_SECONDS,
    Admission,
    ExpiredLease,
    Offered,
    Queued,
    Refusal,
    Refused,
    Running,
)
from orc.node.worker.admission_config import DEFAULT_SLOTS, AdmissionConfig, BadAdmissionConfig, admission_config

SMOL = "smollm2-135m-instruct@llama_cpp"
GEMMA = "gemma3-270m@llama_cpp"


def admission(models=(SMOL,), **limits) -> Admission:
    counter = itertools.count(1)
    return Admission(models, new_id=lambda: f"lease-{next(counter)}", **limits)


def lease(decision) -> str:
    assert isinstance(decision, Offered), decision
    return decision.lease_id


# ---- offers and leases ----

def test_an_offer_holds_a_place_until_its_lease_expires():
    a = admission()
    offered = a.offer(SMOL, "alice", 3.0, now=100.0)
    assert offered == Offered("lease-1", 100.0 + LEASE_SECONDS, 3.0)
    assert a.leases(100.0) == 1 and a.backlog(100.0) == 3.0
    assert a.leases(100.0 + LEASE_SECONDS - 0.001) == 1
    assert a.leases(100.0 + LEASE_SECONDS) == 0 and a.backlog(100.0 + LEASE_SECONDS) == 0.0


def test_unknown_models_get_no_lane():
    a = admission()
    assert a.offer("gpt-9@llama_cpp", "alice", 1.0, 0.0) == Refused(Refusal.UNKNOWN_MODEL)
    assert a.admit("gpt-9@llama_cpp", "alice", None, "e1", 1.0, 0.0) == Refused(Refusal.UNKNOWN_MODEL)
    assert a.running() == 0 and a.queued() == 0 and a.leases(0.0) == 0
    assert a.backlog(0.0, "gpt-9@llama_cpp") == 0.0 and a.running("gpt-9@llama_cpp") == 0


def test_a_lease_converts_into_its_execution():
    a = admission()
    held = lease(a.offer(SMOL, "alice", 2.0, 0.0))
    assert a.admit(SMOL, "alice", held, "e1", 2.0, 1.0) == Running("e1")
    assert a.leases(1.0) == 0 and a.running(SMOL) == 1
    assert a.admit(SMOL, "alice", held, "e2", 2.0, 1.0) == Queued("e2", 1)  # spent: free room only


def test_a_lease_holds_its_place_against_other_callers():
    a = admission(slots=1, queue_limit=1)
    held = [lease(a.offer(SMOL, "alice", 1.0, 0.0)) for _ in range(2)]
    assert a.offer(SMOL, "bob", 1.0, 0.0) == Refused(Refusal.LANE_FULL)
    assert a.admit(SMOL, "bob", None, "b1", 1.0, 0.0) == Refused(Refusal.LANE_FULL)
    assert a.admit(SMOL, "bob", "no-such-lease", "b1", 1.0, 0.0) == Refused(Refusal.LANE_FULL)
    assert a.admit(SMOL, "alice", held[0], "a1", 1.0, 0.0) == Running("a1")
    assert a.admit(SMOL, "alice", held[1], "a2", 1.0, 0.0) == Queued("a2", 1)


def test_a_foreign_lease_is_not_usable_and_stays_its_owners():
    a = admission(slots=1, queue_limit=0)
    alices = lease(a.offer(SMOL, "alice", 1.0, 0.0))
    assert a.admit(SMOL, "bob", alices, "b1", 1.0, 0.0) == Refused(Refusal.LANE_FULL)
    assert a.leases(0.0) == 1
    assert a.admit(SMOL, "alice", alices, "a1", 1.0, 0.0) == Running("a1")


def test_a_lease_on_another_model_is_not_usable_here():
    a = admission((SMOL, GEMMA), slots=1, queue_limit=0)
    on_gemma = lease(a.offer(GEMMA, "alice", 1.0, 0.0))
    bobs = lease(a.offer(SMOL, "bob", 1.0, 0.0))
    assert a.admit(SMOL, "alice", on_gemma, "a1", 1.0, 0.0) == Refused(Refusal.LANE_FULL)
    assert a.leases(0.0, GEMMA) == 1 and a.leases(0.0, SMOL) == 1
    assert a.admit(SMOL, "bob", bobs, "b1", 1.0, 0.0) == Running("b1")


def test_an_expired_lease_gives_only_free_room():
    a = admission(slots=1, queue_limit=0)
    old = lease(a.offer(SMOL, "alice", 1.0, 0.0))
    lease(a.offer(SMOL, "bob", 1.0, LEASE_SECONDS))  # alice's place came free; bob took it
    assert a.admit(SMOL, "alice", old, "a1", 1.0, LEASE_SECONDS) == Refused(Refusal.LANE_FULL)
    assert a.admit(SMOL, "alice", old, "a1", 1.0, 2 * LEASE_SECONDS) == Running("a1")  # bob's expired too


def test_without_its_lease_id_a_caller_may_use_a_place_it_holds():
    a = admission(slots=1, queue_limit=0)
    lease(a.offer(SMOL, "alice", 1.0, 0.0))
    assert a.admit(SMOL, "alice", "", "a1", 1.0, 0.0) == Running("a1")
    assert a.leases(0.0) == 0  # the place it used was its lease's: the lease is spent


def test_free_room_is_used_before_a_callers_own_lease():
    a = admission(slots=1, queue_limit=1)
    lease(a.offer(SMOL, "alice", 1.0, 0.0))
    assert a.admit(SMOL, "alice", None, "a1", 1.0, 0.0) == Running("a1")
    assert a.leases(0.0) == 1


def test_several_own_leases_spend_the_soonest_to_expire_first():
    a = admission(slots=1, queue_limit=1)
    lease(a.offer(SMOL, "alice", 1.0, 0.0))
    later = lease(a.offer(SMOL, "alice", 1.0, 1.0))
    assert a.admit(SMOL, "alice", None, "a1", 1.0, 1.0) == Running("a1")
    assert a.leases(LEASE_SECONDS) == 1  # the one from t=0 is spent; the later one lives on
    assert a.admit(SMOL, "alice", later, "a2", 1.0, LEASE_SECONDS) == Queued("a2", 1)


def test_two_callers_racing_for_the_last_place_one_wins():
    a = admission(slots=1, queue_limit=0)
    offers = [a.offer(SMOL, caller, 1.0, 0.0) for caller in ("alice", "bob")]
    assert sum(isinstance(o, Offered) for o in offers) == 1
    assert offers[1] == Refused(Refusal.LANE_FULL)

    b = admission(slots=1, queue_limit=0)
    admitted = [b.admit(SMOL, caller, None, f"{caller}-1", 1.0, 0.0) for caller in ("alice", "bob")]
    assert admitted == [Running("alice-1"), Refused(Refusal.LANE_FULL)]


# ---- slots and the queue ----

def test_beyond_the_slots_executions_wait_in_a_bounded_queue():
    a = admission(slots=1, queue_limit=4)
    decisions = [a.admit(SMOL, "alice", None, f"e{i}", 1.0, 0.0) for i in range(6)]
    assert decisions == [Running("e0"), Queued("e1", 1), Queued("e2", 2), Queued("e3", 3), Queued("e4", 4),
                         Refused(Refusal.LANE_FULL)]
    assert a.offer(SMOL, "bob", 1.0, 0.0) == Refused(Refusal.LANE_FULL)
    assert a.running() == 1 and a.queued() == 4 and a.queued(SMOL) == 4


def test_more_slots_run_more_at_once():
    a = admission(slots=2, queue_limit=1)
    decisions = [a.admit(SMOL, "alice", None, f"e{i}", 1.0, 0.0) for i in range(4)]
    assert decisions == [Running("e0"), Running("e1"), Queued("e2", 1), Refused(Refusal.LANE_FULL)]


def test_finishing_promotes_the_oldest_queued_execution():
    a = admission(slots=1, queue_limit=4)
    for i in range(4):
        a.admit(SMOL, "alice", None, f"e{i}", 1.0, 0.0)
    assert a.finish("e0", 1.0) == "e1"
    assert a.status("e1") == Running("e1") and a.status("e2") == Queued("e2", 1) and a.status("e0") is None
    assert a.finish("e1", 2.0) == "e2"
    assert a.finish("e2", 3.0) == "e3"
    assert a.finish("e3", 4.0) is None
    assert a.running() == 0 and a.queued() == 0


def test_a_new_execution_waits_behind_the_queue_not_beside_it():
    a = admission((SMOL, GEMMA), slots=1, queue_limit=2, max_running=1)
    assert a.admit(SMOL, "alice", None, "s1", 1.0, 0.0) == Running("s1")
    assert a.admit(GEMMA, "alice", None, "g1", 1.0, 0.0) == Queued("g1", 1)  # the node is at max_running
    assert a.admit(GEMMA, "alice", None, "g2", 1.0, 0.0) == Queued("g2", 2)


def test_promotion_is_oldest_first_across_lanes_when_the_node_is_full():
    a = admission((SMOL, GEMMA), slots=2, queue_limit=2, max_running=2)
    assert a.admit(SMOL, "alice", None, "s1", 1.0, 0.0) == Running("s1")
    assert a.admit(SMOL, "alice", None, "s2", 1.0, 0.0) == Running("s2")
    assert a.admit(GEMMA, "alice", None, "g1", 1.0, 0.0) == Queued("g1", 1)  # node full, lane not
    assert a.admit(SMOL, "alice", None, "s3", 1.0, 0.0) == Queued("s3", 1)
    assert a.finish("s1", 1.0) == "g1"  # older than s3, and its lane has a free slot
    assert a.finish("g1", 2.0) == "s3"
    assert a.running() == 2 and a.queued() == 0


def test_finishing_a_queued_execution_promotes_nothing():
    a = admission(slots=1)
    a.admit(SMOL, "alice", None, "e0", 1.0, 0.0)
    a.admit(SMOL, "alice", None, "e1", 1.0, 0.0)
    a.admit(SMOL, "alice", None, "e2", 1.0, 0.0)
    assert a.finish("e1", 1.0) is None
    assert a.status("e0") == Running("e0") and a.status("e2") == Queued("e2", 1)
    assert a.finish("nobody", 1.0) is None


def test_cancel_takes_a_queued_execution_out_of_the_queue():
    a = admission(slots=1)
    for i in range(4):
        a.admit(SMOL, "alice", None, f"e{i}", 1.0, 0.0)
    assert a.cancel("e1", 1.0) is True
    assert a.status("e1") is None and a.status("e2") == Queued("e2", 1) and a.queued() == 2
    assert a.cancel("e1", 1.0) is False  # already gone
    assert a.cancel("e0", 1.0) is False  # running: the shell stops it and calls finish
    assert a.finish("e0", 2.0) == "e2"  # the cancelled one is skipped
    assert a.admit(SMOL, "alice", None, "e1", 1.0, 2.0) == Queued("e1", 2)  # its id is free again


def test_an_execution_id_is_admitted_once_at_a_time():
    a = admission(slots=1)
    assert a.admit(SMOL, "alice", None, "e1", 1.0, 0.0) == Running("e1")
    assert a.admit(SMOL, "bob", None, "e1", 1.0, 0.0) == Refused(Refusal.DUPLICATE)
    a.finish("e1", 1.0)
    assert a.admit(SMOL, "alice", None, "e1", 1.0, 1.0) == Running("e1")


def test_a_refused_duplicate_keeps_the_lease_it_quoted():
    a = admission(slots=1)
    a.admit(SMOL, "alice", None, "e1", 1.0, 0.0)
    held = lease(a.offer(SMOL, "alice", 1.0, 0.0))
    assert a.admit(SMOL, "alice", held, "e1", 1.0, 0.0) == Refused(Refusal.DUPLICATE)
    assert a.leases(0.0) == 1


# ---- caps ----

def test_one_caller_cannot_hold_more_than_its_share_of_leases():
    a = admission(slots=10, queue_limit=10, max_leases_per_caller=2)
    lease(a.offer(SMOL, "mallory", 1.0, 0.0))
    lease(a.offer(SMOL, "mallory", 1.0, 0.0))
    assert a.offer(SMOL, "mallory", 1.0, 0.0) == Refused(Refusal.CALLER_LEASES)
    assert isinstance(a.offer(SMOL, "alice", 1.0, 0.0), Offered)
    assert isinstance(a.offer(SMOL, "mallory", 1.0, LEASE_SECONDS), Offered)  # expired ones no longer count


def test_the_node_keeps_a_bounded_number_of_leases():
    a = admission(slots=10, queue_limit=10, max_leases=3)
    for caller in ("a", "b", "c"):
        lease(a.offer(SMOL, caller, 1.0, 0.0))
    assert a.offer(SMOL, "d", 1.0, 0.0) == Refused(Refusal.NODE_LEASES)
    assert isinstance(a.offer(SMOL, "d", 1.0, LEASE_SECONDS), Offered)


def test_the_node_runs_a_bounded_number_of_executions_across_models():
    a = admission((SMOL, GEMMA), slots=4, queue_limit=0, max_running=3)
    decisions = [a.admit(model, "alice", None, f"{model}-{i}", 1.0, 0.0) for model in (SMOL, GEMMA) for i in range(2)]
    assert decisions[:3] == [Running(f"{SMOL}-0"), Running(f"{SMOL}-1"), Running(f"{GEMMA}-0")]
    assert decisions[3] == Queued(f"{GEMMA}-1", 1)  # a lane's places, but no running slot left on the node
    assert a.running() == 3


def test_impossible_limits_are_refused_up_front():
    for limits in ({"slots": 0}, {"queue_limit": -1}, {"max_running": 0}):
        with pytest.raises(ValueError):
            admission(**limits)


# ---- the backlog and the estimate ----

def test_backlog_counts_what_is_left_of_running_work_plus_queued_and_leased():
    a = admission(slots=1, queue_limit=4)
    a.admit(SMOL, "alice", None, "e0", 10.0, 0.0)
    a.admit(SMOL, "alice", None, "e1", 4.0, 0.0)
    lease(a.offer(SMOL, "bob", 3.0, 1.0))
    assert a.backlog(2.0) == pytest.approx(8.0 + 4.0 + 3.0)
    assert a.backlog(2.0, SMOL) == pytest.approx(15.0)
    assert a.backlog(12.0) == pytest.approx(0.0 + 4.0 + 0.0)  # e0 overran its estimate; bob's lease expired
    assert a.finish("e0", 12.0) == "e1"
    assert a.backlog(13.0) == pytest.approx(3.0)  # e1 started at 12


def test_an_offer_estimates_the_lane_backlog_shared_by_its_slots_plus_its_own_work():
    a = admission(slots=1, queue_limit=4)
    a.admit(SMOL, "alice", None, "e0", 10.0, 0.0)
    a.admit(SMOL, "alice", None, "e1", 4.0, 0.0)
    assert a.offer(SMOL, "bob", 1.0, 2.0).estimate_s == pytest.approx(8.0 + 4.0 + 1.0)

    b = admission(slots=2, queue_limit=4)
    b.admit(SMOL, "alice", None, "e0", 10.0, 0.0)
    b.admit(SMOL, "alice", None, "e1", 4.0, 0.0)
    assert b.offer(SMOL, "bob", 1.0, 2.0).estimate_s == pytest.approx((8.0 + 2.0) / 2 + 1.0)


def test_each_lane_runs_as_many_as_its_runtime_runs_at_once():
    a = admission((SMOL, GEMMA), lane_slots={SMOL: 3}, slots=1, queue_limit=1)
    assert (a.lane_slots(SMOL), a.lane_slots(GEMMA), a.lane_slots("other")) == (3, 1, 0)
    assert [a.admit(SMOL, "alice", None, f"s{i}", 1.0, 0.0) for i in range(4)] == [
        Running("s0"), Running("s1"), Running("s2"), Queued("s3", 1)]
    assert a.admit(SMOL, "alice", None, "s4", 1.0, 0.0) == Refused(Refusal.LANE_FULL)  # 3 + 1 places
    assert a.admit(GEMMA, "alice", None, "g0", 1.0, 0.0) == Running("g0")
    assert a.admit(GEMMA, "alice", None, "g1", 1.0, 0.0) == Queued("g1", 1)
    assert a.finish("s0", 1.0) == "s3"  # a freed batch place goes to the lane's queue
    with pytest.raises(ValueError):
        admission(lane_slots={SMOL: 0})


def test_a_free_batch_place_starts_at_once_and_a_full_batch_waits_for_its_lane():
    a = admission(lane_slots={SMOL: 2}, queue_limit=4)
    a.admit(SMOL, "alice", None, "e0", 10.0, 0.0)
    assert a.occupied(SMOL, 2.0) == 1
    # A place is free: it joins the running one now (its work, given at batch size 2, is all).
    joined = a.offer(SMOL, "bob", 3.0, 2.0)
    assert joined.estimate_s == pytest.approx(3.0) and a.occupied(SMOL, 2.0) == 2
    # Both places taken (a running execution and bob's lease): the lane's work, two at a time, first.
    assert a.offer(SMOL, "carol", 1.0, 2.0).estimate_s == pytest.approx((8.0 + 3.0) / 2 + 1.0)


def test_fair_shares_count_the_places_of_the_lane():
    a = admission(lane_slots={SMOL: 4}, queue_limit=2)  # 6 places
    for _ in range(6):
        lease(a.offer(SMOL, "alice", 1.0, 0.0))
    assert a.offer(SMOL, "bob", 1.0, 0.0) == Refused(Refusal.LANE_FULL)
    assert a.share(SMOL, "alice", 0.1) == 3  # ceil(6 / 2)


def test_lanes_have_their_own_backlogs_and_the_node_their_sum():
    a = admission((SMOL, GEMMA))
    a.admit(SMOL, "alice", None, "s", 5.0, 0.0)
    a.admit(GEMMA, "alice", None, "g", 7.0, 0.0)
    assert a.backlog(0.0, SMOL) == 5.0 and a.backlog(0.0, GEMMA) == 7.0 and a.backlog(0.0) == 12.0
    assert a.offer(GEMMA, "bob", 1.0, 0.0).estimate_s == pytest.approx(8.0)  # not behind smol's work


def test_nonsense_work_estimates_count_as_none():
    a = admission(slots=1)
    a.admit(SMOL, "alice", None, "e0", -5.0, 0.0)
    a.admit(SMOL, "alice", None, "e1", math.nan, 0.0)
    offered = a.offer(SMOL, "bob", math.nan, 0.0)
    assert a.backlog(0.0) == 0.0 and offered.estimate_s == 0.0


# ---- the invariants, under a long random mix of everything ----

def test_the_limits_hold_under_any_sequence_of_calls():
    rng = random.Random(7)
    models, callers = (SMOL, GEMMA), ("alice", "bob", "carol")
    slots, queue_limit, max_running = {SMOL: 2, GEMMA: 3}, 3, 4
    a = admission(models, lane_slots=slots, queue_limit=queue_limit, max_running=max_running,
                  max_leases_per_caller=4, max_leases=7)
    leases: list[tuple[str, str, str]] = []  # (lease id, caller, model), some long expired
    admitted: set[str] = set()
    now = 0.0
    for step in range(3000):
        now += rng.choice((0.0, 0.1, 0.5, 2.0))
        op = rng.random()
        model, caller = rng.choice(models), rng.choice(callers)
        if op < 0.3:
            decision = a.offer(model, caller, rng.uniform(0, 5), now)
            if isinstance(decision, Offered):
                leases.append((decision.lease_id, caller, model))
        elif op < 0.6:
            quoted = rng.choice(leases)[0] if leases and rng.random() < 0.7 else None
            decision = a.admit(model, caller, quoted, f"x{step}", rng.uniform(0, 5), now)
            if not isinstance(decision, Refused):
                admitted.add(f"x{step}")
        elif op < 0.85 and admitted:
            done = rng.choice(sorted(admitted))
            promoted = a.finish(done, now)
            admitted.discard(done)
            assert promoted is None or a.status(promoted) == Running(promoted)
        elif admitted:
            gone = rng.choice(sorted(admitted))
            if a.cancel(gone, now):
                admitted.discard(gone)
        assert a.running() <= max_running and a.leases(now) <= 7
        for name in models:
            assert a.running(name) <= slots[name]
            assert a.running(name) + a.queued(name) + a.leases(now, name) <= slots[name] + queue_limit
            # Nothing waits that could run: a queue exists only while its lane or the node is full.
            if a.queued(name):
                assert a.running(name) == slots[name] or a.running() == max_running
        assert all(a.status(e) is not None for e in admitted)


def test_a_lease_its_holder_gives_back_frees_its_place_at_once():
    a = admission(queue_limit=0)
    held = lease(a.offer(SMOL, "bob", 2.0, 0.0))
    assert a.backlog(0.0) == 2.0
    assert a.release(held, "eve", 0.1) is False  # only its holder may give it back
    assert a.offer(SMOL, "eve", 1.0, 0.1) == Refused(Refusal.LANE_FULL)
    assert a.release(held, "bob", 0.2) is True and a.release(held, "bob", 0.2) is False
    assert a.backlog(0.2) == 0.0 and a.leases(0.2) == 0
    assert isinstance(a.offer(SMOL, "eve", 1.0, 0.3), Offered)


def test_the_config_section_sets_slots_and_queue_and_refuses_nonsense():
    assert DEFAULT_SLOTS == 4  # the default capacity: four sequences of a model decoded together
    assert admission_config({"admission": {"slots": 16}}).slots == 16
    assert admission_config(None) == admission_config({}) == AdmissionConfig(DEFAULT_SLOTS, DEFAULT_QUEUE_LIMIT)
    assert admission_config({"admission": {"slots": 2, "queue": 0}}) == AdmissionConfig(2, 0)
    assert admission_config({"discovery": {"mdns": False}}) == AdmissionConfig()
    for section, words in (({"slots": 0}, "slots: must be a whole number from 1"),
                           ({"queue": -1}, "queue: must be a whole number from 0"),
                           ({"slots": True}, "slots"), ({"slots": "2"}, "slots"), ({"slot": 2}, "unknown key 'slot'"),
                           ({"queue": 10_000}, "queue"), ({"slots": 17}, "slots: must be a whole number from 1 to 16"),
                           ("lots", "must be a mapping")):
        with pytest.raises(BadAdmissionConfig, match=words):
            admission_config({"admission": section}, "cfg.yaml")


# ---- fair shares and the debt of unused leases ----

def test_alone_on_a_lane_a_caller_may_take_every_place():
    a = admission(slots=1, queue_limit=4)
    assert all(isinstance(a.offer(SMOL, "mallory", 1.0, 0.0), Offered) for _ in range(5))
    assert a.share(SMOL, "mallory", 0.0) is None  # nobody else wants the lane: no cap


def test_once_another_caller_is_refused_each_holds_at_most_its_share():
    a = admission(slots=1, queue_limit=4)  # 5 places
    for _ in range(5):
        lease(a.offer(SMOL, "mallory", 1.0, 0.0))
    assert a.offer(SMOL, "home", 1.0, 0.1) == Refused(Refusal.LANE_FULL)  # now home wants a place too
    # mallory's leases run out unused; its next offers meet the share of two callers, less its debt.
    later = LEASE_SECONDS + 0.1
    assert a.debt("mallory", later) == pytest.approx(5 * 0.5 ** (0.1 / DEBT_HALF_LIFE_S))
    assert a.share(SMOL, "mallory", later) == 1  # ceil(5 / 2) = 3, less 5 owed, at least 1
    lease(a.offer(SMOL, "mallory", 1.0, later))
    refused = a.offer(SMOL, "mallory", 1.0, later)
    assert isinstance(refused, Refused) and refused.why is Refusal.FAIR_SHARE
    assert refused.reason.startswith("5 of your leases here expired unused, so your share of this model's 5 places "
                                     "is 1 while 2 callers want them")
    # The node's own runs take the rest (mallory's refusal for its share does not cap them).
    assert all(isinstance(a.admit(SMOL, "home", None, f"h{i}", 1.0, later), (Running, Queued)) for i in range(4))
    assert a.admit(SMOL, "home", None, "h5", 1.0, later) == Refused(Refusal.LANE_FULL)


def test_without_debt_the_share_is_the_places_divided_by_the_callers_wanting_them():
    a = admission(slots=1, queue_limit=3)  # 4 places
    lease(a.offer(SMOL, "bob", 1.0, 0.0))
    for _ in range(3):
        lease(a.offer(SMOL, "alice", 1.0, 0.0))
    assert a.admit(SMOL, "carol", None, "c1", 1.0, 0.0) == Refused(Refusal.LANE_FULL)
    # Three callers want the lane: alice may hold ceil(4 / 3) = 2 places, bob too.
    refused = a.offer(SMOL, "alice", 1.0, 0.1)
    assert isinstance(refused, Refused) and refused.why is Refusal.FAIR_SHARE
    assert refused.reason == ("you hold 3 of this model's 4 places here and your fair share is 2 while 3 callers "
                              "want them; execute on what you hold, or wait")
    assert a.share(SMOL, "bob", 0.1) == 2
    assert a.offer(SMOL, "bob", 1.0, 0.1) == Refused(Refusal.LANE_FULL)  # under its share, but no room
    assert a.offer(SMOL, "carol", 1.0, LEASE_SECONDS) != Refused(Refusal.LANE_FULL)  # room again


def test_executing_on_a_held_lease_is_never_refused_by_the_share():
    a = admission(slots=1, queue_limit=2)
    held = [lease(a.offer(SMOL, "alice", 1.0, 0.0)) for _ in range(3)]
    assert a.offer(SMOL, "bob", 1.0, 0.0) == Refused(Refusal.LANE_FULL)
    assert [a.admit(SMOL, "alice", h, f"a{i}", 1.0, 0.1) for i, h in enumerate(held)] == [
        Running("a0"), Queued("a1", 1), Queued("a2", 2)]
    assert a.debt("alice", 0.1) == 0.0


def test_contention_ends_when_the_refused_caller_stops_asking():
    a = admission(slots=1, queue_limit=1)
    lease(a.offer(SMOL, "alice", 1.0, 0.0))
    lease(a.offer(SMOL, "alice", 1.0, 0.0))
    assert a.offer(SMOL, "bob", 1.0, 0.0) == Refused(Refusal.LANE_FULL)
    quiet = CONTENTION_WINDOW_S
    assert a.share(SMOL, "alice", quiet - 1.0) == 1  # two leases expired unused: ceil(2 / 2) - 2, at least 1
    assert a.share(SMOL, "alice", quiet) is None  # bob has not asked for a whole window
    assert all(isinstance(a.offer(SMOL, "alice", 1.0, quiet), Offered) for _ in range(2))


def test_debt_halves_every_half_life_and_small_debts_are_forgotten():
    a = admission(slots=1, queue_limit=0)
    lease(a.offer(SMOL, "alice", 1.0, 0.0))
    expired_at = LEASE_SECONDS
    assert a.debt("alice", expired_at) == pytest.approx(1.0)
    assert a.debt("alice", expired_at + DEBT_HALF_LIFE_S) == pytest.approx(0.5)
    assert a.debt("alice", expired_at + 2 * DEBT_HALF_LIFE_S) == pytest.approx(0.25)
    a.leases(expired_at + 10 * DEBT_HALF_LIFE_S)  # any call purges
    assert "alice" not in a._debt


def test_a_lease_given_back_at_once_costs_next_to_nothing_and_one_held_long_costs_its_share():
    a = admission(slots=2, queue_limit=0)
    quick = lease(a.offer(SMOL, "alice", 1.0, 0.0))
    assert a.release(quick, "alice", 0.2)
    assert a.debt("alice", 0.2) == pytest.approx(0.2 / LEASE_SECONDS)
    slow = lease(a.offer(SMOL, "bob", 1.0, 0.0))
    assert a.release(slow, "bob", LEASE_SECONDS * 0.9)
    assert a.debt("bob", LEASE_SECONDS * 0.9) == pytest.approx(0.9)


def test_expired_leases_are_reported_once_with_what_they_were_for():
    a = admission(slots=1, queue_limit=1)
    first = lease(a.offer(SMOL, "alice", 1.0, 0.0, about=("run1", "critic")))
    used = lease(a.offer(SMOL, "alice", 1.0, 0.0))
    a.admit(SMOL, "alice", used, "e1", 1.0, 1.0)
    assert a.expired_unused(1.0) == ()
    assert a.expired_unused(LEASE_SECONDS) == (
        ExpiredLease(first, SMOL, "alice", 0.0, LEASE_SECONDS, ("run1", "critic")),)
    assert a.expired_unused(LEASE_SECONDS) == ()


def test_tables_of_callers_stay_bounded():
    a = admission(slots=16, queue_limit=64, max_callers=8, max_leases=16)
    now = 0.0
    for i in range(200):
        now += 0.01
        decision = a.offer(SMOL, f"caller{i}", 1.0, now)
        if isinstance(decision, Offered) and i % 2:
            a.release(decision.lease_id, f"caller{i}", now + 0.001)
    assert len(a._asked[SMOL]) <= 8 and len(a._refused[SMOL]) <= 8 and len(a._debt) <= 8
    assert len(a.expired_unused(now + LEASE_SECONDS)) <= 16
