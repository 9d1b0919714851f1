"""Errors cross the wire as one status each way, and come back as the class that was raised."""

from __future__ import annotations

import grpc
import pytest

from orc.node.protocol import errors as domain
from orc.node.rpc import errors

LEAVES = [cls for cls in vars(domain).values()
          if isinstance(cls, type) and issubclass(cls, domain.NodeError) and cls is not domain.NodeError]


def test_every_domain_error_can_be_named_on_the_wire() -> None:
    assert set(LEAVES) == set(domain.ERROR_KINDS)


@pytest.mark.parametrize("cls", LEAVES, ids=lambda c: c.__name__)
def test_each_error_comes_back_as_itself(cls) -> None:
    code, details, kind = errors.status_for(cls("what happened"))
    assert code.name.lower() == cls.category.value and code != grpc.StatusCode.OK
    again = errors.error_from_status(code, details, kind)
    assert type(again) is cls and str(again) == "what happened"


@pytest.mark.parametrize("cls", LEAVES, ids=lambda c: c.__name__)
def test_each_error_has_a_message_for_people(cls) -> None:
    assert str(cls()).strip() and "\n" not in str(cls())


@pytest.mark.parametrize("category", list(domain.Category), ids=lambda c: c.value)
def test_every_category_has_a_status_and_a_general_class(category) -> None:
    general = domain.GENERAL_ERROR[category]
    assert general.category is category
    code, _, _ = errors.status_for(general("x"))
    assert type(errors.error_from_status(code, "x")) is general


def test_an_unknown_error_becomes_internal_without_leaking_details() -> None:
    code, details, kind = errors.status_for(KeyError("/home/alice/secret-path"))
    assert code == grpc.StatusCode.INTERNAL and "alice" not in details
    assert isinstance(errors.error_from_status(code, details, kind), domain.Internal)


def test_without_a_kind_the_status_code_decides() -> None:
    assert type(errors.error_from_status(grpc.StatusCode.PERMISSION_DENIED, "no")) is domain.PermissionDenied
    assert type(errors.error_from_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "big")) is domain.ResourceExhausted
    assert type(errors.error_from_status(grpc.StatusCode.UNAVAILABLE, None)) is domain.Unavailable
    assert type(errors.error_from_status(grpc.StatusCode.OUT_OF_RANGE, "far")) is domain.InvalidRequest
    assert type(errors.error_from_status(grpc.StatusCode.DATA_LOSS, "?")) is domain.Internal


def test_a_kind_that_contradicts_the_code_is_ignored() -> None:
    # A hostile server cannot make a client believe in a revocation with an OK-ish status.
    error = errors.error_from_status(grpc.StatusCode.UNAVAILABLE, "x", "Revoked")
    assert type(error) is domain.Unavailable
    assert type(errors.error_from_status(grpc.StatusCode.UNAVAILABLE, "x", "NoSuchClass")) is domain.Unavailable


def test_details_are_bounded() -> None:
    assert len(str(errors.error_from_status(grpc.StatusCode.INTERNAL, "x" * 100_000))) <= 1024
    assert len(errors.status_for(domain.InvalidRequest("y" * 100_000))[1]) <= 1024


def test_domain_errors_know_nothing_of_grpc() -> None:
    assert not any(hasattr(cls, "code") for cls in LEAVES)
