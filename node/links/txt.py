"""The mDNS TXT record of an orc node: what it says (`Advert`), encoded and decoded. Pure.

TXT is a **hint**: anyone on the LAN can read and forge it, so nothing is authorized from it;
the authoritative description comes from an mTLS `Describe`. The record is

    v=1                      protocol version
    id=<node id>             20 base32 chars (also the service instance name)
    m=<mesh id>              16 base32 chars
    rs=<int>                 sequence number of the newest revocation-log entry applied
    cv=<int>                 catalog version: bumped when the node's models change
    hw=arch,cores,ram,acc    coarse hardware (RAM as a power-of-two GiB class); full mode only
    md=id,id,...[,+]         ids of loaded models, "+" last when truncated; full mode only
    jp=<port>                join server port, only while an invitation is pending

Each `key=value` string fits the 255-byte limit of one TXT string (RFC 6763 section 6.1) and the
whole record stays well under the 1300 bytes RFC 6763 section 6.2 recommends. When the model ids
do not fit, the list is cut and marked; a reader that wants them all asks `Describe`, and `cv`
tells it when its copy is stale. The port is not in TXT: it comes from the SRV record.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from orc.node.protocol.description import DEFAULT_PORT, PROTOCOL_VERSION, NodeDescription
from orc.node.links.errors import BadPeerAddress
from orc.node.links.static import parse_endpoint
from orc.node.models.hardware import Hardware
from orc.node.protocol.ids import MeshId, NodeId, is_mesh_id, is_node_id

__all__ = [
    "MAX_TXT_BYTES",
    "MAX_TXT_STRING",
    "Advert",
    "HardwareHint",
    "advert_for",
    "decode_txt",
    "encode_txt",
    "ram_class_gib",
]

MAX_TXT_STRING = 255  # one length-prefixed TXT string (RFC 6763 section 6.1)
# A record larger than this was not written by orc (ours stay under ~420 bytes); RFC 6763
# section 6.2 says records should stay under 1300 bytes so they fit one Ethernet packet.
MAX_TXT_BYTES = 1300
# More keys than any orc version writes: a flood of junk keys is dropped unread.
MAX_TXT_KEYS = 32
TRUNCATED_MARK = "+"  # not a model-id character, so it cannot be mistaken for one

_MAX_COUNTER = (1 << 63) - 1  # revocation seq and catalog version fit a signed 64-bit integer
_MAX_CORES = 4096
_MAX_RAM_CLASS_GIB = 1 << 20  # 1 PiB: anything larger is a lie
_MODEL_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")  # the catalog's model-id rule
_TOKEN = re.compile(r"[a-z0-9_]{1,16}")  # arch and accelerator names
_DECIMAL = re.compile(r"(?:0|[1-9][0-9]{0,18})")  # ASCII only: int() would accept "١٢" and "1_0"
_MD_BUDGET = MAX_TXT_STRING - len("md=")


@dataclass(frozen=True)
class HardwareHint:
    """A coarse hardware summary: enough to guess what a node can run, not to fingerprint it."""

    arch: str
    cores: int
    ram_class_gib: int  # total RAM rounded to a power of two (0: unknown)
    accelerator: str  # "metal" | "cuda" | "none" (others accepted from newer peers)


@dataclass(frozen=True)
class Advert:
    """What one node says about itself on the LAN. A hint, never a credential."""

    protocol_version: int
    node_id: NodeId
    mesh_id: MeshId
    port: int
    revocation_seq: int
    hardware: HardwareHint | None  # None: advertise minimal
    models: tuple[str, ...] | None  # loaded model ids; None: advertise minimal
    models_truncated: bool
    catalog_version: int
    join_port: int | None  # set only while an invitation is pending


def ram_class_gib(ram_bytes: int | None) -> int:
    """RAM rounded to the nearest power of two GiB (by ratio), at least 1; 0 when unknown."""
    if not ram_bytes or ram_bytes <= 0:
        return 0
    exponent = round(math.log2(ram_bytes / (1 << 30)))
    return min(1 << max(exponent, 0), _MAX_RAM_CLASS_GIB)


def hardware_hint(hardware: Hardware) -> HardwareHint:
    arch = re.sub(r"[^a-z0-9_]", "", hardware.arch.lower())[:16] or "unknown"
    accelerator = hardware.accelerator if _TOKEN.fullmatch(hardware.accelerator) else "none"
    return HardwareHint(arch, min(max(hardware.cores, 1), _MAX_CORES), ram_class_gib(hardware.ram_total_bytes), accelerator)


def advert_for(description: NodeDescription, minimal: bool, join_port: int | None, catalog_version: int) -> Advert:
    """The advert for a node description; `minimal` leaves out the hardware and the models."""
    if minimal:
        hardware, models, truncated = None, None, False
    else:
        hardware = hardware_hint(description.hardware)
        models, truncated = _fit_models(offer.id for offer in description.models if offer.loaded)
    return Advert(
        protocol_version=PROTOCOL_VERSION,
        node_id=description.node_id,
        mesh_id=description.mesh_id,
        port=_listen_port(description.addresses),
        revocation_seq=min(max(description.revocation_seq, 0), _MAX_COUNTER),
        hardware=hardware,
        models=models,
        models_truncated=truncated,
        catalog_version=min(max(catalog_version, 0), _MAX_COUNTER),
        join_port=join_port,
    )


def _listen_port(addresses: tuple[str, ...]) -> int:
    for address in addresses:
        try:
            return parse_endpoint(address).port
        except BadPeerAddress:
            continue
    return DEFAULT_PORT


def _fit_models(ids: Iterable[str]) -> tuple[tuple[str, ...], bool]:
    """The model ids that fit in one TXT string, in order, and whether some were left out."""
    unique = list(dict.fromkeys(i for i in ids if _MODEL_ID.fullmatch(i)))
    kept: list[str] = []
    used = 0
    for index, model_id in enumerate(unique):
        cost = len(model_id) + (1 if kept else 0)
        more_after = index + 1 < len(unique)
        reserve = len("," + TRUNCATED_MARK) if more_after else 0
        if used + cost + reserve > _MD_BUDGET:
            return tuple(kept), True
        kept.append(model_id)
        used += cost
    return tuple(kept), False


def encode_txt(advert: Advert) -> dict[str, str]:
    """The TXT properties for an advert; raises ValueError for an advert `advert_for` cannot make."""
    txt = {
        "v": str(advert.protocol_version),
        "id": advert.node_id,
        "m": advert.mesh_id,
        "rs": str(advert.revocation_seq),
        "cv": str(advert.catalog_version),
    }
    if advert.hardware is not None:
        hw = advert.hardware
        txt["hw"] = f"{hw.arch},{hw.cores},{hw.ram_class_gib},{hw.accelerator}"
    if advert.models is not None:
        txt["md"] = ",".join(advert.models + ((TRUNCATED_MARK,) if advert.models_truncated else ()))
    if advert.join_port is not None:
        txt["jp"] = str(advert.join_port)
    if decode_txt({k.encode(): v.encode() for k, v in txt.items()}, port=advert.port) != advert:
        raise ValueError(f"advert cannot be encoded faithfully in TXT: {advert!r}")
    return txt


def decode_txt(properties: Mapping[bytes, bytes | None], port: int = DEFAULT_PORT) -> Advert | None:
    """The advert in a TXT record (`port` from its SRV record), or None if anything is malformed.

    Input comes straight off the network: wrong version, bad ids, absurd numbers, non-UTF-8,
    oversize or missing fields all give None. Unknown keys are ignored (newer peers may add
    some). Never raises.
    """
    fields = _text_fields(properties)
    if fields is None or not _is_port(port):
        return None
    version, node_id, mesh_id = fields.get("v"), fields.get("id"), fields.get("m")
    if version != str(PROTOCOL_VERSION) or node_id is None or mesh_id is None:
        return None
    if not is_node_id(node_id) or not is_mesh_id(mesh_id):
        return None
    revocation_seq, catalog_version = _counter(fields.get("rs")), _counter(fields.get("cv"))
    if revocation_seq is None or catalog_version is None:
        return None
    hardware: HardwareHint | None = None
    if "hw" in fields:
        hardware = _hardware(fields["hw"])
        if hardware is None:
            return None
    models: tuple[str, ...] | None = None
    truncated = False
    if "md" in fields:
        parsed = _models(fields["md"])
        if parsed is None:
            return None
        models, truncated = parsed
    join_port: int | None = None
    if "jp" in fields:
        text = fields["jp"]
        if text is None or not _DECIMAL.fullmatch(text) or not _is_port(int(text)):
            return None
        join_port = int(text)
    return Advert(
        protocol_version=PROTOCOL_VERSION,
        node_id=NodeId(node_id),
        mesh_id=MeshId(mesh_id),
        port=port,
        revocation_seq=revocation_seq,
        hardware=hardware,
        models=models,
        models_truncated=truncated,
        catalog_version=catalog_version,
        join_port=join_port,
    )


def _text_fields(properties: object) -> dict[str, str | None] | None:
    """Keys and values as text, or None when the record is oversize or not text."""
    if not isinstance(properties, Mapping) or len(properties) > MAX_TXT_KEYS:
        return None
    fields: dict[str, str | None] = {}
    total = 0
    for key, value in properties.items():
        if not isinstance(key, bytes) or not (value is None or isinstance(value, bytes)):
            return None
        size = len(key) + (0 if value is None else 1 + len(value))
        if size > MAX_TXT_STRING or not key:
            return None
        total += 1 + size
        if total > MAX_TXT_BYTES:
            return None
        try:
            text_key = key.decode("ascii")
            fields[text_key] = None if value is None else value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return fields


def _is_port(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535


def _counter(text: str | None) -> int | None:
    if text is None or not _DECIMAL.fullmatch(text):
        return None
    value = int(text)
    return value if value <= _MAX_COUNTER else None


def _hardware(text: str | None) -> HardwareHint | None:
    if text is None:
        return None
    parts = text.split(",")
    if len(parts) != 4:
        return None
    arch, cores_text, ram_text, accelerator = parts
    if not _TOKEN.fullmatch(arch) or not _TOKEN.fullmatch(accelerator):
        return None
    if not _DECIMAL.fullmatch(cores_text) or not _DECIMAL.fullmatch(ram_text):
        return None
    cores, ram = int(cores_text), int(ram_text)
    if not 1 <= cores <= _MAX_CORES or ram > _MAX_RAM_CLASS_GIB or (ram & (ram - 1)) != 0:
        return None  # ram is 0 (unknown) or a power of two
    return HardwareHint(arch, cores, ram, accelerator)


def _models(text: str | None) -> tuple[tuple[str, ...], bool] | None:
    if text is None:
        return None
    if text == "":
        return (), False
    ids = text.split(",")
    truncated = ids[-1] == TRUNCATED_MARK
    if truncated:
        ids.pop()
    if not all(_MODEL_ID.fullmatch(i) for i in ids) or len(set(ids)) != len(ids):
        return None
    return tuple(ids), truncated
