"""The runner protocol: what the node and one runner process say to each other over their socketpair.

Each frame is a 4-byte big-endian length, then that many bytes of msgpack: an array whose first
item is the message's tag and whose other items are its fields, in declaration order. The
typed messages below are the only things sent; `encode` and `decode` are the one place they
become bytes and come back.

    node -> runner   Load  Generate  Cancel  Stop  AskStats  Threads
    runner -> node   Loaded  Text  Done  Failed  Stats

The runner is orc's own code, but it runs llama.cpp or MLX on a user's model file: memory can be
corrupted and the process taken over. So the node decodes every frame from a runner as hostile:
the length, each string, each list and each number is capped or checked (`ProtocolError`
otherwise), and a runner whose frame fails the check is killed (`orc.node.models.runners.process`).
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass
from typing import TypeAlias

import msgpack

from orc.node.models.runtimes.base import ChatMessage, GenerationParams

__all__ = [
    "MAX_REPLY_FRAME_BYTES",
    "MAX_REQUEST_FRAME_BYTES",
    "AskStats",
    "Cancel",
    "Done",
    "Failed",
    "Generate",
    "Load",
    "Loaded",
    "ModelFields",
    "ProtocolError",
    "Reply",
    "Request",
    "RunnerSettings",
    "Stats",
    "Stop",
    "Text",
    "Threads",
    "decode_reply",
    "decode_request",
    "encode",
    "frame",
    "read_frame",
]

# A frame from a runner: its largest is a `Done` holding a whole generation's text, tens of
# kilobytes for a 2048-token context. The cap stops a runner gone wrong from making the node
# allocate without bound; frames above it kill the runner.
MAX_REPLY_FRAME_BYTES = 4 << 20
# A frame to a runner: a `Generate` carries the whole prompt. The mesh caps an agent payload at
# 4 MiB (orc.node.rpc.wire.checks); embedded runs may send more, up to this.
MAX_REQUEST_FRAME_BYTES = 64 << 20
# Items in any one msgpack array or map of a reply: replies hold a handful of fields.
MAX_REPLY_ITEMS = 16
# Characters of an error message from a runner (a load error names a path and llama.cpp's words).
MAX_MESSAGE_CHARS = 4096
# Request ids are positive 63-bit integers: the node counts them up from 1.
MAX_REQUEST_ID = (1 << 63) - 1
# Numbers a runner reports (bytes of memory, slots, tokens) fit 63 bits; anything else is a lie.
MAX_COUNT = (1 << 63) - 1
# CPU threads one Threads message may give (far above any machine's cores).
MAX_THREADS = 4096
_LENGTH = struct.Struct(">I")


class ProtocolError(Exception):
    """A frame that is not one of the protocol's messages, or breaks one of its caps."""


@dataclass(frozen=True)
class RunnerSettings:
    """How a runner runs its model: `threads` CPU threads (None: every CPU), `context_tokens`
    per sequence, `slots` sequences at once where the runtime batches, llama.cpp's
    `extra_buffers` (weight repacking, the AMX path), and `probe_cache`, the file that keeps
    what llama.cpp's load probes found ("": none; orc.node.models.runtimes.probe_cache)."""

    threads: int | None = None
    context_tokens: int = 2048
    slots: int = 1
    extra_buffers: bool = True
    probe_cache: str = ""


@dataclass(frozen=True)
class ModelFields:
    """What a runner needs of a catalog entry to load it (`ModelEntry`'s fields of the same names)."""

    id: str
    runtime: str
    path: str
    size_bytes: int
    sha256: str
    chat: bool


# -- node -> runner ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    """Host `model` with the runtime `runtime` and these settings; answered by Loaded or Failed(load=True)."""

    runtime: str
    model: ModelFields
    settings: RunnerSettings


@dataclass(frozen=True)
class Generate:
    """Start generation `request_id`; answered by Text frames, then one Done or Failed."""

    request_id: int
    messages: tuple[ChatMessage, ...]
    params: GenerationParams


@dataclass(frozen=True)
class Cancel:
    """Stop generation `request_id`; nothing more is sent for it (a Done already on its way may arrive)."""

    request_id: int


@dataclass(frozen=True)
class Stop:
    """Unload and exit."""


@dataclass(frozen=True)
class AskStats:
    """Answer with Stats."""


