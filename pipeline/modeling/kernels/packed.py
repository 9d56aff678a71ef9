"""Scoring modules over packed batches (`--attention unpadded`), one per reranker kind. Each wraps
the padded scoring module it was built from and reuses its weights, so both give the same scores:

    forward(input_ids, position_ids, cu_seqlens, first, last, max_length[, token_type_ids])
        -> fp32 scores [pairs, score columns]

with the packed row's tensors from pipeline.modeling.kernels.packing (`max_length` a Python int).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pipeline.errors import ModelLoadError
from pipeline.modeling.kernels import cpu_attention
from pipeline.modeling.kernels.attention import VARLEN, flash_varlen, packed_attention, register_varlen
from pipeline.modeling.kernels.cpu_linear import PackedLinear
from pipeline.modeling.kernels.first_token import first_token_layer, why_not_prunable
from pipeline.modeling.llm_scorer import TokenLogitScorer
from pipeline.modeling.minicpm_layerwise import DecoderLayer, LayerwiseReranker, apply_rotary
from pipeline.models.limits import PADDING_OFFSET_TYPES


def _varlen_kwargs(cu_seqlens: torch.Tensor, max_length: int) -> dict[str, torch.Tensor | int]:
    return {
        "cu_seq_lens_q": cu_seqlens,
        "cu_seq_lens_k": cu_seqlens,
        "max_length_q": max_length,
        "max_length_k": max_length,
    }


def _use_varlen(model: nn.Module) -> str:
    """Points a transformers model's attention at the varlen kernel; returns the implementation it
    had (what `use_packed(..., False)` gives back to it)."""
    loaded = str(getattr(model.config, "_attn_implementation", None) or "sdpa")
    register_varlen()
    model.set_attn_implementation(VARLEN)  # type: ignore[operator]
    return loaded


def use_packed(packed: nn.Module, on: bool) -> None:
    """Sets the transformers model under a packed scoring module to run packed batches (`on`: the
    varlen kernel) or the padded module's right-padded ones again (the implementation it was loaded
    with). The `--attention auto` probe runs both paths on one module's weights. Our own layerwise
    model calls the packed kernel itself: nothing to switch."""
    owner = getattr(packed, "attention_owner", None)
    if owner is not None:
        owner.set_attn_implementation(VARLEN if on else packed.loaded_attention)


class PackedEncoder(nn.Module):
    """A transformers sequence classifier whose head reads the first token: BERT-style (pooler,
    then a linear classifier) or RoBERTa-style (a `*ClassificationHead` on token 0)."""

    model: Any  # a transformers *ForSequenceClassification (typed loosely: its parts vary)

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.model = classifier
        base = getattr(classifier, "base_model", None)
        head = getattr(classifier, "classifier", None)
        self.uses_pooler = getattr(base, "pooler", None) is not None and isinstance(
            head, (nn.Linear, PackedLinear)
        )
        if not self.uses_pooler and not type(head).__name__.endswith("ClassificationHead"):
            raise ModelLoadError(
                f"--attention unpadded supports BERT- and RoBERTa-style cross-encoders; "
                f"{type(classifier).__name__} has another head; use --attention padded"
            )
        config: Any = getattr(classifier, "config", None)
        pad = int(config.pad_token_id or 0)
        self.position_offset = pad + 1 if config.model_type in PADDING_OFFSET_TYPES else 0
        self.loaded_attention = _use_varlen(classifier)
        self.__dict__["attention_owner"] = classifier  # not a second registration of its weights
        # the head reads token 0: the last layer runs at each pair's first token only, where it can
        self.full_last_layer = why_not_prunable(classifier.base_model)

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        cu_seqlens: torch.Tensor,
        first: torch.Tensor,
        last: torch.Tensor,
        max_length: int,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        base = self.model.base_model
        varlen = _varlen_kwargs(cu_seqlens, max_length)
        if self.full_last_layer is None:
            hidden = base.embeddings(
                input_ids=input_ids, position_ids=position_ids, token_type_ids=token_type_ids
            )
            *layers, last_layer = base.encoder.layer
            for layer in layers:
                hidden = layer(hidden, None, position_ids=position_ids, **varlen)
            firsts = first_token_layer(last_layer, hidden[0], first, cu_seqlens, max_length).unsqueeze(1)
        else:
            hidden = base(
                input_ids=input_ids, position_ids=position_ids, token_type_ids=token_type_ids, **varlen
            ).last_hidden_state
            firsts = hidden[0, first].unsqueeze(1)  # [pairs, 1, hidden]: each pair's own token 0
        if self.uses_pooler:
            logits = self.model.classifier(self.model.dropout(base.pooler(firsts)))
        else:
            logits = self.model.classifier(firsts)
        return logits.view(-1, 1).float()


class PackedTokenLogit(nn.Module):
    """The LLM kind (pipeline.modeling.llm_scorer) over a packed row: the family's token-logit
    score at each pair's last token."""

    position_offset = 0

    def __init__(self, scorer: TokenLogitScorer) -> None:
        super().__init__()
        self.scorer = scorer
        self.loaded_attention = _use_varlen(scorer.decoder)
        self.__dict__["attention_owner"] = scorer.decoder

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        cu_seqlens: torch.Tensor,
        first: torch.Tensor,
        last: torch.Tensor,
        max_length: int,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        s = self.scorer
        hidden = s.decoder(
            input_ids=input_ids,
            position_ids=position_ids,
            use_cache=False,
            **_varlen_kwargs(cu_seqlens, max_length),
        ).last_hidden_state
        return s.head(hidden[0, last]).view(-1, 1)


