"""A test process for the mDNS tests, run inside a network namespace. Prints JSON lines.

    mdns_peer.py node --node-id ID --mesh-id MESH --ip IP [--port P] [--minimal] [--bind]
        runs MdnsDiscovery; prints {"started": ID}, {"hint": {...}} per hint received and
        {"dropped": {reason: count}} whenever its drop counters change.
        Reads commands on stdin: `catalog N` re-advertises with catalog version N.
    mdns_peer.py forge --mesh-id MESH --ip IP
        announces services an orc node must ignore (bad names, bad TXT); prints {"started": "forger"}.
    mdns_peer.py browse
        a plain python-zeroconf browser (not orc code): prints {"txt": {key: value}, "name": NAME,
        "addresses": [...]} with the raw TXT properties of every `_orc._tcp.local.` service it
        resolves, and {"removed": NAME} on goodbyes.

SIGTERM cancels the main task, so the node unregisters cleanly (goodbye packets).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import signal
import sys
import threading

from zeroconf import IPVersion, ServiceStateChange
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from orc.node.protocol.description import PROTOCOL_VERSION, Load, ModelOffer, NodeDescription
from orc.node.links.mdns import SERVICE_TYPE, MdnsDiscovery
from orc.node.links.peer_events import Hint
from orc.node.links.txt import advert_for
from orc.node.models.hardware import probe
from orc.node.protocol.ids import MeshId, NodeId


def emit(record: dict) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def hint_record(hint: Hint) -> dict:
    advert = dataclasses.asdict(hint.advert) if hint.advert is not None else None
    return {"node_id": hint.node_id, "address": hint.address, "source": hint.source.value, "advert": advert}


async def node(args: argparse.Namespace) -> None:
    description = NodeDescription(
        protocol_version=PROTOCOL_VERSION, node_id=NodeId(args.node_id), name="test", mesh_id=MeshId(args.mesh_id),
        addresses=(f"{args.ip}:{args.port}",), hardware=probe(),
        models=(ModelOffer("smollm2-135m-instruct", "llama_cpp", "0" * 64, 1, loaded=True),
                ModelOffer("gemma3-270m", "llama_cpp", "1" * 64, 1, loaded=False)),
        load=Load(), revocation_seq=3, version=1, started_at=0.0,
    )
    advert = advert_for(description, minimal=args.minimal, join_port=None, catalog_version=1)
    discovery = MdnsDiscovery(advert, [args.ip], [args.ip] if args.bind else None,
                              lambda hint: emit({"hint": hint_record(hint)}))
    loop = asyncio.get_running_loop()

    def command(line: str) -> None:
        words = line.split()
        if len(words) == 2 and words[0] == "catalog":
            changed = dataclasses.replace(advert, catalog_version=int(words[1]))
            loop.create_task(discovery.update(changed))

    def read_stdin() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(command, line)

    async def report_drops() -> None:
        reported: dict[str, int] = {}
        while True:
            await asyncio.sleep(0.2)
            if dict(discovery.dropped) != reported:
                reported = dict(discovery.dropped)
                emit({"dropped": reported})

    threading.Thread(target=read_stdin, daemon=True).start()
    runner = asyncio.create_task(discovery.run())
    reporter = asyncio.create_task(report_drops())
    await discovery.started.wait()
    emit({"started": args.node_id})
    try:
        await runner
    finally:
        reporter.cancel()


async def browse(args: argparse.Namespace) -> None:
    aiozc = AsyncZeroconf(ip_version=IPVersion.V4Only)
    tasks: set[asyncio.Task] = set()

    async def resolve(name: str) -> None:
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        if await info.async_request(aiozc.zeroconf, 3000):
            properties = {k.decode(): (v.decode() if v is not None else None) for k, v in info.properties.items()}
            emit({"txt": properties, "name": name, "addresses": info.parsed_addresses()})

    def changed(zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        if state_change is ServiceStateChange.Removed:
            emit({"removed": name})
            return
        task = asyncio.get_running_loop().create_task(resolve(name))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    browser = AsyncServiceBrowser(aiozc.zeroconf, SERVICE_TYPE, handlers=[changed])
    emit({"started": "browser"})
    try:
        await asyncio.Future()
    finally:
        await browser.async_cancel()
        await aiozc.async_close()


async def forge(args: argparse.Namespace) -> None:
    """Announce services an orc node must ignore: junk names, bad TXT, TXT naming another node."""
    aiozc = AsyncZeroconf(ip_version=IPVersion.V4Only)
    good = {"v": str(PROTOCOL_VERSION), "m": args.mesh_id, "rs": "0", "cv": "0"}
    forged = {
        "Living Room Speaker": {**good, "id": "f" * 20},
        "f" * 20: {**good, "id": "f" * 20, "v": str(PROTOCOL_VERSION + 1)},
        "g" * 20: {**good, "id": "h" * 20},
        "k" * 20: {**good, "id": "k" * 20, "rs": "-1"},
    }
    for instance, txt in forged.items():
        info = AsyncServiceInfo(SERVICE_TYPE, f"{instance}.{SERVICE_TYPE}", port=7733, properties=txt,
                                server="forger.local.", parsed_addresses=[args.ip])
        await aiozc.async_register_service(info, cooperating_responders=True)
    emit({"started": "forger"})
    try:
        await asyncio.Future()
    finally:
        await aiozc.async_close()


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    node_parser = sub.add_parser("node")
    node_parser.add_argument("--node-id", required=True)
    node_parser.add_argument("--mesh-id", required=True)
    node_parser.add_argument("--ip", required=True)
    node_parser.add_argument("--port", type=int, default=7733)
    node_parser.add_argument("--minimal", action="store_true")
    node_parser.add_argument("--bind", action="store_true", help="use only the interface of --ip")
    sub.add_parser("browse")
    forge_parser = sub.add_parser("forge")
    forge_parser.add_argument("--mesh-id", required=True)
    forge_parser.add_argument("--ip", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.mode == "node" else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("zeroconf").setLevel(logging.INFO)

    async def guarded() -> None:
        task = asyncio.create_task({"node": node, "browse": browse, "forge": forge}[args.mode](args))
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            emit({"stopped": True})

    asyncio.run(guarded())


if __name__ == "__main__":
    main()
