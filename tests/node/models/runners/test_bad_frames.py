"""A runner that writes a garbage or oversized frame is killed and reported as dead; the node
goes on. The runner here is a stand-in that answers Load correctly, then misbehaves at Generate
(as a runner whose memory llama.cpp corrupted might)."""

from __future__ import annotations

import asyncio
import logging
import struct
import sys
import time
from pathlib import Path

import msgpack
import pytest

from orc.node.models.catalog import ModelEntry, ModelId
from orc.node.models.runners import RunnerRuntime, RunnerSettings
from orc.node.models.runners.protocol import MAX_REPLY_FRAME_BYTES
from orc.node.models.runtimes.base import ChatMessage, GenerationParams, RunnerDied

MISBEHAVING = """
import socket, struct, sys, time
import msgpack

sock = socket.socket(fileno=int(sys.argv[2]))

def read_frame():
    length = struct.unpack(">I", sock.recv(4, socket.MSG_WAITALL))[0]
    return sock.recv(length, socket.MSG_WAITALL)

def send(items):
    body = msgpack.packb(items)
    sock.sendall(struct.pack(">I", len(body)) + body)

read_frame()  # Load
send([11, 1, 2048, 1 << 20])  # Loaded
read_frame()  # Generate
garbage = bytes.fromhex(sys.argv[1])
sock.sendall(garbage)
time.sleep(120)  # until the node kills it
"""


def body(items: list[object]) -> bytes:
    data = msgpack.packb(items)
    return struct.pack(">I", len(data)) + data


GARBAGE = {
    "an oversized frame": struct.pack(">I", MAX_REPLY_FRAME_BYTES + 1),
    "a frame of 4 GiB": b"\xff\xff\xff\xff",
    "bytes that are not msgpack": struct.pack(">I", 3) + b"\xc1\xc1\xc1",
    "an unknown message": body([77, 1]),
    "a text whose id is not a number": body([12, "one", "text"]),
    "a million-item array": struct.pack(">I", 5) + b"\xdd\x00\x0f\x42\x40",
}


@pytest.mark.parametrize("garbage", GARBAGE.values(), ids=GARBAGE.keys())
def test_a_bad_frame_kills_the_runner_and_fails_its_generation(
        garbage: bytes, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    script = tmp_path / "misbehaving.py"
    script.write_text(MISBEHAVING)
    model = ModelEntry(ModelId("smollm2-135m-instruct"), "llama_cpp", tmp_path / "m.gguf", 1, "", "test")
    runtime = RunnerRuntime("llama_cpp", RunnerSettings(), command=(sys.executable, str(script), garbage.hex()))

    async def scenario() -> None:
        try:
            await runtime.load(model)
            runner = runtime.runner(model.id)
            assert runner is not None
            with caplog.at_level(logging.WARNING, logger="orc.node.models.runners"):
                with pytest.raises(RunnerDied) as died:
                    async for _ in runtime.generate(model, [ChatMessage("user", "hi")], GenerationParams()):
                        pass
            assert str(died.value).startswith(f"the runner of {model.id} died: it sent a bad frame (")
            deadline = time.monotonic() + 30
            while Path(f"/proc/{runner.pid}").exists() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert not Path(f"/proc/{runner.pid}").exists()  # killed and reaped
            assert [r.levelno for r in caplog.records if "died" in r.getMessage()] == [logging.WARNING]
            # The node is unaffected: the next use starts a new runner.
            await runtime.load(model)
            again = runtime.runner(model.id)
            assert again is not None and again.pid != runner.pid
        finally:
            await runtime.close()

    asyncio.run(scenario())
