"""Placement as a pure function: filtering with reasons, finish-time scoring, deterministic ties,
spreading within one `place` call and whole-DAG forecasts. Expected numbers are worked by hand."""

from __future__ import annotations

import random

import pytest

from orc.scheduler.placement import (
    PREFER_SLACK,
    UNMEASURED_DECODE_TOKENS_PER_S,
    ClusterView,
    Decision,
    Demand,
    Exclusion,
    HeldModel,
    NodeView,
    Occupancy,
    decode_rate,
    estimated_prompt_tokens,
    forecast,
    occupancy_of,
    place,
    slot_start,
)

NOW = 1000.0
MIB = 2**20
SHA = "a" * 64


def held(model_id="m", *, runtime="llama_cpp", sha=SHA, size=MIB, loaded=True, prefill=100.0, decode=10.0):
    return HeldModel(model_id, runtime, sha, size, loaded, prefill, decode)


def node(node_id, *models, alive=True, tags=(), memory=None, backlog=0.0, network=0.0, load=200e6):
    return NodeView(node_id, f"dev-{node_id}", alive, tuple(models) or (held(),), frozenset(tags), memory,
                    backlog, network, load)


def view(*nodes, coordinator="a"):
    return ClusterView(coordinator, tuple(nodes))


def demand(key="x", model_id="m", prompt=0, max_tokens=20, **kw):
    for name in ("require_tags", "prefer_tags", "exclude"):
        kw[name] = frozenset(kw.get(name, ()))
    return Demand(key, model_id, prompt, max_tokens, **kw)


def one(d, v, now=NOW):
    (decision,) = place([d], v, now)
    return decision


def reasons(decision):
    return {r.node_id: (r.reason, r.detail) for r in decision.rejected}


def test_each_exclusion_has_its_reason_and_a_readable_detail():
    v = view(node("a"), node("b", alive=False), node("c", held("other")),
             node("d", held(runtime="mlx")), node("e", held(sha="b" * 64)), node("f", tags={"gpu"}),
             node("g", tags={"fast"}), node("h", tags={"gpu", "fast"}))
    got = reasons(one(demand(require_tags={"gpu", "fast"}, exclude={"h"}), v))
    assert got == {
        "a": (Exclusion.MISSING_TAG, "missing tags fast, gpu"),
        "b": (Exclusion.DEAD, "dead (no beat from it)"),
        "c": (Exclusion.MISSING_TAG, "missing tags fast, gpu"),
        "d": (Exclusion.MISSING_TAG, "missing tags fast, gpu"),
        "e": (Exclusion.MISSING_TAG, "missing tags fast, gpu"),
        "f": (Exclusion.MISSING_TAG, "missing tag fast"),
        "g": (Exclusion.MISSING_TAG, "missing tag gpu"),
        "h": (Exclusion.FAILED, "failed earlier in this run (this generation failed there)"),
    }
    got = reasons(one(demand(runtime="llama_cpp", sha256="c" * 64), view(node("c", held("other")),
                                                                        node("d", held(runtime="mlx")))))
    assert got == {"c": (Exclusion.NO_MODEL, "no model 'm@llama_cpp'"),
                   "d": (Exclusion.NO_MODEL, "no model 'm@llama_cpp'")}
    got = reasons(one(demand(sha256="b" * 64), view(node("c", held("other")), node("e", held(sha="c" * 64)))))
    assert got == {"c": (Exclusion.NO_MODEL, "no model 'm'"),
                   "e": (Exclusion.NO_MODEL, "its 'm' has other weights (not sha256 bbbbbbbbbbbb…)")}


def test_a_runtime_pin_selects_that_variant():
    both = node("b", held(runtime="llama_cpp", decode=50.0), held(runtime="mlx", decode=10.0))
    assert one(demand(), view(both)).choice.runtime == "llama_cpp"  # the faster variant, unpinned
    assert one(demand(runtime="mlx"), view(both)).choice.runtime == "mlx"
    matching = node("b", held(runtime="llama_cpp", sha="c" * 64), held(runtime="mlx"))
    assert one(demand(sha256=SHA), view(matching)).choice.runtime == "mlx"


def test_memory_rejects_only_a_cold_model_that_does_not_fit():
    cold = held(size=1000 * MIB, loaded=False)  # needs 1000 MiB * 1.1 + 64 MiB = 1164 MiB
    v = view(node("b", cold, memory=1163 * MIB), node("c", cold, memory=1164 * MIB),
             node("d", held(size=1000 * MIB, loaded=True), memory=0), node("e", cold, memory=None))
    decision = one(demand(), v)
    assert reasons(decision) == {"b": (Exclusion.MEMORY, "memory does not fit (1164 MiB needed, 1163 MiB available)")}
    assert {c.node_id for c in decision.candidates} == {"c", "d", "e"}


