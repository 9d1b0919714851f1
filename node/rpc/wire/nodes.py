"""What a node says about itself on the wire: descriptions, their parts, and liveness beats."""

from __future__ import annotations

from collections.abc import Callable

from orc.node.models.hardware import Hardware
from orc.node.protocol.description import Load, ModelOffer, NodeDescription, PeerAddress
from orc.node.protocol.messages import Beat
from orc.node.rpc.wire import checks as check
from orc.node.rpc.wire.checks import (
    MAX_ADDRESSES,
    MAX_BACKLOG_MS,
    MAX_CAPACITY,
    MAX_KNOWN_PEERS,
    MAX_MODELS,
    MAX_SPEED,
    MAX_TAGS,
    MAX_UNAVAILABLE,
    capped,
    optional,
    required,
)
from orc.proto.v1 import mesh_pb2 as pb


def _hardware_to_wire(hardware: Hardware) -> pb.Hardware:
    message = pb.Hardware(arch=hardware.arch, cores=hardware.cores, accelerator=hardware.accelerator,
                          system=hardware.system)
    if hardware.ram_total_bytes is not None:
        message.ram_total_bytes = hardware.ram_total_bytes
    if hardware.ram_available_bytes is not None:
        message.ram_available_bytes = hardware.ram_available_bytes
    return message


def _hardware_from_wire(message: pb.Hardware) -> Hardware:
    return Hardware(
        arch=check.label(message.arch, "hardware arch"),
        cores=check.integer(message.cores, "hardware cores", minimum=1, maximum=65536),
        ram_total_bytes=optional(message, "ram_total_bytes", int),
        ram_available_bytes=optional(message, "ram_available_bytes", int),
        accelerator=check.label(message.accelerator, "hardware accelerator"),
        system=check.label(message.system, "hardware system"),
    )


def _model_to_wire(model: ModelOffer) -> pb.ModelOffer:
    message = pb.ModelOffer(id=model.id, runtime=model.runtime, sha256=model.sha256,
                            size_bytes=model.size_bytes, loaded=model.loaded, capacity=model.capacity,
                            batch_decode_tokens_per_s=list(model.batch_decode_tokens_per_s),
                            unavailable=model.unavailable)
    if model.prefill_tokens_per_s is not None:
        message.prefill_tokens_per_s = model.prefill_tokens_per_s
    if model.decode_tokens_per_s is not None:
        message.decode_tokens_per_s = model.decode_tokens_per_s
    return message


def _speed(what: str) -> Callable[[float], float]:
    return lambda value: check.number(value, what, maximum=MAX_SPEED)


def _model_from_wire(message: pb.ModelOffer) -> ModelOffer:
    # A node from before capacities sends 0: it runs one generation of a model at a time.
    capacity = check.integer(message.capacity or 1, "model capacity", minimum=1, maximum=MAX_CAPACITY)
    rates = capped(message.batch_decode_tokens_per_s, "model batch speeds", capacity)
    return ModelOffer(
        id=check.label(message.id, "model id"),
        runtime=check.label(message.runtime, "model runtime"),
        sha256=check.sha256(message.sha256, "model sha256"),
        size_bytes=message.size_bytes,
        loaded=message.loaded,
        prefill_tokens_per_s=optional(message, "prefill_tokens_per_s", _speed("model prefill speed")),
        decode_tokens_per_s=optional(message, "decode_tokens_per_s", _speed("model decode speed")),
        capacity=capacity,
        batch_decode_tokens_per_s=tuple(_speed("model batch speed")(rate) for rate in rates),
        unavailable=check.label(message.unavailable, "model unavailable reason", MAX_UNAVAILABLE, empty=True),
    )


def load_to_wire(load: Load) -> pb.Load:
    message = pb.Load(active_generations=load.active_generations, queued=load.queued, backlog_ms=load.backlog_ms)
    if load.cpu_load_1m is not None:
        message.cpu_load_1m = load.cpu_load_1m
    return message


def load_from_wire(message: pb.Load) -> Load:
    return Load(
        active_generations=message.active_generations,
        queued=message.queued,
        cpu_load_1m=optional(message, "cpu_load_1m", lambda v: check.number(v, "cpu load", maximum=1e6)),
        # A week: a larger backlog is a lie or a broken clock, and would only push work away.
        backlog_ms=min(message.backlog_ms, MAX_BACKLOG_MS),
    )


def description_to_wire(description: NodeDescription) -> pb.NodeDescription:
    return pb.NodeDescription(
        protocol_version=description.protocol_version,
        node_id=description.node_id,
        name=description.name,
        mesh_id=description.mesh_id,
        addresses=list(description.addresses),
        hardware=_hardware_to_wire(description.hardware),
        models=[_model_to_wire(m) for m in description.models],
        load=load_to_wire(description.load),
        revocation_seq=description.revocation_seq,
        version=description.version,
        started_at=description.started_at,
        tags=list(description.tags),
        known_peers=[pb.PeerAddress(node_id=p.node_id, address=p.address) for p in description.known_peers],
        certificate_authority=description.certificate_authority,
    )


def description_from_wire(message: pb.NodeDescription) -> NodeDescription:
    return NodeDescription(
        protocol_version=message.protocol_version,
        node_id=check.node_id(message.node_id, "node description node_id"),
        name=check.node_name(message.name, "node description name"),
        mesh_id=check.mesh_id(message.mesh_id, "node description mesh_id"),
        addresses=tuple(check.address(a, "node address")
                        for a in capped(message.addresses, "node addresses", MAX_ADDRESSES)),
        hardware=_hardware_from_wire(required(message, "hardware", "node description")),
        models=tuple(_model_from_wire(m) for m in capped(message.models, "models", MAX_MODELS)),
        load=load_from_wire(message.load),
        revocation_seq=message.revocation_seq,
        version=message.version,
        started_at=check.number(message.started_at, "started_at"),
        tags=tuple(check.label(t, "tag") for t in capped(message.tags, "tags", MAX_TAGS)),
        known_peers=tuple(
            PeerAddress(check.node_id(p.node_id, "known peer node_id"), check.address(p.address, "known peer address"))
            for p in capped(message.known_peers, "known peers", MAX_KNOWN_PEERS)),
        certificate_authority=message.certificate_authority,
    )


def beat_to_wire(beat: Beat) -> pb.Beat:
    return pb.Beat(sent_at_ms=beat.sent_at_ms, description_version=beat.description_version,
                   revocation_seq=beat.revocation_seq, load=load_to_wire(beat.load))


def beat_from_wire(message: pb.Beat) -> Beat:
    return Beat(message.sent_at_ms, message.description_version, message.revocation_seq,
                load_from_wire(message.load))


def watch_request(addresses: tuple[str, ...] = ()) -> pb.WatchRequest:
    return pb.WatchRequest(addresses=list(addresses[:MAX_ADDRESSES]))


def watch_addresses(message: pb.WatchRequest) -> tuple[str, ...]:
    """The caller's listen addresses from a WatchRequest (WireError if malformed)."""
    return tuple(check.address(a, "watch address")
                 for a in capped(message.addresses, "watch addresses", MAX_ADDRESSES))
