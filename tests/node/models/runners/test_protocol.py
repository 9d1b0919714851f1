"""The runner protocol: every message survives encode/decode, and a runner's hostile frames are
refused with ProtocolError, never anything else and never a large allocation."""

from __future__ import annotations

import asyncio
import struct

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orc.node.models.runners.protocol import (
    MAX_MESSAGE_CHARS,
    MAX_REPLY_FRAME_BYTES,
    AskStats,
    Cancel,
    Done,
    Failed,
    Generate,
    Load,
    Loaded,
    ModelFields,
    ProtocolError,
    RunnerSettings,
    Stats,
    Stop,
    Text,
    Threads,
    decode_reply,
    decode_request,
    encode,
    frame,
    read_frame,
)
from orc.node.models.runtimes.base import ChatMessage, GenerationParams

REQUESTS = [
    Load("llama_cpp", ModelFields("smollm2", "llama_cpp", "/m/s.gguf", 98_000_000, "ab" * 32, True),
         RunnerSettings(threads=2, context_tokens=4096, slots=4, extra_buffers=False,
                                   probe_cache="/home/u/.local/state/orc/llama-probes.json")),
    Load("mlx", ModelFields("gemma", "mlx", "/m/g", 1, "", False), RunnerSettings()),
    Generate(7, (ChatMessage("system", "Be brief."), ChatMessage("user", "Hi ✓")),
             GenerationParams(temperature=0.0, max_tokens=48, seed=3, stop=("\n\n", "END"), top_p=0.9)),
    Generate(8, (ChatMessage("user", "x"),), GenerationParams()),
    Cancel(7),
    Stop(),
    AskStats(),
    Threads(1),
    Threads(64),
]
REPLIES = [
    Loaded(capacity=4, context_tokens=2048, rss_bytes=150 << 20),
    Text(7, "Hello, wor"),
    Done(7, "Hello, world", 30, 3, "stop"),
    Failed(0, "cannot load model 'x': not a GGUF file", load=True),
    Failed(7, "the prompt does not fit", load=False),
    Stats(rss_bytes=1 << 30, active=2, queued=1),
    Stats(rss_bytes=1 << 30, active=1, queued=0, threads=8),
]


@pytest.mark.parametrize("message", REQUESTS, ids=repr)
def test_a_request_decodes_to_itself(message: object) -> None:
    assert decode_request(encode(message)) == message  # type: ignore[arg-type]


@pytest.mark.parametrize("message", REPLIES, ids=repr)
def test_a_reply_decodes_to_itself(message: object) -> None:
    assert decode_reply(encode(message)) == message  # type: ignore[arg-type]


def test_a_frame_is_a_length_and_a_body() -> None:
    data = frame(Cancel(9))
    assert struct.unpack(">I", data[:4])[0] == len(data) - 4
    assert decode_request(data[4:]) == Cancel(9)


def packed(*items: object) -> bytes:
    return msgpack.packb(list(items), use_bin_type=True)


@pytest.mark.parametrize(("body", "words"), [
    (b"\xc1", "not msgpack"),
    (packed(), "starts with a tag"),
    (msgpack.packb({"t": 12}), "not msgpack"),  # maps are refused outright (max_map_len 0)
    (packed(99, 1), "unknown reply tag 99"),
    (packed(2, 1, [], []), "unknown reply tag 2"),  # a request is not a reply
    (packed(12, 1), "Text has 2 fields, not 1"),
    (packed(12, 0, "x"), "request id"),
    (packed(12, -1, "x"), "request id"),
    (packed(12, True, "x"), "request id"),  # a bool is not an id
    (packed(12, 1, b"bytes"), "not msgpack"),  # binary is refused outright (max_bin_len 0)
    (packed(12, 1, 5), "text"),
    (packed(11, 0, 2048, 1), "capacity"),
    (packed(11, 100_000, 2048, 1), "capacity"),
    (packed(14, 1, "x" * (MAX_MESSAGE_CHARS + 1), False), "message"),
    (packed(14, 1, "x", 1), "load"),
    (packed(15, 1, 2, 2 ** 64 - 1), "not msgpack"),  # beyond 63 bits: refused by the checks or msgpack
    (packed(13, 1, "x", 1, 1, "s" * 17), "finish_reason"),
    (packed(12, 1, "x", *range(20)), "not msgpack"),  # more items than any reply has
])
def test_a_bad_reply_is_a_protocol_error(body: bytes, words: str) -> None:
    with pytest.raises(ProtocolError) as raised:
        decode_reply(body)
    if words != "not msgpack":
        assert words in str(raised.value)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=256))
def test_any_bytes_decode_to_a_reply_or_a_protocol_error(body: bytes) -> None:
    try:
        reply = decode_reply(body)
    except ProtocolError:
        return
    assert isinstance(reply, (Loaded, Text, Done, Failed, Stats))


def feed(data: bytes, eof: bool = True) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    return reader


def test_a_frame_longer_than_the_limit_is_refused_before_its_body_is_read() -> None:
    async def scenario() -> None:
        # Only the 4-byte header is there: a reader that waited for the body would hang.
        reader = feed(struct.pack(">I", MAX_REPLY_FRAME_BYTES + 1), eof=False)
        with pytest.raises(ProtocolError, match="more than"):
            await asyncio.wait_for(read_frame(reader, MAX_REPLY_FRAME_BYTES), 5)

    asyncio.run(scenario())


def test_the_end_of_the_stream_between_frames_is_clean_and_inside_one_is_not() -> None:
    async def scenario() -> None:
        assert await read_frame(feed(b""), 100) is None
        assert await read_frame(feed(frame(Stop())), 100) == encode(Stop())
        with pytest.raises(ProtocolError, match="inside a frame's length"):
            await read_frame(feed(b"\x00\x00"), 100)
        with pytest.raises(ProtocolError, match="inside a frame"):
            await read_frame(feed(struct.pack(">I", 10) + b"abc"), 100)

    asyncio.run(scenario())


@pytest.mark.parametrize("threads", [0, -1, 1 << 20, 2.0, "2", None, True])
def test_a_threads_message_out_of_range_is_refused(threads: object) -> None:
    with pytest.raises(ProtocolError, match="threads"):
        decode_request(msgpack.packb([6, threads]))
