"""The admission decision of the mesh server's authorizer, without sockets (time is passed in)."""

from __future__ import annotations

import pytest
from rpc_helpers import new_member

from orc.node.protocol.errors import RateLimited, Revoked, Unauthenticated
from orc.node.rpc.authorization import Authorizer
from orc.node.trust.rate_limits import RateLimits


def test_admission_reads_the_caller_from_its_certificate(mesh) -> None:
    member = new_member(mesh)
    revoked: set[str] = set()
    authorizer = Authorizer(revoked.__contains__, RateLimits(rate=1.0, burst=1.0))
    context = {"x509_pem_cert": [member.cert_pem]}
    assert authorizer.admit(context, 0.0) == member.node_id
    with pytest.raises(RateLimited):
        authorizer.admit(context, 0.0)
    revoked.add(member.node_id)
    with pytest.raises(Revoked):
        authorizer.admit(context, 10.0)


@pytest.mark.parametrize("certificates", [None, [], [b"junk"], [b"-----BEGIN CERTIFICATE-----\nAAAA\n"]])
def test_admission_refuses_calls_without_a_usable_certificate(certificates) -> None:
    authorizer = Authorizer(lambda _: False)
    context = {} if certificates is None else {"x509_pem_cert": certificates}
    with pytest.raises(Unauthenticated):
        authorizer.admit(context, 0.0)


def test_admission_refuses_the_ca_certificate_as_a_node_certificate(mesh) -> None:
    authorizer = Authorizer(lambda _: False)
    with pytest.raises(Unauthenticated, match="not a valid node certificate"):
        authorizer.admit({"x509_pem_cert": [mesh.certificate_pem]}, 0.0)
