"""The control socket's own messages: node status, peers, invitations, revocations, run requests.

(Run progress events are in `runs`.)
"""

from __future__ import annotations

from orc.node.protocol.messages import NodeStatus, PeersReply, PeerView, RunRequest
from orc.node.rpc.wire import checks as check
from orc.node.rpc.wire.checks import MAX_PATH, MAX_PEERS_LISTED, MAX_RUN_ID, MAX_THREADS, capped, optional, required
from orc.node.rpc.wire.nodes import description_from_wire, description_to_wire
from orc.proto.v1 import control_pb2 as cpb

MAX_API_ADDRESS = 300  # "https://[v6 address]:port" is far shorter


def node_status_to_wire(status: NodeStatus) -> cpb.NodeStatus:
    message = cpb.NodeStatus(description=description_to_wire(status.description), ca_holder=status.ca_holder,
                             peers_verified=status.peers_verified, peers_known=status.peers_known, home=status.home)
    if status.join_address is not None:
        message.join_address = status.join_address
    if status.api_address is not None:
        message.api_address = status.api_address
    return message


def node_status_from_wire(message: cpb.NodeStatus) -> NodeStatus:
    return NodeStatus(
        description=description_from_wire(required(message, "description", "node status")),
        ca_holder=message.ca_holder,
        join_address=optional(message, "join_address", lambda v: check.address(v, "join address")),
        peers_verified=message.peers_verified,
        peers_known=message.peers_known,
        home=check.text(message.home, "home", MAX_PATH),
        api_address=optional(message, "api_address", lambda v: check.text(v, "API address", MAX_API_ADDRESS)),
    )


def peer_view_to_wire(peer: PeerView) -> cpb.PeerView:
    message = cpb.PeerView(node_id=peer.node_id or "", state=peer.state, address=peer.address,
                           verified=peer.verified, missed_beats=peer.missed_beats)
    if peer.description is not None:
        message.description.CopyFrom(description_to_wire(peer.description))
    if peer.last_seen is not None:
        message.last_seen = peer.last_seen
    return message


def peer_view_from_wire(message: cpb.PeerView) -> PeerView:
    return PeerView(
        description=optional(message, "description", description_from_wire),
        state=check.label(message.state, "peer state", 32),
        address=check.address(message.address, "peer address", empty=True),
        last_seen=optional(message, "last_seen", check.timestamp("last_seen")),
        verified=message.verified,
        missed_beats=message.missed_beats,
        node_id=check.node_id(message.node_id, "peer node_id") if message.node_id else None,
    )


def peers_reply_from_wire(message: cpb.PeersReply) -> PeersReply:
    return PeersReply(tuple(peer_view_from_wire(p) for p in capped(message.peers, "peers", MAX_PEERS_LISTED)))


def run_request_to_wire(request: RunRequest) -> cpb.RunRequest:
    message = cpb.RunRequest(reference=request.reference, cwd=request.cwd, json=request.json,
                             explain=request.explain, local=request.local, plan=request.plan)
    if request.input is not None:
        message.input = request.input
    if request.seed is not None:
        message.seed = request.seed
    if request.threads is not None:
        message.threads = request.threads
    if request.resume is not None:
        message.resume = request.resume
    return message


def run_request_from_wire(message: cpb.RunRequest) -> RunRequest:
    return RunRequest(
        reference=check.text(message.reference, "ensemble reference", MAX_PATH, empty=False),
        input=message.input if message.HasField("input") else None,
        cwd=check.text(message.cwd, "working folder", MAX_PATH),
        json=message.json,
        explain=message.explain,
        local=message.local,
        seed=message.seed if message.HasField("seed") else None,
        threads=optional(message, "threads", lambda v: check.integer(v, "threads", minimum=1, maximum=MAX_THREADS)),
        resume=optional(message, "resume", lambda v: check.text(v, "run id", MAX_RUN_ID, empty=False)),
        plan=message.plan,
    )
