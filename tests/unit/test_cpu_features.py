"""CPU feature detection from the OS (`pipeline.modeling.kernels.cpu_features`) on fake cpuinfo texts."""

from __future__ import annotations

from pathlib import Path

from pipeline.modeling.kernels.cpu_features import ENV, CpuFeatures, cpu_features, parse_cpuinfo


def cpuinfo(model: str, *flag_sets: str) -> str:
    """A /proc/cpuinfo text with one block per processor, each with its flags."""
    blocks = [
        f"processor\t: {i}\nvendor_id\t: GenuineIntel\nmodel name\t: {model}\nflags\t\t: fpu sse2 {flags}\n"
        for i, flags in enumerate(flag_sets)
    ]
    return "\n".join(blocks)


SAPPHIRE_RAPIDS = "avx2 avx512f avx512_bf16 avx512_vnni amx_bf16 amx_tile amx_int8"
ICE_LAKE = "avx2 avx512f avx512_vnni"


def test_amx_avx512_bf16_and_neither_are_told_apart():
    spr = parse_cpuinfo(cpuinfo("Intel(R) Xeon(R) Platinum 8480+", SAPPHIRE_RAPIDS, SAPPHIRE_RAPIDS))
    assert (spr.amx_bf16, spr.avx512_bf16, spr.native_bf16, spr.describe()) == (True, True, True, "AMX-BF16")
    assert spr.processors == 2 and spr.model_name == "Intel(R) Xeon(R) Platinum 8480+"
    assert "amx_int8" not in spr.flags and "fpu" not in spr.flags  # only the watched flags
    zen4 = parse_cpuinfo(cpuinfo("AMD EPYC 9654", "avx2 avx512f avx512_bf16"))
    assert (zen4.amx_bf16, zen4.native_bf16, zen4.describe()) == (False, True, "AVX512-BF16")
    icx = parse_cpuinfo(cpuinfo("Intel(R) Xeon(R) Gold 6338", ICE_LAKE))
    assert (icx.native_bf16, icx.describe()) == (False, "AVX-512 (no bf16)")
    assert parse_cpuinfo(cpuinfo("Intel(R) Core(TM) i7-9700", "avx2")).describe() == "AVX2 (no bf16)"


def test_a_feature_counts_only_when_every_processor_has_it():
    mixed = parse_cpuinfo(cpuinfo("hybrid", SAPPHIRE_RAPIDS, ICE_LAKE))
    assert mixed.flags == frozenset({"avx2", "avx512f", "avx512_vnni"}) and not mixed.native_bf16
    amx_tile_only = parse_cpuinfo(cpuinfo("partial", "avx512f amx_tile"))
    assert not amx_tile_only.amx_bf16  # AMX needs its bf16 unit too


def test_no_flags_line_or_no_file_means_no_features(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)  # the suite pins fp32 with it (tests/conftest.py)
    arm = "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd bf16 sve\nCPU implementer\t: 0x41\n"
    assert parse_cpuinfo(arm) == CpuFeatures(frozenset(), None, 1)
    assert parse_cpuinfo("") == CpuFeatures(frozenset())
    assert cpu_features(tmp_path / "missing") == CpuFeatures(frozenset())
    path = tmp_path / "cpuinfo"
    path.write_text(cpuinfo("x", SAPPHIRE_RAPIDS))
    assert cpu_features(path).amx_bf16


def test_the_environment_replaces_what_the_os_lists(tmp_path, monkeypatch):
    path = tmp_path / "cpuinfo"
    path.write_text(cpuinfo("x", ICE_LAKE))
    monkeypatch.setenv(ENV, "amx_tile amx_bf16 sse2")  # a VM hiding its AMX
    given = cpu_features(path)
    assert given.amx_bf16 and given.flags == {"amx_tile", "amx_bf16"} and given.source == f"${ENV}"
    monkeypatch.setenv(ENV, "")  # none
    assert not cpu_features(path).flags


def test_this_machine_is_read_without_error(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    found = cpu_features()
    assert isinstance(found.describe(), str)
    if Path("/proc/cpuinfo").is_file():
        assert found.processors >= 1