@dataclass(frozen=True)
class Threads:
    """Compute with `threads` CPU threads from the next decode step on (the node's share of its
    cores for this runner while other runners generate too; `orc.node.models.runners.cpu_share`).
    Never more than the runner's own `RunnerSettings.threads`; a runtime that cannot change its
    threads, or whose results would change with them, keeps its own."""

    threads: int


Request: TypeAlias = Load | Generate | Cancel | Stop | AskStats | Threads

# -- runner -> node ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Loaded:
    """The model is loaded: `capacity` generations at once, `context_tokens` each, the runner's
    resident memory now."""

    capacity: int
    context_tokens: int
    rss_bytes: int


@dataclass(frozen=True)
class Text:
    """More text of generation `request_id` (batched: at most one frame every 50 ms a generation)."""

    request_id: int
    text: str


@dataclass(frozen=True)
class Done:
    """Generation `request_id` ended; `text` is all of it."""

    request_id: int
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


@dataclass(frozen=True)
class Failed:
    """Generation `request_id` failed (request_id 0 and `load` True: the load failed)."""

    request_id: int
    message: str
    load: bool


@dataclass(frozen=True)
class Stats:
    """The runner now: its resident memory, generations running and waiting inside it, and the
    CPU threads its last decode step ran with (0: its runtime does not say)."""

    rss_bytes: int
    active: int
    queued: int
    threads: int = 0


Reply: TypeAlias = Loaded | Text | Done | Failed | Stats

_TAGS: dict[type, int] = {Load: 1, Generate: 2, Cancel: 3, Stop: 4, AskStats: 5, Threads: 6,
                          Loaded: 11, Text: 12, Done: 13, Failed: 14, Stats: 15}


def encode(message: Request | Reply) -> bytes:
    """The msgpack body of `message` (without the length prefix)."""
    match message:
        case Load(runtime=runtime, model=m, settings=s):
            fields: list[object] = [runtime, [m.id, m.runtime, m.path, m.size_bytes, m.sha256, m.chat],
                                    [s.threads or 0, s.context_tokens, s.slots, s.extra_buffers, s.probe_cache]]
        case Generate(request_id=rid, messages=messages, params=p):
            fields = [rid, [[m.role, m.content] for m in messages],
                      [p.temperature, p.max_tokens, p.seed, list(p.stop), p.top_p]]
        case Cancel(request_id=rid):
            fields = [rid]
        case Threads(threads=threads):
            fields = [threads]
        case Stop() | AskStats():
            fields = []
        case Loaded(capacity=capacity, context_tokens=context, rss_bytes=rss):
            fields = [capacity, context, rss]
        case Text(request_id=rid, text=text):
            fields = [rid, text]
        case Done(request_id=rid, text=text, prompt_tokens=prompt, completion_tokens=completion,
                  finish_reason=reason):
            fields = [rid, text, prompt, completion, reason]
        case Failed(request_id=rid, message=text, load=load):
            fields = [rid, text, load]
        case Stats(rss_bytes=rss, active=active, queued=queued, threads=threads):
            fields = [rss, active, queued, threads]
        case _:
            raise TypeError(f"not a runner message: {message!r}")
    return msgpack.packb([_TAGS[type(message)], *fields], use_bin_type=True)


def frame(message: Request | Reply) -> bytes:
    """`message` as one frame: length prefix and body."""
    body = encode(message)
    return _LENGTH.pack(len(body)) + body


async def read_frame(reader: asyncio.StreamReader, limit: int) -> bytes | None:
    """The body of the next frame, or None at a clean end of the stream (between frames).

    Raises ProtocolError for a length above `limit` (before reading the body) or a stream that
    ends inside a frame.
    """
    try:
        head = await reader.readexactly(_LENGTH.size)
    except asyncio.IncompleteReadError as error:
        if not error.partial:
            return None
        raise ProtocolError("the stream ended inside a frame's length") from None
    (length,) = _LENGTH.unpack(head)
    if length > limit:
        raise ProtocolError(f"a frame of {length} bytes, more than {limit}")
    try:
        return await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        raise ProtocolError("the stream ended inside a frame") from None


def _unpack(body: bytes, max_str: int, max_items: int) -> list[object]:
    try:
        # Each limit bounds what msgpack allocates before any field is looked at.
        items = msgpack.unpackb(body, raw=False, use_list=True, strict_map_key=True, max_str_len=max_str,
                                max_bin_len=0, max_ext_len=0, max_array_len=max_items, max_map_len=0)
    except Exception as error:  # noqa: BLE001 - msgpack raises several types for malformed input
        raise ProtocolError(f"not msgpack: {type(error).__name__}: {error}") from None
    if not isinstance(items, list) or not items or type(items[0]) is not int:
        raise ProtocolError("a frame is an array that starts with a tag")
    return items


