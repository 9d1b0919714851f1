"""Label values are capped per label of a family, and cut to a sane length."""

from __future__ import annotations

import logging

import pytest

from orc.node.metrics.labels import MAX_LABEL_CHARS, OTHER, LabelCap


def test_each_label_keeps_its_first_values_and_folds_later_ones_into_other(caplog):
    cap = LabelCap("orc_mesh_rpc_errors_total", ["method", "code"], limit=2)
    with caplog.at_level(logging.WARNING, logger="orc.node.metrics.labels"):
        assert cap.values("Offer", "UNAVAILABLE") == ("Offer", "UNAVAILABLE")
        assert cap.values("Execute", "UNAVAILABLE") == ("Execute", "UNAVAILABLE")
        assert cap.values("Watch", "CANCELLED") == (OTHER, "CANCELLED")  # the method is full, the code is not
        assert cap.values("Describe", "INTERNAL") == (OTHER, OTHER)
        assert cap.values("Offer", "CANCELLED") == ("Offer", "CANCELLED")  # seen values keep their name
    [warning] = [r for r in caplog.records if r.name == "orc.node.metrics.labels"]  # said once, not per value
    assert "orc_mesh_rpc_errors_total" in warning.getMessage()


def test_long_values_are_cut_and_the_count_of_values_must_match():
    cap = LabelCap("orc_placements_total", ["node"])
    assert cap.values("x" * 1000) == ("x" * MAX_LABEL_CHARS,)
    assert cap.values(404) == ("404",)
    with pytest.raises(ValueError):
        cap.values("a", "b")
    with pytest.raises(ValueError):
        LabelCap("f", ["node"], limit=0)
