"""What the CPU can do for bf16, read from the OS (Linux's /proc/cpuinfo), without torch: the
facts `--dtype auto` on CPU is to be decided from (issue 27), and what a run's summary names.

- AMX (`amx_bf16`, `amx_tile`: Sapphire Rapids and later) multiplies bf16 tiles in hardware;
- AVX512-BF16 (`avx512_bf16`: Cooper Lake, Zen 4) has bf16 dot products;
- without either, bf16 is converted to fp32 around every product: slower than fp32 itself.

A feature counts only when every processor listed has it (a hybrid CPU's cores may differ). A
machine without /proc/cpuinfo (macOS, Windows) or without a `flags` line (ARM's says `Features`)
reports none: the caller falls back to fp32.

`RERANK_CPU_FLAGS`, when set, replaces what the OS lists (whitespace-separated flags in
/proc/cpuinfo's spelling; empty: none): for a virtual machine whose /proc/cpuinfo hides a feature
its cores have (or shows one they lack), and for the test suite, which pins fp32 with it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
ENV = "RERANK_CPU_FLAGS"
# the flags that matter here, in /proc/cpuinfo's spelling
WATCHED = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")


@dataclass(frozen=True)
class CpuFeatures:
    """The watched flags every processor has, the model name, and how many processors there are."""

    flags: frozenset[str]
    model_name: str | None = None
    processors: int = 0
    source: str = str(CPUINFO)  # where the flags were read: /proc/cpuinfo, or $RERANK_CPU_FLAGS

    @property
    def amx_bf16(self) -> bool:
        return {"amx_tile", "amx_bf16"} <= self.flags

    @property
    def avx512_bf16(self) -> bool:
        return "avx512_bf16" in self.flags

    @property
    def native_bf16(self) -> bool:
        """True if bf16 products run in hardware (AMX or AVX512-BF16)."""
        return self.amx_bf16 or self.avx512_bf16

    def describe(self) -> str:
        """For logs and the summary: "AMX-BF16", "AVX512-BF16", "AVX-512 (no bf16)", ..."""
        if self.amx_bf16:
            return "AMX-BF16"
        if self.avx512_bf16:
            return "AVX512-BF16"
        if "avx512f" in self.flags:
            return "AVX-512 (no bf16)"
        if "avx2" in self.flags:
            return "AVX2 (no bf16)"
        return "no bf16 or AVX-512 features known"


def parse_cpuinfo(text: str) -> CpuFeatures:
    """The features in a /proc/cpuinfo text: the watched flags common to every processor."""
    common: set[str] | None = None
    model_name: str | None = None
    processors = 0
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip()
        if key == "processor":
            processors += 1
        elif key == "model name" and model_name is None:
            model_name = value.strip()
        elif key == "flags":
            flags = set(value.split()) & set(WATCHED)
            common = flags if common is None else common & flags
    return CpuFeatures(frozenset(common or ()), model_name, processors)


def cpu_features(path: Path = CPUINFO) -> CpuFeatures:
    """This machine's features (none where the OS does not list them), or $RERANK_CPU_FLAGS's."""
    given = os.environ.get(ENV)
    if given is not None:
        return CpuFeatures(frozenset(given.split()) & set(WATCHED), source=f"${ENV}")
    try:
        return parse_cpuinfo(path.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return CpuFeatures(frozenset())
