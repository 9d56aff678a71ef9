"""Scores the tiny Qwen3-Reranker, mxbai-rerank-v2 and ModernBERT rerankers with their publishers'
own code, in the side venv `.venv-flag` (transformers 4.57.6; `mxbai-rerank==0.1.6` and its one
import `batched`, both installed --no-deps; sentence-transformers 5.7.0). Run by
tests/assets/make_family_goldens.py (`make family-goldens`), which builds the models in the main
venv and merges what this writes into tests/assets/goldens/families.json; never run by the job or CI:

    .venv-flag/bin/python tests/assets/score_family_goldens.py SPEC.json OUT.json

Each case is scored by:

- mxbai-v2: `mxbai_rerank.MxbaiRerankV2(...).predict(queries, documents, instruction=...)`, the
  package's raw score (logit "1" - logit "0", before its own `normalize`);
- modernbert: sentence-transformers' `CrossEncoder(dir, max_length=..., activation_fn=Identity())`,
  i.e. the raw logit;
- qwen3: sentence-transformers' `CrossEncoder` on the causal LM, which loads it as `Transformer`
  (text-generation) + `LogitScore(yes, no)`: logit "yes" - logit "no" at the last token. The tiny
  model has no chat template, so a copy of it gets a `chat_template.jinja` that renders the
  Qwen3-Reranker card's prompt from the pair's query/document roles (the instruction from a system
  message: `predict(..., prompt=instruction)`), ending in `<think>\\n\\n</think>\\n\\n`.

The token ids stored are the ones the package fed its model (its forward is wrapped to record them,
without padding), one pair per call. Each case runs twice, the model in float32 and in float64:

- `scores`: the package's public call in float32, one pair per call (the bar's precision);
- `scores_fp64`: the same code's exact answer for each pair, unpadded: sentence-transformers pads
  nothing in a one-pair call; mxbai's `predict` pads even one pair on the left to a multiple of 8,
  which moves the real tokens' positions (a no-op for RoPE in exact arithmetic, but transformers
  computes RoPE tables in float32 even for a float64 model: up to ~1e-5 here), so its fp64 score
  is its own `MxbaiRerankV2.forward` on the ids it fed, with no padding. On these tiny models with
  large weights fp32 rounding alone moves a score by up to ~2e-5 between transformers versions,
  so the tests hold the job's fp32 scores to these; `fp32_max_abs_diff_from_fp64` records the
  spread.

The batched call (8 pairs a batch, left-padded by both packages) is run as a check: the same
sequences fed, scores within BATCH_TOLERANCE of the one-pair ones; its largest difference is
recorded (`batched_max_abs_diff`).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from golden_pairs import record_inputs  # run as a script: tests/assets is on sys.path

BATCH_SIZE = 8
BATCH_TOLERANCE = 1e-4
# The Qwen3-Reranker card's prompt, as a chat template over sentence-transformers' pair roles. Jinja
# drops the source's final newline, hence three after </think> for the card's two.
QWEN3_CHAT_TEMPLATE = (
    "{%- macro text(m) -%}{%- if m.content is string -%}{{ m.content }}"
    "{%- else -%}{{ m.content[0].text }}{%- endif -%}{%- endmacro -%}\n"
    '{%- set system = messages | selectattr("role", "eq", "system") | list -%}\n'
    '{%- set query = messages | selectattr("role", "eq", "query") | first -%}\n'
    '{%- set document = messages | selectattr("role", "eq", "document") | first -%}\n'
    "{%- if system -%}{%- set instruction = text(system[0]) -%}"
    "{%- else -%}{%- set instruction = "
    '"Given a web search query, retrieve relevant passages that answer the query" -%}{%- endif -%}\n'
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and "
    'the Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n'
    "<|im_start|>user\n<Instruct>: {{ instruction }}\n<Query>: {{ text(query) }}\n"
    "<Document>: {{ text(document) }}<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n\n"
)
QWEN3_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"


def per_pair_then_batched(score_all, seen: list, pairs: list) -> dict[str, Any]:
    """Each pair's fed ids and score (one call each), checked against one batched call."""
    ids, single = [], []
    for pair in pairs:
        del seen[:]
        single.append(float(score_all([pair])[0]))
        assert len(seen) == 1, f"one pair made {len(seen)} forward rows"
        ids.append(list(seen[0]))
    del seen[:]
    batched = [float(s) for s in score_all(pairs)]
    assert sorted(seen) == sorted(tuple(x) for x in ids), "the batched call fed other token ids"
    np.testing.assert_allclose(batched, single, atol=BATCH_TOLERANCE, rtol=0)
    diff = float(np.max(np.abs(np.array(batched) - np.array(single))))
    return {"input_ids": ids, "scores": single, "batched_max_abs_diff": diff}