def test_memory_is_judged_on_a_variant_that_fits():
    # GGUF and MLX variants under one id: the faster MLX one is too big, the GGUF one fits,
    # so the node can run the demand and must not be filtered out.
    b = node("b", held(runtime="mlx", size=4000 * MIB, loaded=False, decode=30.0),
             held(runtime="llama_cpp", size=1000 * MIB, loaded=False, decode=10.0), memory=2000 * MIB)
    decision = one(demand(), view(b))
    assert decision.rejected == ()
    assert decision.choice.runtime == "llama_cpp"


def test_check_order_when_a_node_fails_several_checks():
    dead_everything = node("b", held("other"), alive=False)
    assert reasons(one(demand(local_only=True, exclude={"b"}), view(node("a"), dead_everything)))["b"][0] \
        is Exclusion.LOCAL_ONLY
    assert reasons(one(demand(exclude={"b"}, require_tags={"gpu"}), view(dead_everything)))["b"][0] is Exclusion.FAILED
    assert reasons(one(demand(require_tags={"gpu"}), view(dead_everything)))["b"][0] is Exclusion.DEAD
    assert reasons(one(demand(require_tags={"gpu"}), view(node("b", held("other")))))["b"][0] is Exclusion.MISSING_TAG
    big = held(sha="c" * 64, size=10**12, loaded=False)
    assert reasons(one(demand(sha256=SHA), view(node("b", big, memory=0))))["b"][0] is Exclusion.NO_MODEL


def test_local_only_keeps_only_the_coordinator():
    v = view(node("c", held(decode=1000.0)), node("a", held(decode=1.0)), node("b", held(decode=1000.0)))
    decision = one(demand(local_only=True), v)
    assert [c.node_id for c in decision.candidates] == ["a"]
    assert reasons(decision) == {n: (Exclusion.LOCAL_ONLY, "local_only: the agent stays on the coordinator's device")
                                 for n in ("b", "c")}
    v = view(node("a", alive=False), node("b"), coordinator="a")
    decision = one(demand(local_only=True), v)
    assert decision.choice is None
    assert {r.node_id: r.reason for r in decision.rejected} == {"a": Exclusion.DEAD, "b": Exclusion.LOCAL_ONLY}


def test_finish_time_adds_start_load_prefill_decode_and_network():
    b = node("b", held(size=2 * 10**9, loaded=False, prefill=200.0, decode=25.0), backlog=3.0, network=0.5, load=1e9)
    a = node("a", held(prefill=100.0, decode=10.0), network=0.7)  # the coordinator: no network
    decision = one(demand(prompt=400, max_tokens=100), view(a, b))
    best, other = decision.candidates
    assert (best.node_id, best.start_s, best.load_s, best.prefill_s, best.decode_s, best.network_s) == \
        ("b", 1003.0, 2.0, 2.0, 4.0, 0.5)
    assert (best.work_s, best.finish_s, best.warm) == (8.0, 1011.5, False)
    assert (other.node_id, other.start_s, other.load_s, other.network_s, other.finish_s, other.warm) == \
        ("a", 1000.0, 0.0, 0.0, 1014.0, True)
    late = one(demand(prompt=400, max_tokens=100, ready_at=1005.0), view(a, b))
    assert {c.node_id: c.start_s for c in late.candidates} == {"a": 1005.0, "b": 1005.0}
    early = one(demand(ready_at=10.0), view(a))
    assert early.choice.start_s == NOW


def test_unmeasured_speeds_and_load_rate_fall_back_to_pessimistic_defaults():
    b = NodeView("b", "dev-b", True, (HeldModel("m", "llama_cpp", SHA, 400 * 10**6, False),))
    est = one(demand(prompt=100, max_tokens=50), view(b)).choice
    assert (est.load_s, est.prefill_s, est.decode_s) == (2.0, 2.0, 10.0)  # 200 MB/s, 50 tok/s, 5 tok/s


def test_a_faster_busier_node_loses_to_a_slower_idle_one_only_when_it_finishes_later():
    fast = held(decode=50.0)  # 100 tokens: 2 s
    slow = held(decode=10.0)  # 100 tokens: 10 s
    assert one(demand(max_tokens=100), view(node("b", fast, backlog=20.0), node("c", slow))).choice.node_id == "c"
    assert one(demand(max_tokens=100), view(node("b", fast, backlog=5.0), node("c", slow))).choice.node_id == "b"


