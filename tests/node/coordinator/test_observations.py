"""What a coordinator believes of a peer's batch speeds: no more than it measured itself."""

from __future__ import annotations

import pytest

from orc.node.coordinator.observations import Observations, believed_batch_rates
from orc.node.protocol.description import ModelOffer
from orc.scheduler.placement import ClusterView, Demand, HeldModel, NodeView, place

SHA = "a" * 64
OWN = ModelOffer("m", "llama_cpp", SHA, 1 << 20, True, 100.0, 10.0, capacity=4,
                 batch_decode_tokens_per_s=(10.0, 8.5, 7.5, 6.5))


def trust(own=(OWN,)) -> Observations:
    return Observations(clock=lambda: 0.0, own_models=lambda: own, peers=lambda: ())


def peer_model(rates, capacity=4, decode=10.0) -> HeldModel:
    return HeldModel("m", "llama_cpp", SHA, 1 << 20, True, 100.0, decode, capacity, tuple(rates))


def test_claimed_batch_rates_are_cut_to_the_gain_measured_here():
    # The peer claims perfect batching; this node measured 1.7, 2.25 and 2.6 times one alone.
    capped = trust().capped("b", peer_model((10.0, 10.0, 10.0, 10.0)))
    assert capped.batch_decode_tokens_per_s == pytest.approx((10.0, 8.5, 7.5, 6.5))
    # A truthful, slower curve is kept as it is.
    assert trust().capped("b", peer_model((10.0, 8.0, 7.0, 6.0))).batch_decode_tokens_per_s == (10.0, 8.0, 7.0, 6.0)


def test_without_a_measurement_here_no_gain_from_batching_is_believed():
    capped = trust(own=()).capped("b", peer_model((10.0, 9.0)))
    # Never observed: the single speed is capped to the unmeasured one, and no gain on top.
    assert capped.decode_tokens_per_s == 5.0 and capped.batch_decode_tokens_per_s == (5.0, 2.5)


def test_believed_rates_never_rise_with_the_batch_and_never_pass_one_alone():
    assert believed_batch_rates((10.0, 12.0, 11.0), 10.0, (1.0, 3.0, 3.0)) == (10.0, 10.0, 10.0)
    assert believed_batch_rates((20.0, 9.0), 10.0, (1.0, 1.8)) == (10.0, 9.0)
    # Beyond the sizes measured here: no more total speed than at the largest one.
    assert believed_batch_rates((10.0, 9.0, 9.0, 9.0), 10.0, (1.0, 1.8)) == pytest.approx((10.0, 9.0, 6.0, 4.5))


def test_a_peer_lying_about_batching_draws_no_more_agents_than_an_honest_twin():
    def chosen(rates) -> list[str]:
        own = NodeView("a", "a", True, (trust().capped("a", peer_model((10.0, 8.5, 7.5, 6.5))),))
        claimed = NodeView("b", "b", True, (trust().capped("b", peer_model(rates)),))
        demands = [Demand(f"p{i}", "m", 0, 40) for i in range(6)]
        return [d.choice.node_id for d in place(demands, ClusterView("a", (own, claimed)), 0.0)]

    honest = chosen((10.0, 8.5, 7.5, 6.5))
    lying = chosen((10.0, 10.0, 10.0, 10.0))
    assert lying == honest and lying.count("b") == 3