def score_mxbai(case: dict, pairs: list, dtype: torch.dtype) -> dict:
    from mxbai_rerank import MxbaiRerankV2  # this venv only

    reranker = MxbaiRerankV2(
        case["model_dir"], device="cpu", torch_dtype=dtype, max_length=case["max_length"]
    )
    assert reranker.model.dtype == dtype
    seen = record_inputs(reranker.model)
    instruction = case["instruction"]

    def score(batch: list) -> list[float]:
        out = []
        for start in range(0, len(batch), BATCH_SIZE):
            chunk = batch[start : start + BATCH_SIZE]
            scores = reranker.predict([q for q, _ in chunk], [d for _, d in chunk], instruction=instruction)
            out.extend(scores.tolist())
        return out

    result = per_pair_then_batched(score, seen, pairs)
    with torch.inference_mode():  # its forward, as predict calls it, on the fed ids alone
        unpadded = [
            reranker.forward(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0].item()
            for ids in (torch.tensor([row]) for row in result["input_ids"])
        ]
    scorer = f"mxbai-rerank {version('mxbai-rerank')} MxbaiRerankV2.predict"
    return {"scorer": scorer, "scores_unpadded": unpadded} | result


def score_cross_encoder(case: dict, pairs: list, work: Path, dtype: torch.dtype) -> dict:
    from sentence_transformers import CrossEncoder  # this venv only

    model_dir = case["model_dir"]
    if case["family"] == "qwen3":
        model_dir = str(work / Path(model_dir).name)
        shutil.copytree(case["model_dir"], model_dir, dirs_exist_ok=True)
        (Path(model_dir) / "chat_template.jinja").write_text(QWEN3_CHAT_TEMPLATE)
    encoder = CrossEncoder(
        model_dir,
        device="cpu",
        max_length=case["max_length"],
        activation_fn=torch.nn.Identity(),
        model_kwargs={"dtype": dtype},
    )
    assert encoder.model.dtype == dtype
    if case["family"] == "qwen3":
        _check_qwen3_template(encoder)
    seen = record_inputs(encoder.model)
    kwargs = {"prompt": case["instruction"]} if case["instruction"] is not None else {}

    def score(batch: list) -> list[float]:
        items = [tuple(p) for p in batch]  # a tensor: numpy output would be cast to float32
        return encoder.predict(items, batch_size=BATCH_SIZE, convert_to_tensor=True, **kwargs).tolist()

    modules = " + ".join(type(m).__name__ for m in encoder)
    scorer = f"sentence-transformers {version('sentence-transformers')} CrossEncoder ({modules})"
    result = per_pair_then_batched(score, seen, pairs)
    return {"scorer": scorer, "scores_unpadded": result["scores"]} | result  # one pair: no padding


def _check_qwen3_template(encoder: Any) -> None:
    """The template renders the card's prompt, ending in its suffix, and ST scores yes - no."""
    tokenizer = encoder[0].tokenizer
    messages = [{"role": "query", "content": "Q"}, {"role": "document", "content": "D"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    assert text.endswith("<Query>: Q\n<Document>: D" + QWEN3_SUFFIX), repr(text)
    head = encoder[1]
    yes, no = tokenizer.convert_tokens_to_ids("yes"), tokenizer.convert_tokens_to_ids("no")
    assert (head.true_token_id, head.false_token_id) == (yes, no), (head.true_token_id, head.false_token_id)


def score_case(case: dict, pairs: list, work: Path, dtype: torch.dtype) -> dict:
    """One case scored by its family's package with the model in `dtype`."""
    if case["family"] == "mxbai-v2":
        return score_mxbai(case, pairs, dtype)
    return score_cross_encoder(case, pairs, work, dtype)


def main(spec_path: str, out_path: str) -> int:
    torch.manual_seed(0)
    spec = json.loads(Path(spec_path).read_text())
    pairs = spec["pairs"]
    cases = []
    with tempfile.TemporaryDirectory() as work:
        for case in spec["cases"]:
            result, exact = (
                score_case(case, pairs, Path(work), dtype) for dtype in (torch.float32, torch.float64)
            )
            assert exact["input_ids"] == result["input_ids"], "float64 fed other token ids"
            spread = np.max(
                np.abs(np.array(result.pop("scores_unpadded")) - np.array(exact["scores_unpadded"]))
            )
            result |= {"scores_fp64": exact["scores_unpadded"], "fp32_max_abs_diff_from_fp64": float(spread)}
            cases.append({k: v for k, v in case.items() if k != "model_dir"} | result)
            print(f"scored {case['family']} max_length={case['max_length']}: {result['scorer']}")
    versions = {
        name: version(name) for name in ("torch", "transformers", "sentence-transformers", "mxbai-rerank")
    }
    Path(out_path).write_text(json.dumps({"versions": versions, "cases": cases}))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