def test_warm_wins_an_exact_tie_then_the_smaller_node_id():
    cold = node("b", held(size=400 * 10**6, loaded=False))  # 2 s to load
    warm = node("c", backlog=2.0)
    assert [c.node_id for c in one(demand(), view(warm, cold)).candidates] == ["c", "b"]
    assert [c.node_id for c in one(demand(), view(node("d"), node("c"), node("e"))).candidates] == ["c", "d", "e"]


def test_decisions_do_not_depend_on_the_order_of_nodes_in_the_view():
    nodes = [node(i, backlog=b) for i, b in zip("gbfcaed", (0.0, 1.0, 0.0, 1.0, 0.0, 2.0, 0.0))]
    demands = [demand(f"x{i}") for i in range(6)]
    expected = place(demands, view(*nodes), NOW)
    rng = random.Random(7)
    for _ in range(20):
        rng.shuffle(nodes)
        assert place(demands, view(*nodes), NOW) == expected
    assert [d.choice.node_id for d in expected] == ["a", "d", "f", "g", "b", "c"]


def test_a_preferred_tag_wins_within_the_slack_and_loses_beyond_it():
    assert PREFER_SLACK == 0.25
    pref = node("c", tags={"fast"})  # 20 tokens at 10 tok/s: finishes in 2 s
    quicker = node("b", held(decode=11.0))  # 1.82 s: within the slack
    quickest = node("b", held(decode=40.0))  # 0.5 s: far beyond it
    assert one(demand(prefer_tags={"fast"}), view(pref, quicker)).choice.node_id == "c"
    assert one(demand(), view(pref, quicker)).choice.node_id == "b"
    assert one(demand(prefer_tags={"fast"}), view(pref, quickest)).choice.node_id == "b"
    assert one(demand(prefer_tags={"fast"}), view(pref, quicker)).choice.preferred
    assert one(demand(prefer_tags={"slow"}), view(pref, quicker)).choice.node_id == "b"


def test_place_binds_highest_rank_first_and_spreads_identical_work():
    v = view(node("b"), node("c"), coordinator="z")  # each demand: 20 tokens at 10 tok/s = 2 s
    decisions = place([demand("a", rank=1.0), demand("z", rank=5.0), demand("m", rank=5.0)], v, NOW)
    assert [d.key for d in decisions] == ["m", "z", "a"]
    assert [(d.choice.node_id, d.choice.start_s) for d in decisions] == [("b", 1000.0), ("c", 1000.0), ("b", 1002.0)]
    busy = place([demand("p"), demand("q")], view(node("b", backlog=3.0), node("c", backlog=1.0)), NOW)
    assert [(d.choice.node_id, d.choice.start_s) for d in busy] == [("c", 1001.0), ("b", 1003.0)]


def test_probes_choice_and_why_none():
    decision = one(demand(), view(node("d"), node("b"), node("c", backlog=1.0)))
    assert [c.node_id for c in decision.probes()] == ["b", "d"]
    assert [c.node_id for c in decision.probes(1)] == ["b"]
    assert decision.choice is decision.candidates[0]
    none = one(demand(), view(node("b", alive=False), node("c", held("other"))))
    assert none.choice is None and none.probes() == ()
    assert none.why_none() == "dev-b: dead (no beat from it); dev-c: no model 'm'"
    assert Decision("x", ()).why_none() == "no node is known"


def test_forecast_respects_dependencies_and_passes_readiness_through_scripts():
    # a1 -> s (a script, no demand) -> d; d has the higher rank but must wait for a1.
    v = view(node("b", network=0.5), coordinator="z")  # each demand: 2 s of work + 0.5 s network
    after = {"a1": [], "s": ["a1"], "d": ["s"]}
    decisions = forecast([demand("d", rank=10.0), demand("a1", rank=1.0)], after, v, NOW)
    assert [d.key for d in decisions] == ["a1", "d"]
    first, second = (d.choice for d in decisions)
    assert (first.start_s, first.finish_s) == (1000.0, 1002.5)
    assert (second.start_s, second.finish_s) == (1002.5, 1005.0)


def test_forecast_spreads_independent_demands_and_continues_past_an_unplaceable_one():
    v = view(node("b"), node("c"), coordinator="z")
    decisions = forecast([demand("p"), demand("q"), demand("r")],
                         {"r": ["p", "q"]}, v, NOW)
    assert [(d.key, d.choice.node_id, d.choice.start_s) for d in decisions] == \
        [("p", "b", 1000.0), ("q", "c", 1000.0), ("r", "b", 1002.0)]
    decisions = forecast([demand("lost", "nowhere", rank=3.0), demand("next", rank=1.0)],
                         {"next": ["lost"]}, view(node("b")), NOW)
    assert decisions[0].choice is None and decisions[1].choice.start_s == NOW


