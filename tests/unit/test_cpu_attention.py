"""The CPU attention kernel (pipeline/modeling/kernels/cpu_attention.c) against torch's SDPA, per
pair: fp32 and bf16, bidirectional and causal, grouped-query heads, head widths; and what happens
where it cannot be built or does not apply."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pipeline.modeling.kernels import cpu_attention
from pipeline.modeling.kernels.attention import packed_attention

pytestmark = pytest.mark.skipif(
    cpu_attention.available() is not None, reason="no C compiler here: the kernel cannot be built"
)


def per_pair(q, k, v, lengths, causal, scale=None):
    """fp32 SDPA on each pair alone: the reference."""
    out, start = [], 0
    for n in lengths:
        qs, ks, vs = (x[start : start + n].float().transpose(0, 1) for x in (q, k, v))
        if ks.shape[0] != qs.shape[0]:
            ks = ks.repeat_interleave(qs.shape[0] // ks.shape[0], dim=0)
            vs = vs.repeat_interleave(qs.shape[0] // vs.shape[0], dim=0)
        out.append(F.scaled_dot_product_attention(qs, ks, vs, is_causal=causal, scale=scale).transpose(0, 1))
        start += n
    return torch.cat(out)


def packed(lengths, heads, kv_heads, dim, dtype, head_major=True):
    torch.manual_seed(len(lengths) + dim)
    cu = torch.tensor([0, *lengths]).cumsum(0).to(torch.int32)
    total = int(cu[-1])

    def make(h):  # transformers hands [1, heads, total, dim] over: a [total, heads, dim] view
        x = torch.randn(h, total, dim, dtype=dtype)
        return x.transpose(0, 1) if head_major else x.transpose(0, 1).contiguous()

    return make(heads), make(kv_heads), make(kv_heads), cu


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("heads", "kv_heads", "dim"), [(4, 4, 32), (4, 2, 64), (2, 1, 16)])
def test_fp32_equals_sdpa_per_pair(causal, heads, kv_heads, dim):
    lengths = [37, 33, 17, 16, 5, 1]  # whole and partial 16-key blocks, 4-row steps, one token
    q, k, v, cu = packed(lengths, heads, kv_heads, dim, torch.float32)
    got = cpu_attention.packed_attention_cpu(q, k, v, cu, causal, 0.3)
    assert got is not None
    torch.testing.assert_close(got, per_pair(q, k, v, lengths, causal, 0.3), atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_bf16_is_fp32_attention_rounded_once(causal):
    lengths = [70, 64, 9]
    q, k, v, cu = packed(lengths, 3, 3, 32, torch.bfloat16, head_major=False)
    got = cpu_attention.packed_attention_cpu(q, k, v, cu, causal, None)
    want = per_pair(q, k, v, lengths, causal)  # the same bf16 inputs, attended in fp32
    assert got is not None and got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want, atol=1e-5, rtol=2**-8)  # one bf16 rounding


def test_packed_attention_uses_it_on_cpu_and_sdpa_where_it_does_not_apply():
    lengths = [12, 7]
    q, k, v, cu = packed(lengths, 2, 2, 24, torch.float32)  # 24 wide: not whole 16-float blocks
    assert cpu_attention.packed_attention_cpu(q, k, v, cu, False, None) is None
    want = per_pair(q, k, v, lengths, False)
    torch.testing.assert_close(packed_attention(q, k, v, cu, max(lengths), causal=False), want)
    half = q.to(torch.float16)  # a dtype the kernel does not take
    assert cpu_attention.packed_attention_cpu(half, half, half, cu, False, None) is None


def test_no_compiler_leaves_torch_sdpa_with_the_reason(monkeypatch, tmp_path):
    monkeypatch.setattr(cpu_attention, "_LIB", None)
    monkeypatch.setattr(cpu_attention, "_WHY_NOT", None)
    monkeypatch.setattr(cpu_attention, "_compiler", lambda: None)
    monkeypatch.setenv("RERANK_KERNEL_CACHE", str(tmp_path))
    assert "no C compiler" in cpu_attention.describe()
    assert cpu_attention.describe().startswith("torch sdpa")
    lengths = [5, 3]
    q, k, v, cu = packed(lengths, 2, 2, 32, torch.float32)
    assert cpu_attention.packed_attention_cpu(q, k, v, cu, False, None) is None
    torch.testing.assert_close(
        packed_attention(q, k, v, cu, 5, causal=False), per_pair(q, k, v, lengths, False)
    )


def test_a_build_is_cached_per_source_and_published_whole(monkeypatch, tmp_path):
    monkeypatch.setenv("RERANK_KERNEL_CACHE", str(tmp_path))
    cc = cpu_attention._compiler()
    assert cc is not None
    built = cpu_attention._build(cc)
    assert built.parent == tmp_path and built.name.startswith("cpu_attention-")
    stamp = built.stat().st_mtime_ns
    assert cpu_attention._build(cc) == built and built.stat().st_mtime_ns == stamp  # reused
    assert [p.name for p in tmp_path.iterdir()] == [built.name]  # no temporary left behind


def test_loading_the_kernel_leaves_denormals_alone():
    """Built without -ffast-math (gcc links crtfastmath into a -ffast-math shared library, which
    sets flush-to-zero for the whole process, torch's products included)."""
    assert cpu_attention.available() is None
    tiny = torch.tensor([1e-39], dtype=torch.float32)
    assert (tiny * 1.0).item() > 0
