"""Variable-length attention over packed pairs, and the `--attention` modes.

`padded` (today's path): right-padded batches through transformers' SDPA attention (our MiniCPM
calls SDPA itself). Decoders pass no mask (right padding + causal: a real token never sees a pad),
so SDPA takes its fused causal kernel (flash on CUDA); encoders pass the padding mask, which rules
out the flash kernel but not the fused memory-efficient one (tests/gpu checks that the masked
forward runs with the unfused math kernel disabled).

`unpadded`: a micro-batch's pairs packed end to end in one row (pipeline.modeling.kernels.packing):
linear layers, norms and MLPs run on real tokens only, and attention runs per pair, delimited by
`cu_seqlens`: on CUDA in fp16/bf16 through torch's variable-length flash kernel
(`torch.nn.attention.varlen`); on CPU (fp32, bf16) through our C kernel
(pipeline.modeling.kernels.cpu_attention: one pair and head at a time, no padding); elsewhere, or
where that kernel could not be built, each pair's queries, keys and values are scattered into a
padded [pairs, heads, longest, dim] block for one SDPA call and gathered back, which gives the
padded path's numbers. Transformers models reach it through an attention
implementation registered under `VARLEN` (the packing metadata travels in the forward's kwargs,
`cu_seq_lens_q` and `max_length_q`, the names transformers' own varlen kernels take).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F

from pipeline.errors import ModelLoadError
from pipeline.modeling.kernels.cpu_attention import packed_attention_cpu

VARLEN = "rerank_varlen"


_VARLEN: tuple[Any | None, frozenset[str]] | None = None  # flash_varlen()'s answer, once looked up


def flash_varlen() -> tuple[Any | None, frozenset[str]]:
    """torch's variable-length flash attention (torch >= 2.10) and its keywords (they changed
    between torch releases), or (None, empty) when this torch has none. Looked up on first use,
    not at import: `torch.nn.attention.varlen` imports torch._dynamo, which a CPU scoring actor
    never needs here (transformers imports part of it later anyway: ~0.8 s of CPU saved per actor
    start on 2 cores). The packed scorers look it up when they are built, outside any compiled
    region."""
    global _VARLEN
    if _VARLEN is None:
        try:
            from torch.nn.attention.varlen import varlen_attn
        except ImportError:
            _VARLEN = (None, frozenset())
        else:
            _VARLEN = (varlen_attn, frozenset(inspect.signature(varlen_attn).parameters))
    return _VARLEN


def _flash(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu: torch.Tensor, max_len: int, causal: bool, scale
) -> torch.Tensor | None:
    if not q.is_cuda or q.dtype not in (torch.float16, torch.bfloat16):
        return None
    varlen, params = _VARLEN or flash_varlen()
    if varlen is None:
        return None
    if "scale" not in params and scale is not None and abs(scale - q.shape[-1] ** -0.5) > 1e-9:
        return None  # a signature without `scale` and a non-default scale: the block path honours it
    options: dict[str, Any] = {"scale": scale} if "scale" in params else {}
    if causal and "window_size" in params:  # torch >= 2.11
        options["window_size"] = (-1, 0)
    elif causal:  # torch 2.10
        options["is_causal"] = True
    if k.shape[1] != q.shape[1]:
        if "enable_gqa" in params:
            options["enable_gqa"] = True
        else:
            k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
            v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    cu = cu.to(torch.int32)
    return varlen(q.contiguous(), k.contiguous(), v.contiguous(), cu, cu, max_len, max_len, **options)


def _padded_block(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu: torch.Tensor, max_len: int, causal: bool, scale
) -> torch.Tensor:
    """Per-pair attention by one SDPA call over the pairs scattered into a padded block."""
    total, pairs = q.shape[0], cu.shape[0] - 1
    lengths = cu[1:] - cu[:-1]
    owner = torch.repeat_interleave(torch.arange(pairs, device=q.device), lengths, output_size=total)
    within = torch.arange(total, device=q.device) - cu[:-1].long()[owner]

    def block(x: torch.Tensor) -> torch.Tensor:  # [total, heads, dim] -> [pairs, heads, max_len, dim]
        out = x.new_zeros(pairs, max_len, x.shape[1], x.shape[2])
        out[owner, within] = x
        return out.transpose(1, 2)

    qb, kb, vb = block(q), block(k), block(v)
    if kb.shape[1] != qb.shape[1]:
        kb = kb.repeat_interleave(qb.shape[1] // kb.shape[1], dim=1)
        vb = vb.repeat_interleave(qb.shape[1] // vb.shape[1], dim=1)
    if causal:  # right padding: a real query never reaches a pad key under the causal mask
        out = F.scaled_dot_product_attention(qb, kb, vb, is_causal=True, scale=scale)
    else:
        keep = torch.arange(max_len, device=q.device)[None, :] < lengths[:, None]
        out = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=keep[:, None, None, :], scale=scale)
    return out.transpose(1, 2)[owner, within]


def packed_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_length: int,
    *,
    causal: bool,
    scale: float | None = None,
) -> torch.Tensor:
    """Attention of packed pairs: q [total, heads, dim], k and v [total, kv_heads, dim] ->
    [total, heads, dim]; pair i holds tokens cu_seqlens[i]:cu_seqlens[i + 1] and sees only those."""
    out = _flash(q, k, v, cu_seqlens, max_length, causal, scale)
    if out is None:  # None off CPU, and where the C kernel does not apply
        out = packed_attention_cpu(q, k, v, cu_seqlens, causal, scale)
    if out is None:
        out = _padded_block(q, k, v, cu_seqlens, max_length, causal, scale)
    return out


def varlen_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """A transformers attention implementation: q/k/v [1, heads, total, dim] of one packed row,
    output [1, total, heads, dim] (what transformers' SDPA implementation returns)."""
    if "cu_seq_lens_q" not in kwargs:
        raise RuntimeError(
            f"{type(module).__name__}: the {VARLEN!r} attention runs packed batches only "
            "(cu_seq_lens_q missing); score with --attention unpadded through the Reranker"
        )
    if (
        kwargs.get("softcap")
        or getattr(module, "attn_logit_softcapping", None)
        or (getattr(module, "sliding_window", None))
    ):
        raise ModelLoadError(
            f"--attention unpadded does not support {type(module).__name__}'s soft-capped or "
            "sliding-window attention; use --attention padded"
        )
    out = packed_attention(
        query[0].transpose(0, 1),
        key[0].transpose(0, 1),
        value[0].transpose(0, 1),
        kwargs["cu_seq_lens_q"],
        int(kwargs["max_length_q"]),
        causal=bool(
            getattr(module, "is_causal", False) if kwargs.get("is_causal") is None else kwargs["is_causal"]
        ),
        scale=scaling,
    )
    return out.unsqueeze(0), None


def register_varlen() -> None:
    """Makes `VARLEN` a transformers attention implementation (idempotent). No mask function is
    registered with it, so transformers builds no padding mask for it: a packed row has none."""
    from transformers import AttentionInterface

    AttentionInterface.register(VARLEN, varlen_attention_forward)