def _packed_layer(
    layer: DecoderLayer,
    x: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_length: int,
) -> torch.Tensor:
    """pipeline.modeling.minicpm_layerwise.DecoderLayer on [tokens, hidden], attention per pair."""
    a = layer.self_attn
    h = layer.input_layernorm(x)
    q = a.q_proj(h).view(-1, a.heads, a.head_dim)
    k = a.k_proj(h).view(-1, a.kv_heads, a.head_dim)
    v = a.v_proj(h).view(-1, a.kv_heads, a.head_dim)
    q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    out = packed_attention(q, k, v, cu_seqlens, max_length, causal=True)
    x = x + a.o_proj(out.reshape(-1, a.heads * a.head_dim)) * layer.residual_scale
    return x + layer.mlp(layer.post_attention_layernorm(x)) * layer.residual_scale


class PackedLayerwise(nn.Module):
    """Our MiniCPM layerwise reranker over a packed row: the same layers, norms, heads and RoPE
    tables, with each token's rotation taken at its position within its own pair."""

    position_offset = 0

    def __init__(self, reranker: LayerwiseReranker) -> None:
        super().__init__()
        self.reranker = reranker

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        cu_seqlens: torch.Tensor,
        first: torch.Tensor,
        last: torch.Tensor,
        max_length: int,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        r = self.reranker
        hidden = r.model.embed_tokens(input_ids[0]) * r.cfg.scale_emb  # [tokens, hidden]
        cos, sin = r.rotary(max_length, hidden.device, hidden.dtype)
        cos, sin = cos[position_ids[0]].unsqueeze(1), sin[position_ids[0]].unsqueeze(1)
        wanted = set(r.cutoff_layers)
        at_layer: dict[int, torch.Tensor] = {}
        for depth in range(max(r.cutoff_layers) + 1):
            if depth in wanted:
                at_layer[depth] = r.head(depth)(r.model.norm(hidden[last])).float()
            if depth < len(r.model.layers):
                layer = r.model.layers[depth]
                hidden = _packed_layer(layer, hidden, cos, sin, cu_seqlens, max_length)  # type: ignore[arg-type]
        return torch.cat([at_layer[k] for k in r.cutoff_layers], dim=1)


def packed_scorer(scorer: nn.Module) -> nn.Module:
    """The packed counterpart of a padded scoring module (pipeline.modeling.reranker.load_scorer)."""
    flash_varlen()  # looked up here, before any forward is compiled
    weight = next(scorer.parameters(), None)
    if weight is not None and weight.device.type == "cpu":
        cpu_attention.available()  # built (or found built) now, not in the first timed batch
    if isinstance(scorer, TokenLogitScorer):
        return PackedTokenLogit(scorer)
    if isinstance(scorer, LayerwiseReranker):
        return PackedLayerwise(scorer)
    inner = getattr(scorer, "model", None)  # EncoderScorer holds the transformers classifier
    if isinstance(inner, nn.Module) and hasattr(inner, "base_model"):
        return PackedEncoder(inner)
    raise ModelLoadError(
        f"--attention unpadded cannot pack batches for {type(scorer).__name__}; use --attention padded"
    )
