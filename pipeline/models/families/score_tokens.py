"""Which output-embedding rows a token-scored family reads, and how their logits combine: the
token ids from the model's tokenizer.json and the weights of the score (`score = w . logits`).
Torch-free, like the rest of `families/`: the scorer (pipeline.modeling.token_head) takes the rows.

The ids follow each family's own code: FlagEmbedding and mxbai-rerank-v2 take the first id the
text tokenizes to; the Qwen3-Reranker card looks the token up (`convert_tokens_to_ids`), which is
the same id when the text is exactly one token, and a wrong score otherwise, so that is checked.
"""

from __future__ import annotations

from pipeline.errors import ModelLoadError
from pipeline.models.families.family import Family
from pipeline.models.text_tokenizer import TextTokenizer

# score kind -> the weight of each token's logit; "token-difference" is logit(t0) - logit(t1)
_WEIGHTS: dict[str, tuple[float, ...]] = {"token": (1.0,), "token-difference": (1.0, -1.0)}


def score_weights(family: Family) -> tuple[float, ...]:
    """The weight of each score token's logit: (1.0,) for one token, (1.0, -1.0) for a difference."""
    weights = _WEIGHTS.get(family.score.kind)
    if weights is None or len(weights) != len(family.score.tokens):
        raise ModelLoadError(
            f"the {family.name} family's score ({family.score.kind!r}, tokens {family.score.tokens}) is "
            "not read from token logits; only 'token' (one token) and 'token-difference' (two) are"
        )
    return weights


def score_token_ids(family: Family, text_tokenizer: TextTokenizer) -> tuple[int, ...]:
    """The vocabulary id of each of the family's score tokens, in `family.score.tokens` order."""
    score_weights(family)  # a family not scored by token logits fails here, with its reason
    encoded = text_tokenizer.ids(list(family.score.tokens))  # no special tokens
    ids: list[int] = []
    for token, token_ids in zip(family.score.tokens, encoded, strict=True):
        if not token_ids:
            raise ModelLoadError(
                f"the tokenizer {str(text_tokenizer.source)!r} turns the {family.name} score token "
                f"{token!r} into no tokens; this model is not a {family.label} reranker"
            )
        if family.score.token_rule == "single-token" and len(token_ids) != 1:
            raise ModelLoadError(
                f"the tokenizer {str(text_tokenizer.source)!r} turns the {family.name} score token "
                f"{token!r} into {len(token_ids)} ids {token_ids}; the family reads one token's logit, "
                f"so this model is not a {family.label} reranker (check --family)"
            )
        ids.append(token_ids[0])
    return tuple(ids)
