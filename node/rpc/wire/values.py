"""JSON-like values (agent outputs, a run's deliverable) to and from `orc.v1.Value`.

A Value is its nodes in pre-order: a list or map node is followed by its entries, each a whole
value. Both directions walk an explicit stack instead of recursing, so neither an output nested
deep by an agent nor a forged message can exhaust Python's stack; nesting is capped at
`MAX_VALUE_DEPTH` either way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from orc.node.protocol.errors import WireError
from orc.node.rpc.wire.checks import MAX_VALUE_DEPTH, fail
from orc.proto.v1 import control_pb2 as cpb
from orc.scheduler.values import freeze

_INT64 = (-(2**63), 2**63 - 1)  # ValueNode.integer is a sint64


def value_to_wire(value: object) -> cpb.Value:
    """The nodes of JSON-like `value`; WireError for anything else, or for nesting past the cap."""
    message = cpb.Value()
    pending: list[tuple[str, object, int]] = [("", value, 0)]  # (key, value, depth), next on top
    while pending:
        key, item, depth = pending.pop()
        if depth > MAX_VALUE_DEPTH:
            raise WireError(f"cannot encode an output nested deeper than {MAX_VALUE_DEPTH} levels")
        node = message.nodes.add(key=key)
        if item is None:
            node.null = True
        elif isinstance(item, bool):
            node.boolean = item
        elif isinstance(item, int):
            if not _INT64[0] <= item <= _INT64[1]:
                raise WireError(f"cannot encode the integer {item}: outside the signed 64-bit range")
            node.integer = item
        elif isinstance(item, float):
            node.number = item
        elif isinstance(item, str):
            node.text = item
        elif isinstance(item, Mapping):
            node.map_length = len(item)
            pending.extend(reversed([(str(k), v, depth + 1) for k, v in item.items()]))
        elif isinstance(item, (list, tuple)):
            node.list_length = len(item)
            pending.extend(reversed([("", v, depth + 1) for v in item]))
        else:
            raise WireError(f"cannot encode a {type(item).__name__}: agent outputs are JSON-like values")
    return message


@dataclass
class _Open:
    """A list or map being filled: `left` more entries belong to it."""

    left: int
    items: list[object] | dict[str, object] = field(default_factory=list)


def value_from_wire(message: cpb.Value, what: str) -> object:
    """The frozen value `value_to_wire` made; WireError for anything else."""
    nodes = message.nodes
    root = _Open(left=1)
    stack = [root]
    for index, node in enumerate(nodes):
        if not stack:
            fail(what, f"{len(nodes) - index} node(s) after the end of the value")
        depth = len(stack) - 1
        if depth > MAX_VALUE_DEPTH:
            fail(what, f"nested deeper than {MAX_VALUE_DEPTH} levels")
        into = stack[-1]
        if not isinstance(into.items, dict) and node.key:
            fail(what, "a key on an entry that is not in a map")
        opened: _Open | None = None
        match node.WhichOneof("kind"):
            case "null":
                item: object = None
            case "boolean":
                item = node.boolean
            case "integer":
                item = node.integer
            case "number":
                item = node.number
            case "text":
                item = node.text
            case "list_length" | "map_length" as kind:
                length = getattr(node, kind)
                # Every entry takes at least one node: a claim beyond the nodes left is a lie, and
                # checking it keeps a forged length from sizing anything.
                if length > len(nodes) - index - 1:
                    fail(what, f"a {kind[:-7]} of {length} entries, more than the nodes that follow")
                opened = _Open(left=length, items={} if kind == "map_length" else [])
                item = opened.items
            case _:
                fail(what, "a node of no kind this node knows")
        if isinstance(into.items, dict):
            if node.key in into.items:
                fail(what, f"the key {ascii(node.key[:40])} twice in one map")
            into.items[node.key] = item
        else:
            into.items.append(item)
        into.left -= 1
        if opened is not None:
            stack.append(opened)
        while stack and stack[-1].left == 0:
            stack.pop()
    if stack:
        fail(what, "it ends before its last entry")
    return freeze(root.items[0])
