"""Links to peers over mutual TLS with this node's current certificate (what peering dials with).

The certificate is read from the membership at each dial, so a renewed one is used from the next
link on.
"""

from __future__ import annotations

from orc.node.links.static import parse_endpoint
from orc.node.metrics.observers import UNOBSERVED, RpcObserver
from orc.node.protocol.ids import NodeId
from orc.node.rpc.client import PeerClient
from orc.node.rpc.credentials import probe_node_id
from orc.node.trust.membership import Membership


class MtlsConnector:
    """Links to peers over mutual TLS with this node's current certificate; each link tells
    `observer` of its failed calls."""

    def __init__(self, membership: Membership, *, observer: RpcObserver = UNOBSERVED) -> None:
        self.membership = membership
        self.observer = observer

    async def identify(self, address: str) -> NodeId:
        identity = self.membership.identity
        endpoint = parse_endpoint(address)
        return await probe_node_id(endpoint.host, endpoint.port, identity.key_pem, identity.certificate_pem,
                                   identity.ca_certificate_pem, timeout=5.0)

    def link(self, node_id: NodeId, address: str) -> PeerClient:
        identity = self.membership.identity
        return PeerClient(node_id, address, identity.key_pem, identity.certificate_pem, identity.ca_certificate_pem,
                          observer=self.observer)
