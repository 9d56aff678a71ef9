"""Reference scores written from the model cards' own published code, independently of pipeline/
(nothing here imports it): the parity tests hold our tokenization and scores to these, and these to
the side venv's goldens (tests/assets/make_family_goldens.py).

- `qwen3_card_scores`: the Qwen3-Reranker model card's transformers code, line for line:
  `format_instruction`, the prefix/suffix token lists, `tokenizer(pairs, padding=False,
  truncation='longest_first', max_length=max_length - len(prefix) - len(suffix))`, a left-padding
  tokenizer, full logits `model(**inputs).logits[:, -1, :]`, "yes"/"no" ids via
  `convert_tokens_to_ids`, and P(yes) as the card computes it (log_softmax over [no, yes], exp).
  The card feeds all its pairs in one batch; here they go `batch_size` at a time, one by default:
  full logits at every position are 310 MB a 512-token pair, and a left-padded batch shifts the
  real tokens' positions, which RoPE ignores in exact arithmetic but not in fp32 (transformers'
  RoPE tables are fp32): ~1e-6 on the tiny test models, near the 1e-5 bar for some.
- `modernbert_card_scores`: gte-reranker-modernbert-base's card: `tokenizer(pairs, padding=True,
  truncation=True, return_tensors='pt', max_length=...)` (a pair: longest_first) and
  `model(**inputs, return_dict=True).logits.view(-1, ).float()`.

mxbai-rerank-v2 has no reference here: mixedbread's package (0.1.6) calls
`tokenizer.prepare_for_model`, which transformers 5 no longer has, so its goldens come from the
package itself in the side venv (transformers 4.57.6).

Runs in the main venv (transformers 5), fp32, CPU.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

# The Qwen3-Reranker card's constants, verbatim.
QWEN3_DEFAULT_TASK = "Given a web search query, retrieve relevant passages that answer the query"
QWEN3_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and "
    'the Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
QWEN3_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"


@dataclass(frozen=True)
class CardScores:
    """One reference run, in pair order."""

    input_ids: list[list[int]]  # the ids the model saw for each pair, without padding
    scores: list[float]  # raw: logit("yes") - logit("no") (qwen3), the one logit (modernbert)
    probabilities: list[float] | None = None  # the card's own score: P(yes) (qwen3)


def format_instruction(instruction: str | None, query: str, doc: str) -> str:
    """The card's `format_instruction`."""
    if instruction is None:
        instruction = QWEN3_DEFAULT_TASK
    output = "<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {doc}".format(  # noqa: UP032 (the card's)
        instruction=instruction, query=query, doc=doc
    )
    return output


def qwen3_card_scores(
    model_dir: str | Path,
    pairs: Sequence[Sequence[str]],
    instruction: str | None = None,
    max_length: int = 8192,
    batch_size: int = 1,
) -> CardScores:
    """The Qwen3-Reranker card's scores of (query, document) `pairs` (its default max_length 8192)."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    token_false_id = tokenizer.convert_tokens_to_ids("no")
    token_true_id = tokenizer.convert_tokens_to_ids("yes")
    prefix_tokens = tokenizer.encode(QWEN3_PREFIX, add_special_tokens=False)
    suffix_tokens = tokenizer.encode(QWEN3_SUFFIX, add_special_tokens=False)

    def process_inputs(texts: list[str]) -> dict[str, torch.Tensor]:
        inputs = tokenizer(
            texts,
            padding=False,
            truncation="longest_first",
            return_attention_mask=False,
            max_length=max_length - len(prefix_tokens) - len(suffix_tokens),
        )
        for i, ele in enumerate(inputs["input_ids"]):
            inputs["input_ids"][i] = prefix_tokens + ele + suffix_tokens
        with warnings.catch_warnings():  # the card's call: "max_length is ignored when padding=True"
            warnings.simplefilter("ignore", UserWarning)
            inputs = tokenizer.pad(inputs, padding=True, return_tensors="pt", max_length=max_length)
        return dict(inputs)

    texts = [format_instruction(instruction, query, doc) for query, doc in pairs]
    out = CardScores(input_ids=[], scores=[], probabilities=[])
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            inputs = process_inputs(texts[start : start + batch_size])
            batch_scores = model(**inputs).logits[:, -1, :]
            true_vector = batch_scores[:, token_true_id]
            false_vector = batch_scores[:, token_false_id]
            stacked = torch.stack([false_vector, true_vector], dim=1)
            stacked = torch.nn.functional.log_softmax(stacked, dim=1)
            out.probabilities.extend(stacked[:, 1].exp().tolist())  # type: ignore[union-attr]
            out.scores.extend((true_vector - false_vector).tolist())
            out.input_ids.extend(_unpadded(inputs))
    return out


def modernbert_card_scores(
    model_dir: str | Path, pairs: Sequence[Sequence[str]], max_length: int
) -> CardScores:
    """gte-reranker-modernbert-base's card scores of (query, document) `pairs`: the raw logit."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32).eval()
    batch = [list(pair) for pair in pairs]
    with torch.no_grad():
        inputs = tokenizer(batch, padding=True, truncation=True, return_tensors="pt", max_length=max_length)
        scores = model(**inputs, return_dict=True).logits.view(-1).float()
    return CardScores(input_ids=_unpadded(dict(inputs)), scores=scores.tolist())


def _unpadded(inputs: dict[str, torch.Tensor]) -> list[list[int]]:
    """Each row's real token ids (attention mask 1), whichever side it was padded on."""
    return [
        [t for t, keep in zip(row, mask) if keep]
        for row, mask in zip(inputs["input_ids"].tolist(), inputs["attention_mask"].tolist())
    ]
