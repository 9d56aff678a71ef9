"""The GPU benchmark's parity rows, on the tiny golden models (tests/assets) and the device under test:

- precision: fp16 and bf16 scores against fp32 (padded eager, the job's path), per golden case;
- kernels: every `--attention` x `--compile` path against the padded eager path in the same dtype
  (fp32 and, on CUDA, fp16, where the unpadded path runs torch's varlen flash kernel).

Each row gives the largest absolute difference, the largest |fp32 score| (for scale) and the
correlation; the suite's own checks of the same (tests/unit/test_kernel_parity.py, tests/gpu) hold
them to tolerances, this only reports them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np

from bench.gpu.models import ASSETS
from pipeline.config import DEFAULT_PROMPT
from pipeline.modeling.reranker import Reranker
from pipeline.models.pair_tokenizer import PairTokenizer
from pipeline.models.prompt_tokenizer import PromptPairTokenizer

GOLDENS = ASSETS.parent / "goldens"
PATHS = (("padded", False), ("padded", True), ("unpadded", False), ("unpadded", True))
DEVICE_DTYPE = {"cuda": "float16", "cpu": "float32"}  # the job's default dtype on each device


def golden_cases() -> list[dict[str, Any]]:
    """(model dir, kind, cutoffs, token ids, token types) of every golden case."""
    cases = []
    encoder = json.loads((GOLDENS / "encoder.json").read_text())
    queries, passages = [p[0] for p in encoder["pairs"]], [p[1] for p in encoder["pairs"]]
    for case in encoder["cases"]:
        path = str(ASSETS / case["model"])
        enc = PairTokenizer.load(path, case["max_length"], case["query_max_length"]).encode(queries, passages)
        cases.append(_case(case, "encoder", None, enc))
    decoder = json.loads((GOLDENS / "decoder.json").read_text())
    queries, passages = [p[0] for p in decoder["pairs"]], [p[1] for p in decoder["pairs"]]
    for case in decoder["cases"]:
        tok = PromptPairTokenizer.load(
            str(ASSETS / case["model"]),
            case["max_length"],
            case["query_max_length"],
            case["prompt"] or DEFAULT_PROMPT,
            always_bos=case["kind"] == "layerwise",
        )
        cases.append(_case(case, case["kind"], case["cutoff_layers"], tok.encode(queries, passages)))
    return cases


def _case(case: dict, kind: str, cutoffs: list[int] | None, enc: dict) -> dict[str, Any]:
    return {
        "model": case["model"],
        "max_length": case["max_length"],
        "kind": kind,
        "cutoff_layers": cutoffs,
        "ids": enc["input_ids"],
        "types": enc.get("token_type_ids"),
    }


def _compare(reference: np.ndarray, other: np.ndarray) -> dict[str, float]:
    finite = np.isfinite(other).all()
    corr = float(np.corrcoef(reference[:, 0], other[:, 0])[0, 1]) if finite and len(other) > 1 else None
    return {
        "max_abs_diff": float(np.abs(reference - other).max()) if finite else float("inf"),
        "max_abs_score": float(np.abs(reference).max()),
        "correlation": None if corr is None else round(corr, 6),
    }


def parity_rows(
    device: str, compile_backend: str | Callable[..., Any], compiled_models: int, all_cases: bool = True
) -> dict[str, list[dict]]:
    """Precision rows for every golden case (or each model's first one); kernel rows: unpadded for
    the same cases, compiled ones (a compile each) for the first case of the first
    `compiled_models` models."""
    precision, kernels = [], []
    compiled_for: list[str] = []
    seen: set[str] = set()
    for case in golden_cases():
        if not all_cases and case["model"] in seen:
            continue
        seen.add(case["model"])
        compile_this = case["model"] not in compiled_for and len(compiled_for) < compiled_models
        if compile_this:
            compiled_for.append(case["model"])
        label = {k: case[k] for k in ("model", "kind", "max_length", "cutoff_layers")}

        def scores(dtype: str, attention: str = "padded", compiled: bool = False, case=case) -> np.ndarray:
            reranker = Reranker.load(
                str(ASSETS / case["model"]),
                device,
                dtype,
                4096,
                kind=case["kind"],
                cutoff_layers=case["cutoff_layers"],
            )
            if attention != "padded" or compiled:
                reranker = Reranker(
                    reranker.scorer,
                    device,
                    reranker.pad_token_id,
                    4096,
                    num_scores=reranker.num_scores,
                    attention=attention,  # type: ignore[arg-type]
                    compiled=compiled,
                    compile_backend=compile_backend,
                )
            return reranker.score(case["ids"], case["types"]).columns

        fp32 = scores("float32")
        for dtype in ("float16", "bfloat16"):
            precision.append(label | {"dtype": dtype} | _compare(fp32, scores(dtype)))
        for dtype in ("float32", "float16") if device == "cuda" else ("float32",):
            reference = fp32 if dtype == "float32" else scores(dtype)
            for attention, compiled in PATHS[1:]:
                if compiled and not (compile_this and dtype == DEVICE_DTYPE[device]):
                    continue
                path = {"dtype": dtype, "attention": attention, "compiled": compiled}
                kernels.append(label | path | _compare(reference, scores(dtype, attention, compiled)))
    return {"precision": precision, "kernels": kernels}
