"""The GPU benchmark's parity rows, on the tiny golden models (tests/assets) and the device under test:

- precision: fp16 and bf16 scores against fp32 (padded eager, the job's path), per golden case;
- kernels: every `--attention` x `--compile` path against the padded eager path in the same dtype
  (fp32 and, on CUDA, fp16, where the unpadded path runs torch's varlen flash kernel);
- reference: for the families the golden files do not cover (qwen3), the family's score in fp32
  against the card's way of reading it, transformers' full-vocabulary logits at the last token
  (logit("yes") - logit("no")), per pair.

The qwen3 cases run the qwen3 shape shrunk as in --smoke (bench/gpu/models.py, random weights of
std 0.5, built in the work directory) on the decoder goldens' pairs, through the family's template
(pipeline.models.families.template_tokenizer). Where this version's `Reranker.load` takes no
`family=` (the family is not wired into scoring), those cases are listed under "skipped" instead.

Each row gives the largest absolute difference, the largest |fp32 score| (for scale) and the
correlation; the suite's own checks of the same (tests/unit/test_kernel_parity.py, tests/gpu) hold
them to tolerances, this only reports them.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.gpu.models import ASSETS, SHAPES, Shape, build_model, smoke_shape
from pipeline.config import DEFAULT_PROMPT
from pipeline.modeling.reranker import Reranker
from pipeline.models.families.registry import FLAG_LAYERWISE, FLAG_LLM, fallback_family, family_named
from pipeline.models.families.score_tokens import score_token_ids, score_weights
from pipeline.models.families.template_tokenizer import TemplatePairTokenizer
from pipeline.models.pair_tokenizer import PairTokenizer
from pipeline.models.text_tokenizer import TextTokenizer

GOLDENS = ASSETS.parent / "goldens"
PATHS = (("padded", False), ("padded", True), ("unpadded", False), ("unpadded", True))
DEVICE_DTYPE = {"cuda": "float16", "cpu": "float32"}  # the job's default dtype on each device
FAMILY_SHAPES = ("qwen3",)  # shapes whose family no golden file covers
FAMILY_MAX_LENGTHS = (512, 128)  # 128: most pairs cut (the document's end first)
FAMILY_INIT_STD = 0.5  # transformers' 0.02 gives near-constant Qwen3 scores (tests/assets/family_models.py)


def family_unsupported(shape: Shape) -> str | None:
    """Why this version cannot score `shape`'s family (None: it can). Without `family=`,
    Reranker.load scores every model of a kind as the kind's original family."""
    original = fallback_family(shape.kind).name
    if shape.family == original or "family" in inspect.signature(Reranker.load).parameters:
        return None
    return (
        f"Reranker.load takes no family= in this version: the {shape.family} family's score is not "
        f"wired into scoring, and the model would be scored as {original}"
    )


def golden_cases() -> list[dict[str, Any]]:
    """(model dir, kind, family, cutoffs, token ids, token types) of every golden case."""
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
        tok = TemplatePairTokenizer.load(
            str(ASSETS / case["model"]),
            FLAG_LAYERWISE if case["kind"] == "layerwise" else FLAG_LLM,
            case["max_length"],
            case["query_max_length"],
            case["prompt"] or DEFAULT_PROMPT,
        )
        cases.append(_case(case, case["kind"], case["cutoff_layers"], tok.encode(queries, passages)))
    return cases


def _case(case: dict, kind: str, cutoffs: list[int] | None, enc: dict) -> dict[str, Any]:
    return {
        "model": case["model"],
        "path": str(ASSETS / case["model"]),
        "max_length": case["max_length"],
        "kind": kind,
        "family": None,  # the kind's original family: Reranker.load's default
        "cutoff_layers": cutoffs,
        "ids": enc["input_ids"],
        "types": enc.get("token_type_ids"),
    }


