"""Attention of packed pairs on CPU through our own C kernel (cpu_attention.c), built on first use.

torch's CPU attention (the flash kernel behind SDPA) is slow on what a reranker feeds it: short
pairs (~100 tokens) and small heads (MiniLM: 32 wide). It spent 29% of a bf16 MiniLM forward on
the 2-core CPU, and no faster in bf16 than in fp32. The C kernel does one (pair, head) at a time in
fp32 with its working set in L1/L2: no padding, no mask, 16-float vector blocks, four query rows
per step, the softmax's exponentials by a polynomial the compiler vectorizes, the pairs and heads
shared out over torch's own OpenMP threads (the kernel links the libgomp torch already loaded).

It is compiled once per machine (`cc -O3 -march=native -fopenmp`, fast math by its parts, about a second) into
`$RERANK_KERNEL_CACHE` (default `~/.cache/offline-rerank/kernels`), named by a hash of the source,
the flags, the compiler and this CPU (model and flags: a shared cache never hands a build to a CPU
it was not built for), and loaded with ctypes; several actors building at once each publish
their build atomically. Where there is no C compiler, or the build fails, `available()` says why
and the packed path keeps torch's SDPA (pipeline.modeling.kernels.attention).

Scores: fp32 within 1e-6 of torch's SDPA (another summation order); bf16 is computed in fp32
inside (q, k, v read as bf16, the output rounded once), so it is closer to fp32 than torch's bf16
kernel, which rounds the attention weights to bf16 before the second product.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("cpu_attention.c")
FLAGS = (
    "-O3",
    "-march=native",
    "-fno-math-errno",
    "-fno-trapping-math",
    "-fassociative-math",
    "-fno-signed-zeros",
    "-freciprocal-math",
    "-fopenmp",
    "-fPIC",
    "-shared",
)  # fast math without -ffast-math itself: that links crtfastmath, which flushes denormals process-wide
DTYPES = {torch.float32: 0, torch.bfloat16: 1}
MAX_DIM = 512

_LIB: ctypes.CDLL | None = None
_WHY_NOT: str | None = None  # why the kernel is unavailable, once a build was tried


def cache_dir() -> Path:
    """Where built kernels live ($RERANK_KERNEL_CACHE, else ~/.cache/offline-rerank/kernels)."""
    given = os.environ.get("RERANK_KERNEL_CACHE")
    return Path(given) if given else Path.home() / ".cache" / "offline-rerank" / "kernels"


def _compiler() -> str | None:
    return shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")


def _this_cpu() -> str:
    """What `-march=native` builds for: the architecture and the CPU's model and flags as the OS
    lists them (a cache shared by different machines never hands one another's build)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    wanted = ("flags", "features", "model name", "cpu model")
    listed = sorted({line for line in text.splitlines() if line.lower().startswith(wanted)})
    return "\n".join([platform.machine(), *listed])


def _build(cc: str) -> Path:
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, check=False).stdout
    parts = [SOURCE.read_text(), *FLAGS, version, _this_cpu()]
    key = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]
    target = cache_dir() / f"cpu_attention-{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        done = subprocess.run([cc, *FLAGS, str(SOURCE), "-o", tmp, "-lm"], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"`{cc} {' '.join(FLAGS)} {SOURCE.name}` failed: {done.stderr.strip()[-400:]}")
        os.replace(tmp, target)  # atomic: an actor never loads a half-written build
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _load() -> ctypes.CDLL:
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler (cc or gcc) on PATH")
    lib = ctypes.CDLL(str(_build(cc)))
    fn = lib.rerank_packed_attention
    p, i64, ptr64 = ctypes.c_void_p, ctypes.c_int64, ctypes.POINTER(ctypes.c_int64)
    fn.argtypes = [p, p, p, p, ctypes.c_int, ptr64, i64, i64, i64, i64, ptr64, ptr64, ptr64, ptr64]
    fn.argtypes += [ctypes.c_float, ctypes.c_int, ctypes.c_int]
    fn.restype = ctypes.c_int
    return lib


def available() -> str | None:
    """None if the kernel is built and loaded (building it on first call), else why not."""
    global _LIB, _WHY_NOT
    if _LIB is None and _WHY_NOT is None:
        try:
            _LIB = _load()
        except (OSError, RuntimeError) as err:
            _WHY_NOT = f"the CPU attention kernel did not build: {err}; using torch's SDPA"
            log.warning(_WHY_NOT)
    return _WHY_NOT


def describe() -> str:
    """What packed CPU batches attend with, for the run's summary (builds the kernel if needed)."""
    why_not = available()
    return "cpu_attention.c (built with -march=native)" if why_not is None else f"torch sdpa: {why_not}"


def _strides(x: torch.Tensor) -> ctypes.Array:
    return (ctypes.c_int64 * 2)(x.stride(0), x.stride(1))


@torch.compiler.disable  # a ctypes call: under torch.compile (`--compile on`) the graph breaks here
def packed_attention_cpu(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    causal: bool,
    scale: float | None,
) -> torch.Tensor | None:
    """q [total, heads, dim], k and v [total, kv_heads, dim] (CPU, fp32 or bf16) -> [total, heads,
    dim]; None where the kernel does not apply (another device or dtype, a head wider than 512,
    no kernel on this machine): the caller then uses torch's SDPA."""
    if q.device.type != "cpu" or q.dtype not in DTYPES or k.dtype != q.dtype or v.dtype != q.dtype:
        return None
    if q.shape[-1] > MAX_DIM or q.shape[1] % k.shape[1] or available() is not None:
        return None
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    out = torch.empty(q.shape, dtype=q.dtype)
    cu = cu_seqlens.to(torch.int64).contiguous()
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    assert _LIB is not None
    failed = _LIB.rerank_packed_attention(
        q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(), DTYPES[q.dtype],
        ctypes.cast(cu.data_ptr(), ctypes.POINTER(ctypes.c_int64)), cu.numel() - 1,
        q.shape[1], k.shape[1], q.shape[2], _strides(q), _strides(k), _strides(v), _strides(out),
        scale, int(causal), torch.get_num_threads(),
    )  # fmt: skip
    return None if failed else out