def test_forecast_rejects_a_cycle_among_demands():
    with pytest.raises(ValueError, match="cycle"):
        forecast([demand("p"), demand("q")], {"p": ["q"], "q": ["p"]}, view(node("b")), NOW)
    with pytest.raises(ValueError, match="cycle"):
        forecast([demand("p")], {"p": ["s"], "s": ["t"], "t": ["s"]}, view(node("b")), NOW)


def test_estimated_prompt_tokens_rounds_up_at_four_characters_a_token():
    assert [estimated_prompt_tokens(n) for n in (0, 1, 4, 5, 8, 9, 400)] == [1, 1, 1, 2, 2, 3, 100]


def random_case(rng):
    ids = rng.sample("abcdefghij", rng.randint(1, 7))
    nodes = []
    for i in ids:
        models = tuple(held(rng.choice("mn"), runtime=rng.choice(("llama_cpp", "mlx")), sha=rng.choice((SHA, "b" * 64)),
                            size=rng.choice((100, 900, 3000)) * MIB, loaded=rng.random() < 0.5,
                            prefill=rng.choice((None, 80.0, 400.0)), decode=rng.choice((None, 8.0, 20.0)))
                       for _ in range(rng.randint(0, 2)))
        nodes.append(NodeView(i, f"dev-{i}", rng.random() < 0.85, models, frozenset(rng.sample("gfs", rng.randint(0, 2))),
                              rng.choice((None, 1000 * MIB, 4000 * MIB)), rng.choice((0.0, 1.0, 2.5)),
                              rng.choice((0.0, 0.1)), rng.choice((100e6, 1e9))))
    demands = [demand(f"k{j}", rng.choice("mn"), rng.randint(0, 500), rng.randint(1, 200),
                      runtime=rng.choice((None, None, "mlx")), sha256=rng.choice((None, SHA)),
                      rank=float(rng.randint(0, 3)), ready_at=rng.choice((None, NOW + 1.0)),
                      local_only=rng.random() < 0.15, require_tags=rng.sample("gf", rng.randint(0, 1)),
                      prefer_tags=rng.sample("fs", rng.randint(0, 1)), exclude=rng.sample(ids, rng.randint(0, 1)))
               for j in range(rng.randint(1, 6))]
    return ClusterView(rng.choice(ids), tuple(nodes)), demands


def test_random_views_keep_the_invariants():
    rng = random.Random(20240611)
    for _ in range(300):
        v, demands = random_case(rng)
        decisions = place(demands, v, NOW)
        shuffled = list(v.nodes)
        rng.shuffle(shuffled)
        assert place(list(reversed(demands)), ClusterView(v.coordinator, tuple(shuffled)), NOW) == decisions
        assert [d.key for d in decisions] == [d.key for d in sorted(demands, key=lambda d: (-d.rank, d.key))]
        by_key = {d.key: d for d in demands}
        for decision in decisions:
            d = by_key[decision.key]
            seen = [c.node_id for c in decision.candidates] + [r.node_id for r in decision.rejected]
            assert sorted(seen) == sorted(n.node_id for n in v.nodes)
            prefer = any(e.preferred for e in decision.candidates)
            scale = {c.node_id: 1.0 - PREFER_SLACK if prefer and c.preferred else 1.0
                     for c in decision.candidates}
            keys = [(round((c.finish_s - NOW) * scale[c.node_id], 3), not c.warm, c.node_id)
                    for c in decision.candidates]
            assert keys == sorted(keys)
            for c in decision.candidates:
                n = v.node(c.node_id)
                assert n.alive and c.node_id not in d.exclude and d.require_tags <= n.tags
                assert (c.node_id == v.coordinator) or not d.local_only
                assert c.start_s >= max(NOW + n.backlog_s, d.ready_at or NOW)
                assert c.network_s == (0.0 if c.node_id == v.coordinator else n.network_s)


def test_a_model_one_choice_loads_is_warm_for_the_next_demand_of_the_same_call():
    cold = node("b", held(loaded=False, size=400_000_000))
    first, second = place([demand("x", rank=2.0), demand("y", rank=1.0)], view(cold, coordinator="z"), NOW)
    assert first.choice.load_s > 0 and not first.choice.warm
    assert second.choice.load_s == 0 and second.choice.warm
    assert second.choice.start_s == first.choice.start_s + first.choice.work_s


