"""A cross-encoder's last layer at each pair's first token only.

The head of a BERT- or RoBERTa-style cross-encoder reads one row of the last layer: the pair's
first token. Of that layer, only the keys and values need every token; its query projection,
attention, output projection and feed-forward are needed at one row per pair. On MiniLM-L6 that
is about a seventh of the forward's products skipped, with the same scores: every weight is the
model's own module, called on fewer rows.

`first_token_layer` runs that layer on a packed row (pipeline.modeling.kernels.packing);
`why_not_prunable` says why a model's last layer is not one it knows (the whole layer then runs).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# transformers' encoder models whose forward is embeddings then encoder.layer (what PackedEncoder
# runs itself), each with its layer of BERT's structure: self-attention (query/key/value), its
# output block (dense, residual, LayerNorm), then feed_forward_chunk (intermediate, output block).
# Not ELECTRA: its model may project the embeddings before the first layer.
LAYERS = {"BertModel": "BertLayer", "RobertaModel": "RobertaLayer", "XLMRobertaModel": "XLMRobertaLayer"}


def why_not_prunable(base: Any) -> str | None:
    """None when `base` (a transformers encoder model) ends in a layer `first_token_layer` runs
    exactly; otherwise what differs."""
    model = type(base).__name__
    if model not in LAYERS:
        return f"{model} is not one of {', '.join(LAYERS)}"
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList) or not len(layers) or not hasattr(base, "embeddings"):
        return f"{model} has no embeddings and encoder.layer list"
    if type(layers[-1]).__name__ != LAYERS[model]:
        return f"its last layer is a {type(layers[-1]).__name__}, not a {LAYERS[model]}"
    layer = layers[-1]
    if getattr(layer, "is_decoder", False) or getattr(layer, "add_cross_attention", False):
        return "it is a decoder"
    if getattr(layer, "chunk_size_feed_forward", 0):
        return "its feed-forward runs in chunks"
    position = getattr(base.config, "position_embedding_type", None) or "absolute"
    if position != "absolute":
        return f"its attention uses {position} position embeddings"
    self_attention = getattr(getattr(layer, "attention", None), "self", None)
    if not all(
        hasattr(self_attention, name)
        for name in ("query", "key", "value", "num_attention_heads", "attention_head_size")
    ):
        return f"its self-attention ({type(self_attention).__name__}) has no query/key/value projections"
    return None


def first_token_layer(
    layer: Any, hidden: torch.Tensor, first: torch.Tensor, cu_seqlens: torch.Tensor, max_length: int
) -> torch.Tensor:
    """`layer`'s output at each pair's first token: hidden [tokens, width] of one packed row (pair i
    holds tokens cu_seqlens[i]:cu_seqlens[i + 1], starting at first[i]) -> [pairs, width]."""
    sa = layer.attention.self
    heads = sa.num_attention_heads
    dim = sa.attention_head_size
    rows = hidden[first]  # [pairs, width]: the residual stream at each pair's first token
    pairs = rows.shape[0]
    q = sa.query(rows).view(pairs, heads, 1, dim)
    k, v = sa.key(hidden), sa.value(hidden)  # [tokens, width]: every token is a key and a value
    steps = torch.arange(max_length, device=hidden.device)
    keep = steps[None, :] < (cu_seqlens[1:] - cu_seqlens[:-1])[:, None]  # [pairs, max_length]
    index = torch.where(keep, first[:, None] + steps[None, :], first[:, None])
    kb = k[index].view(pairs, max_length, heads, dim).transpose(1, 2)  # [pairs, heads, length, dim]
    vb = v[index].view(pairs, max_length, heads, dim).transpose(1, 2)
    scale = getattr(sa, "scaling", dim**-0.5)
    context = F.scaled_dot_product_attention(q, kb, vb, attn_mask=keep[:, None, None, :], scale=scale)
    attended = layer.attention.output(context.reshape(pairs, heads * dim), rows)
    return layer.feed_forward_chunk(attended)
