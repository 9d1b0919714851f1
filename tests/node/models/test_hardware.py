"""CPU feature detection from the text of /proc/cpuinfo, on fixtures of several machines."""

from __future__ import annotations

from pathlib import Path

import pytest

from orc.node.models.hardware import AMX_FLAGS, amx_flags, cpu_flags, read_cpuinfo

# A cloud VM on a 4th-generation Xeon (Sapphire Rapids): one logical CPU's record, flags as Linux
# 6.x prints them under a hypervisor.
SAPPHIRE_RAPIDS = """\
processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
stepping\t: 8
cpu MHz\t\t: 2699.998
cache size\t: 107520 KB
physical id\t: 0
siblings\t: 4
core id\t\t: 0
cpu cores\t: 2
fpu\t\t: yes
cpuid level\t: 31
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr \
sse sse2 ss ht syscall nx pdpe1gb rdtscp lm constant_tsc rep_good nopl xtopology nonstop_tsc cpuid \
tsc_known_freq pni pclmulqdq ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt aes xsave avx f16c \
rdrand hypervisor lahf_lm abm 3dnowprefetch invpcid_single ssbd ibrs ibpb stibp ibrs_enhanced \
fsgsbase tsc_adjust bmi1 hle avx2 smep bmi2 erms invpcid rtm avx512f avx512dq rdseed adx smap \
avx512ifma clflushopt clwb avx512cd sha_ni avx512bw avx512vl xsaveopt xsavec xgetbv1 xsaves \
avx_vnni avx512_bf16 arat avx512vbmi umip pku ospke waitpkg avx512_vbmi2 gfni vaes vpclmulqdq \
avx512_vnni avx512_bitalg avx512_vpopcntdq rdpid cldemote movdiri movdir64b fsrm md_clear \
serialize tsxldtrk amx_bf16 avx512_fp16 amx_tile amx_int8 arch_capabilities
bugs\t\t: spectre_v1 spectre_v2 spec_store_bypass swapgs eibrs_pbrsb bhi
bogomips\t: 5399.99
address sizes\t: 52 bits physical, 57 bits virtual
"""

AMD_EPYC = """\
processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC 7B13
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr \
sse sse2 ht syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good nopl nonstop_tsc \
cpuid extd_apicid tsc_known_freq pni pclmulqdq ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt \
aes xsave avx f16c rdrand hypervisor lahf_lm cmp_legacy cr8_legacy abm sse4a misalignsse \
3dnowprefetch osvw topoext ssbd ibrs ibpb stibp vmmcall fsgsbase tsc_adjust bmi1 avx2 smep bmi2 \
erms invpcid rdseed adx smap clflushopt clwb sha_ni xsaveopt xsavec xgetbv1 clzero xsaveerptr \
arat npt nrip_save umip vaes vpclmulqdq rdpid fsrm

processor\t: 1
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep avx avx2 fma
"""

GRAVITON = """\
processor\t: 0
BogoMIPS\t: 2100.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt \
fcma lrcpc dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs paca pacg \
dcpodp svei8mm svebf16 i8mm bf16 dgh rng
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x1
CPU part\t: 0xd40
CPU revision\t: 1
"""


def test_a_sapphire_rapids_xeon_has_all_three_amx_flags() -> None:
    assert amx_flags(SAPPHIRE_RAPIDS) == AMX_FLAGS == {"amx_tile", "amx_int8", "amx_bf16"}
    assert {"avx512f", "avx512_bf16", "hypervisor"} <= cpu_flags(SAPPHIRE_RAPIDS)


def test_one_amx_flag_is_enough() -> None:
    assert amx_flags("flags\t\t: fpu sse2 avx2 amx_tile\n") == {"amx_tile"}


def test_an_amd_epyc_has_no_amx() -> None:
    assert amx_flags(AMD_EPYC) == set()
    assert {"avx2", "sha_ni", "clzero"} <= cpu_flags(AMD_EPYC)  # the union of every processor's flags


def test_an_arm64_graviton_has_features_and_no_amx() -> None:
    assert amx_flags(GRAVITON) == set()
    assert {"asimd", "i8mm", "bf16", "sve"} <= cpu_flags(GRAVITON)


@pytest.mark.parametrize("text", ["", "\n\n", "processor\t: 0\nmodel name\t: something\n", "flags", "garbage: \0\xff"])
def test_text_without_flags_has_none(text: str) -> None:
    assert cpu_flags(text) == set()
    assert amx_flags(text) == set()


def test_a_flag_must_match_whole() -> None:
    # A flag that merely contains an AMX name (a made-up one) is not AMX.
    assert amx_flags("flags\t: amx_tile_x no_amx_int8 amx\n") == set()


def test_cpuinfo_is_read_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "cpuinfo"
    path.write_text(SAPPHIRE_RAPIDS)
    assert read_cpuinfo(path) == SAPPHIRE_RAPIDS
    assert amx_flags(read_cpuinfo(path)) == AMX_FLAGS


def test_no_cpuinfo_reads_as_empty(tmp_path: Path) -> None:
    assert read_cpuinfo(tmp_path / "absent") == ""  # macOS, or a sandbox without /proc


def test_an_unreadable_cpuinfo_reads_as_empty(tmp_path: Path) -> None:
    # A directory: reading it fails with an OSError, as a file the process may not read does.
    assert read_cpuinfo(tmp_path) == ""


def test_bytes_that_are_not_utf8_do_not_stop_detection(tmp_path: Path) -> None:
    path = tmp_path / "cpuinfo"
    path.write_bytes(b"model name\t: \xff\xfe odd\nflags\t\t: sse2 amx_int8\n")
    assert amx_flags(read_cpuinfo(path)) == {"amx_int8"}
