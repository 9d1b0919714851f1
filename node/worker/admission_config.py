"""`admission:` in a node's config.yaml: how many generations of one model run at once (`slots`,
the capacity its runtime is given: a batching runner decodes that many together) and how many
wait (`queue`), checked against bounds past which a node is misconfigured."""

from __future__ import annotations

from dataclasses import dataclass

from orc.node.protocol.description import MAX_CAPACITY
from orc.node.worker.admission import DEFAULT_QUEUE_LIMIT

# Sequences of one model decoded together unless config.yaml says otherwise: on a CPU, decoding
# is bound by memory bandwidth, so a batch of 4 costs little more per step than one sequence.
DEFAULT_SLOTS = 4
# Beyond these a node is misconfigured, not generous: every slot is a sequence's context (KV
# cache) in memory, every queue place a peer's prompt held waiting. It is also the most a peer
# may claim on the wire.
MAX_SLOTS = MAX_CAPACITY
MAX_QUEUE_LIMIT = 64


class BadAdmissionConfig(ValueError):
    """The `admission:` section of the node's config.yaml is not usable; the message says what to fix."""


@dataclass(frozen=True)
class AdmissionConfig:
    slots: int = DEFAULT_SLOTS
    queue: int = DEFAULT_QUEUE_LIMIT


def admission_config(root: object, source: str = "the config file") -> AdmissionConfig:
    """The `admission:` section of a parsed node config (`slots`, `queue`); defaults when absent."""
    section = root.get("admission") if isinstance(root, dict) else None
    if section is None:
        return AdmissionConfig()
    if not isinstance(section, dict):
        raise BadAdmissionConfig(f"{source}: `admission:` must be a mapping with slots and queue")
    problems = [f"unknown key {key!r} (known: slots, queue)" for key in section if key not in ("slots", "queue")]
    values = {}
    for key, default, top, minimum in (("slots", DEFAULT_SLOTS, MAX_SLOTS, 1),
                                       ("queue", DEFAULT_QUEUE_LIMIT, MAX_QUEUE_LIMIT, 0)):
        value = section.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= top:
            problems.append(f"{key}: must be a whole number from {minimum} to {top}, not {value!r}")
        else:
            values[key] = value
    if problems:
        raise BadAdmissionConfig(f"{source}: admission: " + "; ".join(problems))
    return AdmissionConfig(**values)

