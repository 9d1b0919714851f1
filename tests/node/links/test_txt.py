"""The mDNS TXT record: encoding fits the limits, decoding treats input as hostile."""

from __future__ import annotations

from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from zeroconf.asyncio import AsyncServiceInfo

from orc.node.protocol.description import DEFAULT_PORT, PROTOCOL_VERSION, Load, ModelOffer, NodeDescription
from orc.node.links.mdns import SERVICE_TYPE
from orc.node.links.txt import (
    MAX_TXT_STRING,
    Advert,
    HardwareHint,
    advert_for,
    decode_txt,
    encode_txt,
    ram_class_gib,
)
from orc.node.models.hardware import Hardware
from orc.node.trust.ids import mesh_id_for, node_id_for

GIB = 1 << 30
NODE = node_id_for(ec.generate_private_key(ec.SECP256R1()).public_key())
MESH = mesh_id_for(ec.generate_private_key(ec.SECP256R1()).public_key())
HARDWARE = Hardware("x86_64", 8, 15 * GIB + GIB // 2, 9 * GIB, "cuda", "Linux")


def offer(model_id: str, loaded: bool = True) -> ModelOffer:
    return ModelOffer(model_id, "llama_cpp", "0" * 64, 1000, loaded)


def description(models: tuple[ModelOffer, ...] = (offer("smollm2-135m-instruct"), offer("gemma3-270m", False)),
                addresses: tuple[str, ...] = ("10.0.0.5:7744",), hardware: Hardware = HARDWARE,
                revocation_seq: int = 4) -> NodeDescription:
    return NodeDescription(1, NODE, "desk", MESH, addresses, hardware, models, Load(), revocation_seq, 1, 0.0)


def wire(txt: dict[str, str]) -> dict[bytes, bytes]:
    return {k.encode(): v.encode() for k, v in txt.items()}


def record_sizes(txt: dict[str, str]) -> list[int]:
    """Lengths of the TXT strings python-zeroconf puts on the wire for these properties."""
    text = AsyncServiceInfo(SERVICE_TYPE, f"{NODE}.{SERVICE_TYPE}", properties=txt).text
    sizes, pos = [], 0
    while pos < len(text):
        sizes.append(text[pos])
        pos += 1 + text[pos]
    assert pos == len(text)
    return sizes


# ---- encoding ----

def test_full_advert_round_trips_with_short_keys() -> None:
    advert = advert_for(description(), minimal=False, join_port=None, catalog_version=12)
    txt = encode_txt(advert)
    assert txt == {"v": str(PROTOCOL_VERSION), "id": NODE, "m": MESH, "rs": "4", "cv": "12",
                   "hw": "x86_64,8,16,cuda", "md": "smollm2-135m-instruct"}
    assert advert.port == 7744  # from the description's listen address, for the SRV record
    assert decode_txt(wire(txt), port=7744) == advert


def test_only_loaded_models_are_advertised() -> None:
    advert = advert_for(description((offer("a"), offer("b", False), offer("c"), offer("a"))), False, None, 1)
    assert advert.models == ("a", "c")
    assert advert.models_truncated is False


def test_minimal_drops_hardware_and_models_entirely() -> None:
    advert = advert_for(description(), minimal=True, join_port=None, catalog_version=3)
    assert advert.hardware is None and advert.models is None
    txt = encode_txt(advert)
    assert set(txt) == {"v", "id", "m", "rs", "cv"}
    assert decode_txt(wire(txt), port=advert.port) == advert


def test_no_loaded_model_is_an_empty_list_not_an_absent_one() -> None:
    advert = advert_for(description(models=()), False, None, 0)
    txt = encode_txt(advert)
    assert txt["md"] == ""
    assert decode_txt(wire(txt), port=advert.port).models == ()


def test_join_port_is_advertised_only_while_set() -> None:
    open_ = advert_for(description(), False, join_port=7734, catalog_version=1)
    assert encode_txt(open_)["jp"] == "7734"
    assert decode_txt(wire(encode_txt(open_)), port=open_.port).join_port == 7734
    assert "jp" not in encode_txt(replace(open_, join_port=None))


def test_port_comes_from_the_first_parsable_listen_address() -> None:
    assert advert_for(description(addresses=("[fd00::5]:9000",)), False, None, 0).port == 9000
    assert advert_for(description(addresses=("bad host!", "h:8000")), False, None, 0).port == 8000
    assert advert_for(description(addresses=()), False, None, 0).port == DEFAULT_PORT


@pytest.mark.parametrize(("ram", "expected"), [
    (None, 0), (0, 0), (256 << 20, 1), (512 << 20, 1), (1 * GIB, 1), (3 * GIB, 4), (6 * GIB, 8),
    (int(7.6 * GIB), 8), (12 * GIB, 16), (15 * GIB + GIB // 2, 16), (64 * GIB, 64), (10**18, 1 << 20),
])
def test_ram_class_is_a_power_of_two_gib(ram: int | None, expected: int) -> None:
    assert ram_class_gib(ram) == expected


def test_hardware_hint_is_sanitized() -> None:
    odd = Hardware("ARM64 (v8)", 0, None, None, "quantum-accelerator-9000", "Linux")
    hint = advert_for(description(hardware=odd), False, None, 0).hardware
    assert hint == HardwareHint("arm64v8", 1, 0, "none")


def test_long_model_lists_are_truncated_marked_and_fit() -> None:
    ids = [f"model-{i:02d}-" + "x" * 50 for i in range(40)]
    advert = advert_for(description(tuple(offer(i) for i in ids)), False, 7734, catalog_version=99)
    assert advert.models_truncated
    assert advert.models == tuple(ids[: len(advert.models)]) and 0 < len(advert.models) < 40
    txt = encode_txt(advert)
    assert txt["md"].endswith(",+")
    sizes = record_sizes(txt)
    assert max(sizes) <= MAX_TXT_STRING
    assert sum(1 + s for s in sizes) < 600  # "well under 1300"
    decoded = decode_txt(wire(txt), port=advert.port)
    assert decoded == advert and decoded.catalog_version == 99


def test_encode_refuses_an_advert_it_cannot_represent() -> None:
    advert = advert_for(description(), False, None, 0)
    with pytest.raises(ValueError):
        encode_txt(replace(advert, models=("Not A Model Id",)))
    with pytest.raises(ValueError):
        encode_txt(replace(advert, join_port=70000))


model_ids = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,63}", fullmatch=True)


@settings(max_examples=200, deadline=None)
@given(
    ids=st.lists(model_ids, max_size=60),
    loaded=st.lists(st.booleans(), min_size=60, max_size=60),
    arch=st.text(max_size=40),
    cores=st.integers(-5, 10**6),
    ram=st.one_of(st.none(), st.integers(-1, 1 << 62)),
    accelerator=st.text(max_size=30),
    minimal=st.booleans(),
    join_port=st.one_of(st.none(), st.integers(1, 65535)),
    catalog_version=st.integers(0, 1 << 70),
    revocation_seq=st.integers(-10, 1 << 70),
)
def test_any_description_encodes_within_limits_and_round_trips(
        ids, loaded, arch, cores, ram, accelerator, minimal, join_port, catalog_version, revocation_seq) -> None:
    models = tuple(offer(i, flag) for i, flag in zip(ids, loaded))
    hardware = Hardware(arch, cores, ram, None, accelerator, "Linux")
    advert = advert_for(description(models, hardware=hardware, revocation_seq=revocation_seq),
                        minimal, join_port, catalog_version)
    txt = encode_txt(advert)
    sizes = record_sizes(txt)
    assert max(sizes) <= MAX_TXT_STRING and sum(1 + s for s in sizes) < 600
    assert decode_txt(wire(txt), port=advert.port) == advert
    if not minimal and not advert.models_truncated:
        assert advert.models == tuple(dict.fromkeys(i for i, flag in zip(ids, loaded) if flag))


# ---- decoding hostile input ----

GOOD = {b"v": str(PROTOCOL_VERSION).encode(), b"id": NODE.encode(), b"m": MESH.encode(), b"rs": b"0", b"cv": b"0"}


def with_(**changes: bytes | None) -> dict[bytes, bytes | None]:
    record: dict[bytes, bytes | None] = dict(GOOD)
    for key, value in changes.items():
        if value is ...:
            record.pop(key.encode(), None)
        else:
            record[key.encode()] = value
    return record


def test_the_minimal_good_record_decodes() -> None:
    advert = decode_txt(GOOD)
    assert advert == Advert(PROTOCOL_VERSION, NODE, MESH, DEFAULT_PORT, 0, None, None, False, 0, None)


def test_unknown_keys_are_ignored() -> None:
    assert decode_txt({**GOOD, b"future": b"whatever", b"flag": None}) is not None


@pytest.mark.parametrize("record", [
    with_(v=b"1"), with_(v=b"3"), with_(v=b"02"), with_(v=None), with_(v=...),
    with_(id=NODE.upper().encode()), with_(id=NODE[:-1].encode()), with_(id=(NODE + "a").encode()),
    with_(id=NODE[:-1].encode() + b"1"), with_(id=...), with_(id=None),
    with_(m=b"short"), with_(m=MESH.upper().encode()), with_(m=...),
    with_(rs=b"-1"), with_(rs=b"+1"), with_(rs=b"1_0"), with_(rs=b" 1"), with_(rs=b"1\n"), with_(rs=b"01"),
    with_(rs="١٢".encode()), with_(rs=b"99999999999999999999"), with_(rs=str(1 << 63).encode()), with_(rs=b""),
    with_(cv=b"x"), with_(cv=...),
    with_(hw=b"x86_64,8,16"), with_(hw=b"x86_64,8,16,none,extra"), with_(hw=b"x86_64,0,16,none"),
    with_(hw=b"x86_64,8,12,none"), with_(hw=b"x86_64,8,2097152,none"), with_(hw=b"X86,8,16,none"),
    with_(hw=b"x86_64,8,16,"), with_(hw=b"x86_64,99999,16,none"), with_(hw=None),
    with_(md=b"a,,b"), with_(md=b"a,A"), with_(md=b"a,a"), with_(md=b"+,a"), with_(md=b"a b"), with_(md=None),
    with_(jp=b"0"), with_(jp=b"65536"), with_(jp=b"x"), with_(jp=None),
    with_(id=b"\xff" * 20), with_(m=b"\xc3\x28" * 8),
], ids=lambda r: repr(r)[:60])
def test_malformed_records_decode_to_none(record: dict[bytes, bytes | None]) -> None:
    assert decode_txt(record) is None


def test_oversize_records_are_refused() -> None:
    assert decode_txt({**GOOD, b"x": b"y" * 254}) is None  # one string over 255 bytes
    assert decode_txt({**GOOD, b"x": b"y" * 253}) is not None
    padding = {f"p{i}".encode(): b"z" * 200 for i in range(7)}
    assert decode_txt({**GOOD, **padding}) is None  # whole record over 1300 bytes
    many = {f"k{i}".encode(): None for i in range(40)}
    assert decode_txt({**GOOD, **many}) is None  # more keys than orc ever writes


@pytest.mark.parametrize("port", [0, -1, 65536, True, "7733", None])
def test_a_bad_srv_port_is_refused(port) -> None:
    assert decode_txt(GOOD, port=port) is None


@pytest.mark.parametrize("properties", [None, [], "v=1", {"v": "1"}, {b"v": 1}, {1: b"1"}, {b"": b"x"}])
def test_wrong_types_are_refused(properties) -> None:
    assert decode_txt(properties) is None


keys = st.one_of(st.sampled_from([b"v", b"id", b"m", b"rs", b"cv", b"hw", b"md", b"jp"]), st.binary(max_size=12))
values = st.one_of(st.none(), st.binary(max_size=300), st.sampled_from([
    b"1", NODE.encode(), MESH.encode(), b"0", b"18446744073709551616", b"x86_64,4,8,none", b"a,b,+", b"7734",
]))


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(keys, values, max_size=12))
def test_decoding_arbitrary_records_never_raises(record: dict[bytes, bytes | None]) -> None:
    advert = decode_txt(record)
    if advert is not None:
        # Whatever is accepted is faithful: encoding it again gives the same advert back.
        assert decode_txt(wire(encode_txt(advert))) == advert


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(sorted(GOOD)), st.binary(max_size=40))
def test_any_corruption_of_one_field_is_caught_or_harmless(key: bytes, value: bytes) -> None:
    advert = decode_txt({**GOOD, key: value})
    if advert is not None:
        assert encode_txt(advert)[key.decode()] == value.decode()