def _int(value: object, what: str, low: int = 0, high: int = MAX_COUNT) -> int:
    if type(value) is not int or not low <= value <= high:
        raise ProtocolError(f"{what} must be a whole number from {low} to {high}")
    return value


def _str(value: object, what: str, limit: int) -> str:
    if type(value) is not str or len(value) > limit:
        raise ProtocolError(f"{what} must be text of at most {limit} characters")
    return value


def _bool(value: object, what: str) -> bool:
    if type(value) is not bool:
        raise ProtocolError(f"{what} must be true or false")
    return value


def _fields(items: list[object], count: int, name: str) -> list[object]:
    if len(items) != count + 1:
        raise ProtocolError(f"{name} has {count} fields, not {len(items) - 1}")
    return items[1:]


def decode_reply(body: bytes) -> Reply:
    """A runner's frame as a message, every field checked; ProtocolError otherwise."""
    items = _unpack(body, MAX_REPLY_FRAME_BYTES, MAX_REPLY_ITEMS)
    match items[0]:
        case 11:
            capacity, context, rss = _fields(items, 3, "Loaded")
            return Loaded(_int(capacity, "capacity", 1, 1024), _int(context, "context_tokens", 1), _int(rss, "rss"))
        case 12:
            rid, text = _fields(items, 2, "Text")
            return Text(_int(rid, "request id", 1, MAX_REQUEST_ID), _str(text, "text", MAX_REPLY_FRAME_BYTES))
        case 13:
            rid, text, prompt, completion, reason = _fields(items, 5, "Done")
            return Done(_int(rid, "request id", 1, MAX_REQUEST_ID), _str(text, "text", MAX_REPLY_FRAME_BYTES),
                        _int(prompt, "prompt_tokens"), _int(completion, "completion_tokens"),
                        _str(reason, "finish_reason", 16))
        case 14:
            rid, message, load = _fields(items, 3, "Failed")
            return Failed(_int(rid, "request id", 0, MAX_REQUEST_ID), _str(message, "message", MAX_MESSAGE_CHARS),
                          _bool(load, "load"))
        case 15:
            rss, active, queued, threads = _fields(items, 4, "Stats")
            return Stats(_int(rss, "rss"), _int(active, "active"), _int(queued, "queued"),
                         _int(threads, "threads", 0, MAX_THREADS))
        case tag:
            raise ProtocolError(f"unknown reply tag {tag}")


def decode_request(body: bytes) -> Request:
    """The node's frame as a message (the runner trusts its node, but still checks shapes)."""
    items = _unpack(body, MAX_REQUEST_FRAME_BYTES, 1 << 20)
    try:
        match items[0]:
            case 1:
                runtime, model, settings = _fields(items, 3, "Load")
                mid, mruntime, path, size, sha, chat = model  # type: ignore[misc]
                threads, context, slots, extra, probes = settings  # type: ignore[misc]
                return Load(str(runtime), ModelFields(str(mid), str(mruntime), str(path), int(size), str(sha), bool(chat)),
                            RunnerSettings(int(threads) or None, int(context), int(slots), bool(extra), str(probes)))
            case 2:
                rid, messages, params = _fields(items, 3, "Generate")
                temperature, max_tokens, seed, stop, top_p = params  # type: ignore[misc]
                return Generate(_int(rid, "request id", 1, MAX_REQUEST_ID),
                                tuple(ChatMessage(str(role), str(content)) for role, content in messages),  # type: ignore[union-attr]
                                GenerationParams(float(temperature), int(max_tokens), None if seed is None else int(seed),
                                                 tuple(str(s) for s in stop), None if top_p is None else float(top_p)))  # type: ignore[union-attr]
            case 3:
                (rid,) = _fields(items, 1, "Cancel")
                return Cancel(_int(rid, "request id", 1, MAX_REQUEST_ID))
            case 4:
                _fields(items, 0, "Stop")
                return Stop()
            case 5:
                _fields(items, 0, "AskStats")
                return AskStats()
            case 6:
                (threads,) = _fields(items, 1, "Threads")
                return Threads(_int(threads, "threads", 1, MAX_THREADS))
            case tag:
                raise ProtocolError(f"unknown request tag {tag}")
    except (TypeError, ValueError) as error:
        raise ProtocolError(f"a malformed request: {error}") from None
