"""Our own MiniCPM layerwise reranker (bge-reranker-v2-minicpm-layerwise) on transformers 5.

FlagEmbedding's model class for it does not import on transformers 5, and the hub's copy is remote
code; this module reads the published checkpoint's tensors directly (no `trust_remote_code`):

    model.embed_tokens.weight                     token embeddings, scaled by `scale_emb`
    model.layers.{i}.self_attn.{q,k,v,o}_proj     grouped-query attention with RoPE
    model.layers.{i}.mlp.{gate,up,down}_proj      SwiGLU-style MLP
    model.layers.{i}.{input,post_attention}_layernorm, model.norm      RMSNorm
    lm_head.{j}.linear_head.weight                one hidden -> 1 head per layer start_layer + j
                                                  (or lm_head.linear_head.weight when head_multi is false)

Residuals are scaled by `scale_depth / sqrt(num_hidden_layers)`. The score for cutoff layer k is
head k - start_layer applied to the final-normed hidden state after k layers, at the last real
token. Only layers up to the largest cutoff are built and loaded. The numerics follow FlagEmbedding's
modeling file (RMSNorm variance in fp32, RoPE applied in fp32 with cos/sin rounded to the model
dtype); inputs are right-padded, so causal attention never lets a real token see padding.
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.modeling.weights import load_tensors
from pipeline.models.hf_config import read_model_config
from pipeline.models.layerwise_config import LayerwiseConfig


def rms_norm(hidden: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    dtype = hidden.dtype
    variance = hidden.to(torch.float32).pow(2).mean(dim=-1, keepdim=True)
    return (hidden * torch.rsqrt(variance + eps)).to(dtype) * weight


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return rms_norm(hidden, self.weight, self.eps)


class Rotary:
    """cos/sin tables computed once in fp32 on the CPU (as MiniCPM does), then cast and moved."""

    def __init__(self, cfg: LayerwiseConfig) -> None:
        self.dim = cfg.hidden_size // cfg.num_attention_heads
        self.base = cfg.rope_theta
        self.max_positions = cfg.max_position_embeddings
        scaling = cfg.rope_scaling or {}
        self.kind = scaling.get("type", scaling.get("rope_type"))
        self.factor = float(scaling.get("factor", 1.0))
        self._cache: dict[tuple[int, torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

    def _tables(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        size = max(length, self.max_positions)
        base = self.base
        if self.kind == "dynamic" and size > self.max_positions:
            base = base * ((self.factor * size / self.max_positions) - (self.factor - 1)) ** (
                self.dim / (self.dim - 2)
            )
        inv_freq = 1.0 / (base ** (torch.arange(0, self.dim, 2).float() / self.dim))
        t = torch.arange(size, dtype=inv_freq.dtype)
        if self.kind == "linear":
            t = t / self.factor
        emb = torch.cat((torch.outer(t, inv_freq),) * 2, dim=-1)
        return emb.cos(), emb.sin()

    def __call__(self, length: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        key = (max(length, self.max_positions), device, dtype)
        if key not in self._cache:
            cos, sin = self._tables(length)
            self._cache[key] = (cos.to(device=device, dtype=dtype), sin.to(device=device, dtype=dtype))
        cos, sin = self._cache[key]
        return cos[:length], sin[:length]


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE in fp32 (positions 0..L-1 of right-padded rows equal the unpadded ones)."""
    x32 = x.float()
    return (x32 * cos + rotate_half(x32) * sin).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, cfg: LayerwiseConfig) -> None:
        super().__init__()
        self.heads = cfg.num_attention_heads
        self.kv_heads = cfg.num_key_value_heads
        self.head_dim = cfg.hidden_size // cfg.num_attention_heads
        bias = cfg.attention_bias
        self.q_proj = nn.Linear(cfg.hidden_size, self.heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(cfg.hidden_size, self.kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(cfg.hidden_size, self.kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.heads * self.head_dim, cfg.hidden_size, bias=bias)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q = self.q_proj(x).view(b, n, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, n, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, n, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if self.kv_heads != self.heads:  # grouped-query attention: each kv head serves a group
            k = k.repeat_interleave(self.heads // self.kv_heads, dim=1)
            v = v.repeat_interleave(self.heads // self.kv_heads, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(out.transpose(1, 2).reshape(b, n, self.heads * self.head_dim))


class MLP(nn.Module):
    def __init__(self, cfg: LayerwiseConfig) -> None:
        super().__init__()
        from transformers.activations import ACT2FN

        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)
        self.act = ACT2FN[cfg.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: LayerwiseConfig) -> None:
        super().__init__()
        self.self_attn = Attention(cfg)
        self.mlp = MLP(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.residual_scale = cfg.scale_depth / math.sqrt(cfg.num_hidden_layers)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin) * self.residual_scale
        return x + self.mlp(self.post_attention_layernorm(x)) * self.residual_scale


class Decoder(nn.Module):
    """The checkpoint's `model.*`, cut after `num_layers` layers."""

    def __init__(self, cfg: LayerwiseConfig, num_layers: int) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class Head(nn.Module):
    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.linear_head = nn.Linear(hidden_size, 1, bias=False)


class LayerwiseReranker(nn.Module):
    """Scores right-padded batches: one column per cutoff layer, in the order they were asked for."""

    def __init__(self, cfg: LayerwiseConfig, cutoff_layers: list[int]) -> None:
        super().__init__()
        self.cfg = cfg
        self.cutoff_layers = cutoff_layers
        self.model = Decoder(cfg, max(cutoff_layers))
        heads = cfg.num_hidden_layers - cfg.start_layer + 1
        self.lm_head: nn.Module = Head(cfg.hidden_size)
        if cfg.head_multi:
            self.lm_head = nn.ModuleList(Head(cfg.hidden_size) for _ in range(heads))
        self.rotary = Rotary(cfg)

    @classmethod
    def load(cls, directory: str, cutoff_layers: list[int] | None, dtype: torch.dtype) -> LayerwiseReranker:
        cfg = LayerwiseConfig.from_dict(read_model_config(directory))
        with torch.device("meta"):
            model = cls(cfg, cfg.resolve_cutoffs(cutoff_layers))
        tensors = load_tensors(directory, model.state_dict().keys())
        model.load_state_dict({k: v.to(dtype) for k, v in tensors.items()}, strict=True, assign=True)
        return model.eval()

    def head(self, layer: int) -> nn.Module:
        head = self.lm_head
        if isinstance(head, nn.ModuleList):
            head = head[layer - self.cfg.start_layer]
        return cast(Head, head).linear_head

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """fp32 scores [rows, len(cutoff_layers)] read at each row's last real token."""
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)
        last = attention_mask.sum(dim=1) - 1
        hidden = self.model.embed_tokens(input_ids) * self.cfg.scale_emb
        cos, sin = self.rotary(input_ids.shape[1], hidden.device, hidden.dtype)
        wanted = set(self.cutoff_layers)
        at_layer: dict[int, torch.Tensor] = {}
        for depth in range(max(self.cutoff_layers) + 1):
            if depth in wanted:  # the norm is per position: norm the last token only
                at_layer[depth] = self.head(depth)(self.model.norm(hidden[rows, last])).float()
            if depth < len(self.model.layers):
                hidden = self.model.layers[depth](hidden, cos, sin)
        return torch.cat([at_layer[k] for k in self.cutoff_layers], dim=1)
