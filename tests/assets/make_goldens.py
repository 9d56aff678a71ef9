"""Computes FlagEmbedding 1.4.2 golden scores for the tiny encoder rerankers.

FlagEmbedding does not import under transformers 5, so this runs only in the side venv
(transformers 4.57.6), never in the job or in CI:

    make goldens        # or: .venv-flag/bin/python tests/assets/make_goldens.py

It writes tests/assets/goldens/encoder.json: for each (model, max_length, query_max_length) case,
the pairs, FlagEmbedding's token ids for each pair and its `compute_score` outputs (fp32, raw and
normalize=True). tests/unit/test_parity.py checks our tokenization and scores against it.

It also writes tests/assets/goldens/decoder.json for the LLM reranker (`FlagLLMReranker`, tiny
gemma-shaped model) and the layerwise reranker (`LayerWiseFlagLLMReranker`, tiny
minicpm-layerwise-shaped checkpoint, several `cutoff_layers`). The token ids stored there are the
ones FlagEmbedding actually fed its model: the model's forward is wrapped to record them, and the
script checks that they are exactly the sequences built here (pair order differs: it sorts).
tests/unit/test_decoder_parity.py checks against it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from FlagEmbedding import FlagReranker
from FlagEmbedding.utils.tokenizer_compat import prepare_for_model_compat
from golden_pairs import make_pairs, record_inputs  # run as a script: tests/assets is on sys.path

ASSETS = Path(__file__).resolve().parent

# (model, max_length, query_max_length or None for FlagEmbedding's default max_length * 3 // 4)
CASES = [
    ("tiny-bert", 512, None),
    ("tiny-bert", 64, None),
    ("tiny-xlmr", 512, None),
    ("tiny-xlmr", 64, 20),
]


def golden_case(model: str, max_length: int, query_max_length: int | None, pairs: list) -> dict:
    reranker = FlagReranker(str(ASSETS / "models" / model), use_fp16=False, devices=["cpu"])
    qmax = query_max_length if query_max_length is not None else max_length * 3 // 4
    tok = reranker.tokenizer
    input_ids = []
    for query, passage in pairs:
        q = tok(query, add_special_tokens=False, max_length=qmax, truncation=True)["input_ids"]
        p = tok(passage, add_special_tokens=False, max_length=max_length, truncation=True)["input_ids"]
        item = prepare_for_model_compat(
            tok, q, p, truncation="only_second", max_length=max_length, padding=False
        )
        input_ids.append(list(item["input_ids"]))
    kwargs = {"max_length": max_length, "batch_size": 8}
    if query_max_length is not None:
        kwargs["query_max_length"] = query_max_length
    raw = reranker.compute_score(pairs, **kwargs)
    norm = reranker.compute_score(pairs, normalize=True, **kwargs)
    return {
        "model": model,
        "max_length": max_length,
        "query_max_length": qmax,
        "input_ids": input_ids,
        "scores": [float(s) for s in raw],
        "scores_normalized": [float(s) for s in norm],
    }


# (kind, model, max_length, query_max_length or None, prompt or None, cutoff_layers or None)
DECODER_CASES = [
    ("llm", "tiny-gemma", 512, None, None, None),
    ("llm", "tiny-gemma", 64, None, None, None),
    ("llm", "tiny-gemma", 128, 20, "Is B relevant to A? Answer Yes or No.", None),
    ("layerwise", "tiny-minicpm-layerwise", 512, None, None, None),
    ("layerwise", "tiny-minicpm-layerwise", 512, None, None, [2, 4, 6]),
    ("layerwise", "tiny-minicpm-layerwise", 64, 30, None, [3]),
]


def decoder_ids(tok, pairs, max_length: int, qmax: int, prompt: str | None, always_bos: bool) -> list:
    """FlagEmbedding's decoder layout, built with its own helper (see BaseLLMReranker)."""
    prompt = prompt or (
        "Given a query A and a passage B, determine whether the passage contains an answer to the "
        "query by providing a prediction of either 'Yes' or 'No'."
    )
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    sep = tok("\n", add_special_tokens=False)["input_ids"]
    with_bos = always_bos or (tok.bos_token_id is not None and tok.bos_token_id != tok.pad_token_id)
    out = []
    for query, passage in pairs:
        q = tok("A: " + query, add_special_tokens=False, max_length=qmax, truncation=True)["input_ids"]
        p = tok("B: " + passage, add_special_tokens=False, max_length=max_length, truncation=True)[
            "input_ids"
        ]
        item = prepare_for_model_compat(
            tok,
            ([tok.bos_token_id] if with_bos else []) + q,
            sep + p,
            truncation="only_second",
            max_length=max_length + len(sep) + len(prompt_ids),
            padding=False,
            return_attention_mask=False,
            return_token_type_ids=False,
            add_special_tokens=False,
        )
        out.append(list(item["input_ids"]) + sep + prompt_ids)
    return out


def decoder_case(kind, model, max_length, query_max_length, prompt, cutoff_layers, pairs) -> dict:
    from FlagEmbedding import FlagLLMReranker, LayerWiseFlagLLMReranker

    path = str(ASSETS / "models" / model)
    if kind == "llm":
        reranker = FlagLLMReranker(path, use_fp16=False, devices=["cpu"])
    else:
        reranker = LayerWiseFlagLLMReranker(path, use_fp16=False, devices=["cpu"])
        reranker.model.config.use_cache = False  # its cache path crashes on transformers 4.57
    qmax = query_max_length if query_max_length is not None else max_length * 3 // 4
    ids = decoder_ids(reranker.tokenizer, pairs, max_length, qmax, prompt, always_bos=kind == "layerwise")
    kwargs = {"max_length": max_length, "batch_size": 8}
    if query_max_length is not None:
        kwargs["query_max_length"] = query_max_length
    if prompt is not None:
        kwargs["prompt"] = prompt
    if cutoff_layers is not None:
        kwargs["cutoff_layers"] = cutoff_layers
    seen = record_inputs(reranker.model)
    raw = reranker.compute_score(pairs, **kwargs)
    fed = seen[8:]  # the first batch is compute_score's batch-size probe
    assert sorted(fed) == sorted(tuple(x) for x in ids), "token ids differ from what FlagEmbedding fed"
    norm = reranker.compute_score(pairs, normalize=True, **kwargs)
    per_layer = raw if raw and isinstance(raw[0], list) else [raw]
    per_layer_norm = norm if norm and isinstance(norm[0], list) else [norm]
    return {
        "kind": kind,
        "model": model,
        "max_length": max_length,
        "query_max_length": qmax,
        "prompt": prompt,
        "cutoff_layers": cutoff_layers,
        "input_ids": ids,
        "scores": [[float(s) for s in layer] for layer in per_layer],
        "scores_normalized": [[float(s) for s in layer] for layer in per_layer_norm],
    }


def main() -> int:
    torch.manual_seed(0)
    pairs = make_pairs()
    out = ASSETS / "goldens" / "encoder.json"
    out.parent.mkdir(exist_ok=True)
    if "--decoder-only" not in sys.argv:
        cases = [golden_case(m, ml, qml, pairs) for m, ml, qml in CASES]
        out.write_text(json.dumps({"flagembedding": "1.4.2", "pairs": pairs, "cases": cases}, indent=1))
        print(f"wrote {out}")
    cases = [decoder_case(*c, pairs) for c in DECODER_CASES]
    out = ASSETS / "goldens" / "decoder.json"
    out.write_text(json.dumps({"flagembedding": "1.4.2", "pairs": pairs, "cases": cases}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
