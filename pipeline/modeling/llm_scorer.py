"""LLM reranker scoring: token logits at the last real token, read through the family's score
head (`pipeline.modeling.token_head`): bge-reranker-v2-gemma's "Yes" logit, Qwen3-Reranker's
logit("yes") - logit("no"), mxbai-rerank-v2's logit("1") - logit("0").

FlagEmbedding and the model cards run the full causal LM and read `logits[:, last, tokens]`: logits
over the whole vocabulary (256k for Gemma, 152k for Qwen) at every position, the main memory and
time cost. The score only needs the final hidden state at the last token times the score tokens'
rows of the output embedding (one folded row for a difference), so this module runs the decoder
body alone, gathers one hidden vector per row and applies the head. An untied output embedding is
dropped after its rows are kept.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pipeline.errors import ModelLoadError
from pipeline.modeling.token_head import TokenLogitHead, token_logit_head


class TokenLogitScorer(nn.Module):
    """Wraps a decoder body and a score head; forward gives fp32 scores [rows, 1] for
    right-padded batches."""

    def __init__(self, decoder: nn.Module, head: TokenLogitHead) -> None:
        super().__init__()
        self.decoder = decoder
        self.head = head

    @classmethod
    def load(
        cls,
        directory: str,
        token_ids: Sequence[int],
        weights: Sequence[float],
        dtype: torch.dtype,
        trust_remote_code: bool = False,
    ) -> TokenLogitScorer:
        """The causal LM at `directory`, scored by `weights . logits[token_ids]`."""
        from transformers import AutoModelForCausalLM

        try:
            lm = AutoModelForCausalLM.from_pretrained(
                directory, dtype=dtype, trust_remote_code=trust_remote_code
            )
        except Exception as e:
            raise ModelLoadError(f"cannot load --model {directory!r} as a causal LM for scoring: {e}") from e
        head = token_logit_head(lm, token_ids, weights)
        return cls(lm.get_decoder(), head).eval()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        last = attention_mask.sum(dim=1) - 1
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        # Right padding + causal attention: no real token can see a pad, so no padding mask is
        # needed (and SDPA takes its fast causal path). Positions count from 0 as when unpadded.
        hidden = self.decoder(input_ids=input_ids, position_ids=positions, use_cache=False).last_hidden_state
        final = hidden[torch.arange(input_ids.shape[0], device=hidden.device), last]
        return self.head(final).view(-1, 1)