def family_cases(workdir: Path) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """The FAMILY_SHAPES cases (the shape shrunk, built once in `workdir`, on the decoder goldens'
    pairs at each of FAMILY_MAX_LENGTHS) and those skipped, with the reason."""
    decoder = json.loads((GOLDENS / "decoder.json").read_text())
    queries, passages = [p[0] for p in decoder["pairs"]], [p[1] for p in decoder["pairs"]]
    cases, skipped = [], []
    for name in FAMILY_SHAPES:
        shape = smoke_shape(SHAPES[name])
        model = f"{name} (the --smoke shape)"
        if (reason := family_unsupported(shape)) is not None:
            skipped.append({"model": model, "reason": reason})
            continue
        shape = replace(shape, config=shape.config | {"initializer_range": FAMILY_INIT_STD})
        path, _ = build_model(shape, workdir / f"parity-{name}", "cpu")
        family = family_named(shape.family)
        text = TextTokenizer.load(str(path))
        for max_length in FAMILY_MAX_LENGTHS:
            query_max_length = None if family.query_cap == "given" else max_length * 3 // 4
            tokenizer = TemplatePairTokenizer(
                family, text, max_length, query_max_length, family.instruction(None)
            )
            ids = tokenizer.encode(queries, passages)
            enc = {"input_ids": ids["input_ids"]}
            cases.append(
                _case({"model": model, "max_length": max_length}, shape.kind, None, enc)
                | {"path": str(path), "family": shape.family}
            )
    return cases, skipped


def full_logits_scores(case: dict[str, Any], device: str) -> np.ndarray:
    """The family's score as its card reads it: transformers' causal LM in fp32, the logits over
    the whole vocabulary at each pair's last token, weighted by the family's score tokens."""
    from transformers import AutoModelForCausalLM

    family = family_named(case["family"])
    token_ids = list(score_token_ids(family, TextTokenizer.load(case["path"])))
    weights = torch.tensor(score_weights(family), dtype=torch.float32, device=device)
    model = AutoModelForCausalLM.from_pretrained(case["path"], dtype=torch.float32)
    model.to(torch.device(device)).eval()
    out = []
    with torch.inference_mode():
        for ids in case["ids"].to_pylist():
            logits = model(input_ids=torch.tensor([ids], device=device)).logits[0, -1].float()
            out.append(float(logits[token_ids] @ weights))
    return np.asarray(out, dtype=np.float32).reshape(-1, 1)


def _compare(reference: np.ndarray, other: np.ndarray) -> dict[str, float | None]:
    finite = np.isfinite(other).all()
    corr = float(np.corrcoef(reference[:, 0], other[:, 0])[0, 1]) if finite and len(other) > 1 else None
    return {
        "max_abs_diff": float(np.abs(reference - other).max()) if finite else float("inf"),
        "max_abs_score": float(np.abs(reference).max()),
        "correlation": None if corr is None else round(corr, 6),
    }


def parity_rows(
    device: str,
    compile_backend: str | Callable[..., Any],
    compiled_models: int,
    workdir: Path,
    all_cases: bool = True,
) -> dict[str, list[dict]]:
    """Precision rows for every golden and family case (or each model's first one); kernel rows:
    unpadded for the same cases, compiled ones (a compile each) for the first case of the first
    `compiled_models` models; reference rows for the family cases; the family cases skipped."""
    precision: list[dict] = []
    kernels: list[dict] = []
    card: list[dict] = []
    compiled_for: list[str] = []
    seen: set[str] = set()
    families, skipped = family_cases(workdir)
    for case in golden_cases() + families:
        if not all_cases and case["model"] in seen:
            continue
        seen.add(case["model"])
        compile_this = case["model"] not in compiled_for and len(compiled_for) < compiled_models
        if compile_this:
            compiled_for.append(case["model"])
        label = {k: case[k] for k in ("model", "kind", "max_length", "cutoff_layers")}

        def scores(dtype: str, attention: str = "padded", compiled: bool = False, case=case) -> np.ndarray:
            # family= only where a case names one: a version without it still runs the golden cases
            family = {"family": case["family"]} if case["family"] is not None else {}
            reranker = Reranker.load(
                case["path"],
                device,
                dtype,
                4096,
                kind=case["kind"],
                cutoff_layers=case["cutoff_layers"],
                **family,
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
        if case["family"] is not None:
            full = full_logits_scores(case, device)
            card.append(label | {"family": case["family"], "dtype": "float32"} | _compare(full, fp32))
        for dtype in ("float16", "bfloat16"):
            precision.append(label | {"dtype": dtype} | _compare(fp32, scores(dtype)))
        for dtype in ("float32", "float16") if device == "cuda" else ("float32",):
            reference = fp32 if dtype == "float32" else scores(dtype)
            for attention, compiled in PATHS[1:]:
                if compiled and not (compile_this and dtype == DEVICE_DTYPE[device]):
                    continue
                path = {"dtype": dtype, "attention": attention, "compiled": compiled}
                kernels.append(label | path | _compare(reference, scores(dtype, attention, compiled)))
    return {"precision": precision, "kernels": kernels, "reference": card, "skipped": skipped}