# ---- batches: a node runs up to a model's capacity at once, each at its batch's rate ----

def batched(capacity=4, rates=(10.0, 8.5, 7.5, 6.5), **kw):
    return HeldModel("m", "llama_cpp", SHA, MIB, True, 100.0, rates[0] if rates else 10.0, capacity, tuple(rates),
                     **kw)


def test_decode_rate_is_the_measured_rate_of_the_batch_and_never_assumed_beyond_it():
    model = batched()
    assert [decode_rate(model, b) for b in (1, 2, 3, 4)] == [10.0, 8.5, 7.5, 6.5]
    two = batched(capacity=4, rates=(10.0, 8.0))  # measuring stopped at 2: 16 tok/s in all, no more
    assert decode_rate(two, 4) == pytest.approx(16.0 / 4)
    assert decode_rate(batched(capacity=4, rates=()), 3) == pytest.approx(10.0 / 3)  # never measured: no gain
    assert decode_rate(batched(rates=(10.0, 12.0)), 2) == 10.0  # never faster than alone
    assert decode_rate(HeldModel("m", "llama_cpp", SHA, MIB, True), 1) == UNMEASURED_DECODE_TOKENS_PER_S


def test_a_free_slot_starts_at_once_and_a_full_batch_waits_for_its_first_end():
    # Two sequences reported running with 12 s of work left: worked 4 at a time, done at +3.
    busy = Occupancy(reported=2, backlog_s=12.0)
    assert slot_start(busy, 4, NOW, NOW) == (NOW, 3)
    full = Occupancy(reported=4, backlog_s=12.0)
    assert slot_start(full, 4, NOW, NOW) == (NOW + 3.0, 1)
    # Placed by this call: a batch of two ending at +5 and +8, capacity 2: the next waits for +5.
    placed = Occupancy(placed=((NOW, NOW + 5.0), (NOW, NOW + 8.0)))
    assert slot_start(placed, 2, NOW, NOW) == (NOW + 5.0, 2)
    # Capacity 1 is the old serial node: it waits for the whole backlog.
    assert slot_start(Occupancy(reported=1, backlog_s=7.0), 1, NOW, NOW) == (NOW + 7.0, 1)
    assert occupancy_of(node("a", backlog=7.0)) == Occupancy(1, 7.0)  # a backlog takes a slot


def test_parallel_agents_share_a_batched_node_at_its_batch_rates():
    # Three agents of 20 tokens each on one node that decodes 4 together.
    v = view(node("a", batched()))
    decisions = place([demand(f"p{i}") for i in range(3)], v, NOW)
    starts = [d.choice.start_s for d in decisions]
    decodes = [d.choice.decode_s for d in decisions]
    assert starts == [NOW, NOW, NOW]  # no waiting: each joins the batch
    assert decodes == pytest.approx([20 / 10.0, 20 / 8.5, 20 / 7.5])
    # The same node serving one at a time finishes the third after the other two: 6 s, not 2.7 s.
    serial = place([demand(f"p{i}") for i in range(3)], view(node("a", held())), NOW)
    assert serial[2].choice.finish_s == pytest.approx(NOW + 6.0)
    assert decisions[2].choice.finish_s == pytest.approx(NOW + 20 / 7.5)


def test_a_batched_node_wins_the_third_agent_that_a_serial_one_would_make_wait():
    # b is faster alone (20 tok/s) but runs one at a time; a batches 4 at 10, 8.5, 7.5, 6.5.
    v = view(node("a", batched()), node("b", held(decode=20.0)))
    chosen = [d.choice.node_id for d in place([demand(f"p{i}", max_tokens=40) for i in range(4)], v, NOW)]
    # p0 -> b (2 s); p1: a alone (4 s) vs b after p0 (4 s): a tie, to the smaller id, a; p2: a in a
    # batch of 2 (40 / 8.5 = 4.7 s) vs b after p0 (4 s) -> b; p3: a in a batch of 2 (4.7 s) vs b
    # after p2 (6 s) -> a.
    assert chosen == ["b", "a", "b", "a"]


def test_a_model_unavailable_on_a_node_is_ruled_out_with_its_reason():
    v = view(node("a", batched(unavailable="its runner crashed 3 times (SIGSEGV)")), node("b"))
    decision = one(demand(), v)
    assert decision.choice.node_id == "b"
    assert reasons(decision)["a"] == (Exclusion.UNAVAILABLE, "'m' cannot run there now: its runner crashed 3 times "
                                                              "(SIGSEGV)")
