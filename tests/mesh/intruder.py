"""A client for the multi-host tests that calls a node with whatever credentials it is given.

Written against the generated stubs and grpcio directly (not orc's client code), so the tests
see the daemon from the outside, the way an attacker's own program would. Prints JSON lines.

    intruder.py call TARGET NODE_ID [--ca F] [--key F --cert F] [--plaintext]
        one Describe; prints {"ok": true, "node_id": ...} or {"ok": false, "code": ..., "details": ...}
    intruder.py hold TARGET NODE_ID --ca F --key F --cert F
        opens one channel, calls Describe and opens a Watch stream, prints {"ready": ...}; on each
        stdin line calls Describe again on the same channel and prints the outcome, plus how the
        Watch stream ended if it did ({"watch_ended": CODE}).
    intruder.py hoard TARGET NODE_ID --ca F --key F --cert F --model ID --sha256 HEX --seconds S [--max-offers N]
        a member that takes Offer leases on MODEL in a loop and never executes them, for at most
        S seconds and N Offers; prints {"accepted": A, "refused": R, "reasons": [distinct reasons]}
    intruder.py junk HOST PORT
        sends garbage bytes and a TLS ClientHello-looking blob, prints {"sent": N}
    intruder.py idle HOST PORT COUNT [--seconds S] [--refill]
        opens COUNT TCP connections that never send a byte (COUNT at most 5000; it raises its own
        open-file limit; gives up opening after 30 s), prints {"opened": N, "refused": M,
        "skipped": K}; with --refill, replaces those the server closes (at most 400 a second);
        on each stdin line prints how many are open ({"open": K}); closes them all at stdin EOF
        or after S seconds
    intruder.py many TARGET NODE_ID COUNT --ca F --key F --cert F
        opens COUNT channels (a connection each), calls Describe on each, prints {"ready": OK};
        on each stdin line prints how many are still connected ({"connected": K})
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import select
import socket
import sys
import time

import grpc

from orc.proto.v1 import mesh_pb2, mesh_pb2_grpc


def emit(record: dict) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def read(path: str | None) -> bytes | None:
    if path is None:
        return None
    with open(path, "rb") as f:
        return f.read()


def channel(args: argparse.Namespace) -> grpc.aio.Channel:
    if args.plaintext:
        return grpc.aio.insecure_channel(args.target)
    credentials = grpc.ssl_channel_credentials(read(args.ca), read(args.key), read(args.cert))
    # A connection of its own per channel (by default channels alike share one).
    options = [("grpc.ssl_target_name_override", f"{args.node_id}.orc.internal"), ("grpc.use_local_subchannel_pool", 1)]
    return grpc.aio.secure_channel(args.target, credentials, options=options)


async def describe(stub: mesh_pb2_grpc.NodeStub) -> dict:
    try:
        reply = await stub.Describe(mesh_pb2.DescribeRequest(), timeout=5)
        return {"ok": True, "node_id": reply.node_id}
    except grpc.aio.AioRpcError as error:
        return {"ok": False, "code": error.code().name, "details": error.details()}


async def call(args: argparse.Namespace) -> None:
    async with channel(args) as ch:
        emit(await describe(mesh_pb2_grpc.NodeStub(ch)))


async def hold(args: argparse.Namespace) -> None:
    async with channel(args) as ch:
        stub = mesh_pb2_grpc.NodeStub(ch)
        first = await describe(stub)
        watch = stub.Watch(mesh_pb2.WatchRequest())

        async def drain() -> None:
            try:
                async for _ in watch:
                    pass
                emit({"watch_ended": "OK"})
            except grpc.aio.AioRpcError as error:
                emit({"watch_ended": error.code().name, "details": error.details()})

        watcher = asyncio.create_task(drain())
        emit({"ready": first})
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                break
            emit({"again": await describe(stub)})
        watcher.cancel()


async def hoard(args: argparse.Namespace) -> None:
    accepted, refused, reasons = 0, 0, []
    loop = asyncio.get_running_loop()
    ends = loop.time() + args.seconds
    async with channel(args) as ch:
        stub = mesh_pb2_grpc.NodeStub(ch)
        for _ in range(args.max_offers):
            if loop.time() >= ends:
                break
            try:
                reply = await stub.Offer(mesh_pb2.OfferRequest(run_id="hoard", agent="hoard", model_id=args.model,
                                                               model_sha256=args.sha256, prompt_tokens=8,
                                                               max_tokens=8), timeout=5)
            except grpc.aio.AioRpcError as error:
                refused += 1
                reason = f"{error.code().name}: {error.details()}"
            else:
                accepted += reply.accepted
                refused += not reply.accepted
                reason = reply.reason
            if reason and reason not in reasons and len(reasons) < 20:
                reasons.append(reason)
            await asyncio.sleep(0.05)
    emit({"accepted": accepted, "refused": refused, "reasons": reasons})


def junk(args: argparse.Namespace) -> None:
    sent = 0
    payloads = [os.urandom(4096), b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc" + os.urandom(500),
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + os.urandom(1000), b"GET / HTTP/1.1\r\n\r\n"]
    for payload in payloads:
        try:
            with socket.create_connection((args.host, args.port), timeout=3) as s:
                s.sendall(payload)
                sent += len(payload)
                s.settimeout(1)
                try:
                    s.recv(100)
                except (TimeoutError, OSError):
                    pass
        except OSError:
            pass
    emit({"sent": sent})


MAX_IDLE = 5000  # connections one `idle` run may open: a bounded load
OPEN_WITHIN_S = 30.0  # and only for this long
REFILL_EVERY_S, REFILL_AT_ONCE = 0.5, 200  # --refill: at most 400 new connections a second


def idle(args: argparse.Namespace) -> None:
    count = min(args.count, MAX_IDLE)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count + 64), hard))
    held: list[socket.socket] = []
    began = time.monotonic()
    deadline = began + args.seconds
    opened, refused = connect_idle(args.host, args.port, count, held, began + OPEN_WITHIN_S)
    emit({"opened": opened, "refused": refused, "skipped": count - opened - refused})
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([sys.stdin], [], [], min(REFILL_EVERY_S, max(0.0, deadline - time.monotonic())))
            if ready:
                if not sys.stdin.readline():
                    break
                emit({"open": sum(not closed_by_peer(s) for s in held)})
            if args.refill:  # replace what the server closed, a bounded number at a time
                for sock in [s for s in held if closed_by_peer(s)]:
                    held.remove(sock)
                    sock.close()
                connect_idle(args.host, args.port, min(REFILL_AT_ONCE, count - len(held)), held,
                             time.monotonic() + REFILL_EVERY_S)
    finally:
        for sock in held:
            sock.close()


def connect_idle(host: str, port: int, count: int, held: list[socket.socket], until: float) -> tuple[int, int]:
    """Open up to `count` idle connections into `held` before `until`; (opened, refused)."""
    opened = refused = 0
    for _ in range(count):
        if time.monotonic() > until:
            break
        sock = socket.socket()
        sock.settimeout(3)
        try:
            sock.connect((host, port))
        except OSError:
            sock.close()
            refused += 1
            continue
        sock.setblocking(False)
        held.append(sock)
        opened += 1
    return opened, refused


def closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


async def many(args: argparse.Namespace) -> None:
    channels = []
    try:
        args.plaintext = False
        for _ in range(args.count):
            channels.append(channel(args))
        outcomes = [await describe(mesh_pb2_grpc.NodeStub(ch)) for ch in channels]
        emit({"ready": all(o["ok"] for o in outcomes), "outcomes": outcomes[:3]})
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                break
            states = [ch.get_state(try_to_connect=False) for ch in channels]
            emit({"connected": sum(s == grpc.ChannelConnectivity.READY for s in states)})
    finally:
        for ch in channels:
            await ch.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    for mode in ("call", "hold", "hoard"):
        p = sub.add_parser(mode)
        p.add_argument("target")
        p.add_argument("node_id")
        p.add_argument("--ca")
        p.add_argument("--key")
        p.add_argument("--cert")
        p.add_argument("--plaintext", action="store_true")
    p.add_argument("--model", required=True)
    p.add_argument("--sha256", required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--max-offers", type=int, default=2000)
    p = sub.add_parser("junk")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p = sub.add_parser("idle")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("count", type=int)
    p.add_argument("--seconds", type=float, default=120.0)
    p.add_argument("--refill", action="store_true")
    p = sub.add_parser("many")
    p.add_argument("target")
    p.add_argument("node_id")
    p.add_argument("count", type=int)
    p.add_argument("--ca")
    p.add_argument("--key")
    p.add_argument("--cert")
    args = parser.parse_args()
    if args.mode == "call":
        asyncio.run(call(args))
    elif args.mode == "hold":
        asyncio.run(hold(args))
    elif args.mode == "hoard":
        asyncio.run(hoard(args))
    elif args.mode == "idle":
        idle(args)
    elif args.mode == "many":
        asyncio.run(many(args))
    else:
        junk(args)


if __name__ == "__main__":
    main()
