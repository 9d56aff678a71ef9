"""LLM reranker scoring (bge-reranker-v2-gemma style): the logit of "Yes" at the last real token.

FlagEmbedding runs the full causal LM and takes `logits[:, last, yes]`: it computes logits over the
whole vocabulary (256k for Gemma) at every position, the main memory and time cost. The score only
needs `final_hidden[last] . W_out[yes]` (+ bias, + Gemma-2 style soft-capping when configured), so
this module runs the decoder body alone, gathers one hidden vector per row, and multiplies it by the
one "Yes" row of the output embedding. An untied output embedding is dropped after its row is kept.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import ModelLoadError


class YesLogitScorer(nn.Module):
    """Wraps a decoder body; forward gives fp32 scores [rows, 1] for right-padded batches."""

    def __init__(
        self, decoder: nn.Module, yes_row: torch.Tensor, yes_bias: torch.Tensor | None, softcap: float | None
    ) -> None:
        super().__init__()
        self.decoder = decoder
        self.yes_row = nn.Parameter(yes_row.detach().clone().view(1, -1), requires_grad=False)
        self.yes_bias = None
        if yes_bias is not None:
            self.yes_bias = nn.Parameter(yes_bias.detach().clone().view(1), requires_grad=False)
        self.softcap = softcap

    @classmethod
    def load(
        cls, directory: str, yes_token_id: int, dtype: torch.dtype, trust_remote_code: bool = False
    ) -> YesLogitScorer:
        from transformers import AutoModelForCausalLM

        try:
            lm = AutoModelForCausalLM.from_pretrained(
                directory, dtype=dtype, trust_remote_code=trust_remote_code
            )
        except Exception as e:
            raise ModelLoadError(f"cannot load --model {directory!r} as a causal LM for scoring: {e}") from e
        head = lm.get_output_embeddings()
        if head is None or not hasattr(head, "weight") or head.weight.shape[0] <= yes_token_id:
            raise ModelLoadError(
                f"--model {directory!r} has no output embedding row for the 'Yes' token id {yes_token_id}"
            )
        softcap = getattr(lm.config, "final_logit_softcapping", None)
        bias = head.bias[yes_token_id] if getattr(head, "bias", None) is not None else None
        return cls(lm.get_decoder(), head.weight[yes_token_id], bias, softcap).eval()

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
        logits = F.linear(final, self.yes_row, self.yes_bias)
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits.float()
