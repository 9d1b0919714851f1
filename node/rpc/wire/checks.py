"""The caps and field checks every decoder of the wire shares.

Each check takes a value straight out of a received message and returns it typed, or raises
`WireError` saying which field is wrong and how. Nothing here knows a message type.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from enum import Enum
from typing import Any, NoReturn, TypeVar

from google.protobuf.message import Message

from orc.node.protocol.description import MAX_CAPACITY, MAX_UNAVAILABLE_CHARS
from orc.node.protocol.errors import WireError
from orc.node.protocol.ids import MeshId, NodeId, is_mesh_id, is_node_id

# ---- caps: every repeated field and string a peer sends is bounded --------------------------
# Each stops a peer from making this node hold, parse or print an unbounded amount of data per
# message (gRPC already caps a whole message at 4 MiB; these keep single tables small).
MAX_MODELS = 64  # models offered in one description (a device holds a handful)
MAX_KNOWN_PEERS = 256  # peer-exchange entries per description: stops address-book flooding
MAX_ADDRESSES = 16  # listen addresses per node (interfaces x families)
MAX_TAGS = 32
MAX_LABEL = 128  # ids, names, tags, runtimes: short, printable, one line
MAX_ADDRESS = 262  # "[" + 253-character host + "]:" + 5-digit port
MAX_REASON = 4096  # human-readable reasons and error messages
MAX_PATH = 4096  # file system paths (PATH_MAX on Linux)
MAX_PEM = 16 * 1024  # certificates and requests are under 1 KiB; same bound as orc.node.trust
MAX_SECRET = 64  # a join secret is 26 characters
MAX_MESSAGES = 1024  # conversation turns in one agent payload
MAX_STOP = 16  # stop strings per generation
MAX_STOP_CHARS = 256
MAX_PEERS_LISTED = 4096  # peers in one `orc peers` answer
MAX_AGENTS = 4096  # agents in one run event (ensembles are validated far below that)
MAX_VALUE_DEPTH = 64  # nesting of agent outputs: stops recursion bombs in agent output values
MAX_RUN_EVENT_BYTES = 64 << 20  # one RunFinished carries every output of a run
MAX_PAYLOAD_BYTES = 4 << 20
MAX_THREADS = 1024  # --threads
# Nodes one agent was bound to (a fan-out spreads over many; each failover adds one): as many as
# a mesh may list, so a real record always decodes while a forged one stays bounded.
MAX_NODES_PER_AGENT = 4096
MAX_RUN_ID = 64  # run ids are 16 hex characters; a prefix is enough
MAX_BACKLOG_MS = 7 * 24 * 3600 * 1000
# Generations of one model a node says it runs at once, and the per-batch-size speeds it lists:
# a larger claim would only draw work to one node (and its speeds table is one entry per size).
MAX_CAPACITY = MAX_CAPACITY
MAX_UNAVAILABLE = MAX_UNAVAILABLE_CHARS  # why a model cannot run: one line a user reads
MAX_SPEED = 1e9  # tokens per second: far beyond any device, finite so estimates stay numbers

_SHA256 = re.compile(r"[0-9a-f]{64}")
_NODE_NAME = re.compile(r"[A-Za-z0-9._-]{1,63}")  # orc.node.trust.certificates.check_node_name

_T = TypeVar("_T")
_E = TypeVar("_E", bound=Enum)


def fail(what: str, problem: str) -> NoReturn:
    raise WireError(f"malformed {what}: {problem}")


def text(value: object, what: str, limit: int, *, empty: bool = True) -> str:
    """Free text: a str of at most `limit` characters, without NUL."""
    if not isinstance(value, str):
        fail(what, f"expected text, got {type(value).__name__}")
    if len(value) > limit:
        fail(what, f"{len(value)} characters, more than {limit}")
    if not empty and not value:
        fail(what, "empty")
    if "\x00" in value:
        fail(what, "contains a NUL character")
    return value


def label(value: object, what: str, limit: int = MAX_LABEL, *, empty: bool = False) -> str:
    """A one-line printable name (shown on terminals: no control or formatting characters)."""
    checked = text(value, what, limit, empty=empty)
    if not checked.isprintable():
        fail(what, f"{ascii(checked[:40])} contains control or formatting characters")
    return checked


def agent_name(value: object) -> str:
    return label(value, "agent name", 1024)


def node_id(value: object, what: str) -> NodeId:
    if not isinstance(value, str) or not is_node_id(value):
        fail(what, f"{ascii(str(value)[:40])} is not a node id (20 base32 characters)")
    return NodeId(value)


def mesh_id(value: object, what: str) -> MeshId:
    if not isinstance(value, str) or not is_mesh_id(value):
        fail(what, f"{ascii(str(value)[:40])} is not a mesh id (16 base32 characters)")
    return MeshId(value)


def sha256(value: object, what: str) -> str:
    if not isinstance(value, str) or _SHA256.fullmatch(value) is None:
        fail(what, f"{ascii(str(value)[:70])} is not a SHA-256 digest (64 lowercase hex digits)")
    return value


def node_name(value: object, what: str) -> str:
    if not isinstance(value, str) or _NODE_NAME.fullmatch(value) is None:
        fail(what, f"{ascii(str(value)[:70])} is not a node name (1-63 of letters, digits, '.', '_', '-')")
    return value


def address(value: object, what: str, *, empty: bool = False) -> str:
    """"host:port" or "[v6]:port", port 1-65535."""
    checked = label(value, what, MAX_ADDRESS, empty=empty)
    if not checked:
        return checked
    if checked.startswith("["):
        host, sep, port = checked[1:].partition("]:")
        valid = bool(sep) and "]" not in host and "[" not in host
    else:
        host, sep, port = checked.rpartition(":")
        valid = bool(sep) and ":" not in host
    if not (valid and host and " " not in host and port.isascii() and port.isdigit()
            and len(port) <= 5 and 1 <= int(port) <= 65535):
        fail(what, f"{ascii(checked[:70])} is not a host:port address")
    return checked


def number(value: object, what: str, *, minimum: float = 0.0, maximum: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        fail(what, f"expected a number, got {type(value).__name__}")
    checked = float(value)
    if not math.isfinite(checked) or not minimum <= checked <= maximum:
        fail(what, f"{checked!r} is out of range")
    return checked


def integer(value: object, what: str, *, minimum: int = 0, maximum: int = 2**64 - 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        fail(what, f"expected an integer, got {type(value).__name__}")
    if not minimum <= value <= maximum:
        fail(what, f"{value} is out of range")
    return value


def timestamp(what: str) -> Callable[[object], float]:
    """A reader of unix seconds (or a time relative to one): finite and within ±30,000 years."""
    return lambda value: number(value, what, minimum=-1e12, maximum=1e12)


def duration(what: str) -> Callable[[object], float]:
    """A reader of a duration in seconds: finite, not negative, under 30 years."""
    return lambda value: number(value, what, minimum=0.0, maximum=1e9)


def pem(value: object, what: str) -> bytes:
    if not isinstance(value, bytes):
        fail(what, f"expected bytes, got {type(value).__name__}")
    if not value:
        fail(what, "empty")
    if len(value) > MAX_PEM:
        fail(what, f"{len(value)} bytes, more than {MAX_PEM}")
    return value


def member(enum: type[_E], value: object, what: str) -> _E:
    """The member of `enum` whose value is `value` (its value, never its Python name)."""
    try:
        return enum(value)
    except ValueError:
        fail(what, f"unknown {ascii(str(value)[:40])}")


def capped(items: Any, what: str, limit: int) -> Any:
    if len(items) > limit:
        fail(what, f"{len(items)} entries, more than {limit}")
    return items


def optional(message: Message, field: str, read: Callable[[Any], _T]) -> _T | None:
    """`read` of the field when the message has it, else None (proto3 `optional` and messages)."""
    return read(getattr(message, field)) if message.HasField(field) else None


def required(message: Message, field: str, what: str) -> Any:
    """The sub-message in `field`; a message without it is malformed."""
    if not message.HasField(field):
        fail(what, f"no {field}")
    return getattr(message, field)


def one_of(message: Message, group: str, what: str) -> str:
    """Which field of the oneof `group` is set; a message with none set is malformed.

    A newer sender's case this node does not know parses as none set, so it is refused here too.
    """
    case = message.WhichOneof(group)
    if case is None:
        fail(what, f"no {group} set (empty, or a kind this node does not know)")
    return case
