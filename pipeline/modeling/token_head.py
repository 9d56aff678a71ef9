"""The score head of a token-scored LLM reranker: `w . logits[tokens]` at the last real token,
without ever computing vocabulary-sized logits.

The score needs only the k output-embedding rows of its tokens (k = 1 for FlagEmbedding's "Yes",
2 for Qwen3's yes - no and mxbai's "1" - "0"). A linear score folds into one row once:
`w . (rows @ h + b) = (w @ rows) @ h + w . b`, so the head is one [1, h] `F.linear`, as the
"Yes" row always was. Gemma-2 style final-logit soft-capping is a tanh per logit, and a difference
of tanh's is not linear: then the k rows are kept and combined after the cap.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import ModelLoadError


class TokenLogitHead(nn.Module):
    """`head(final_hidden [n, h]) -> [n]` fp32 scores from the score tokens' rows."""

    weights: torch.Tensor  # (k,) fp32, or (1,) of 1.0 once folded

    def __init__(
        self,
        rows: torch.Tensor,
        weights: Sequence[float],
        bias: torch.Tensor | None = None,
        softcap: float | None = None,
    ) -> None:
        super().__init__()
        if rows.dim() != 2 or rows.shape[0] != len(weights):
            raise ValueError(f"rows {tuple(rows.shape)} must be [k, hidden] with k = {len(weights)} weights")
        if bias is not None and bias.shape != (len(weights),):
            raise ValueError(f"bias {tuple(bias.shape)} must be [{len(weights)}], one per row")
        self.softcap = softcap or None  # 0 / None: no cap (config.json writes null)
        w = torch.tensor(list(weights), dtype=torch.float32, device=rows.device)
        rows, bias = rows.detach(), None if bias is None else bias.detach()
        if self.softcap is None:
            # folded once, in fp32, and stored in the model's dtype
            rows = (w @ rows.float()).to(rows.dtype).view(1, -1)
            bias = None if bias is None else (w @ bias.float()).to(bias.dtype).view(1)
            w = torch.ones(1, device=rows.device)
        self.rows = nn.Parameter(rows.clone(), requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias.clone(), requires_grad=False)
        self.register_buffer("weights", w, persistent=False)

    @property
    def is_folded(self) -> bool:
        """True if the score is one row (no soft-capping)."""
        return self.softcap is None

    def forward(self, final_hidden: torch.Tensor) -> torch.Tensor:
        logits = F.linear(final_hidden, self.rows, self.bias)
        if self.softcap is None:
            return logits.float().view(-1)
        # as the model computes its logits (Gemma2ForCausalLM): in its dtype, then combined in fp32
        capped = torch.tanh(logits / self.softcap) * self.softcap
        return capped.float() @ self.weights.float()


def load_rows(model: nn.Module, token_ids: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The output-embedding rows [k, h] of `token_ids` (tied to the input embedding or not) and
    their bias [k] if the head has one; copies, so an untied head can be dropped afterwards."""
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    weight = getattr(head, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        raise ModelLoadError(f"the model ({type(model).__name__}) has no output embedding to score with")
    outside = [i for i in token_ids if not 0 <= i < weight.shape[0]]
    if outside:
        raise ModelLoadError(
            f"the score token ids {outside} are outside the output embedding's {weight.shape[0]} rows; "
            "the tokenizer does not belong to this model"
        )
    index = torch.tensor(list(token_ids), dtype=torch.long, device=weight.device)
    rows = weight.detach().index_select(0, index).clone()
    bias = getattr(head, "bias", None)
    return rows, None if bias is None else bias.detach().index_select(0, index).clone()


def final_logit_softcap(model: nn.Module) -> float | None:
    """The model's Gemma-2 style `final_logit_softcapping` (None when absent, null or 0)."""
    config = getattr(model, "config", None)
    return getattr(config, "final_logit_softcapping", None) or None


def token_logit_head(model: nn.Module, token_ids: Sequence[int], weights: Sequence[float]) -> TokenLogitHead:
    """The head of a loaded causal LM for these score tokens: its rows, bias and soft-cap."""
    rows, bias = load_rows(model, token_ids)
    return TokenLogitHead(rows, weights, bias, final_logit_softcap(model))
