"""The rerank job's stages on one GPU, in-process, without Ray: figures against the card's limits.

    python -m bench.gpu --out gpu.json          # CUDA: m3, llm, layerwise and qwen3 at real shapes
    python -m bench.gpu --smoke --out s.json    # CPU, the shapes shrunk, about a minute

(from the repository root). For each shape (bench/gpu/models.py: random weights at the published
shapes of bge-reranker-v2-m3, -gemma, -minicpm-layerwise and Qwen3-Reranker-0.6B, each run as its
family, --family; the tokenized pairs are checked against the family's template before timing) on
one generated corpus (bench/gpu/corpus.py: queries of 5-15 words, passages log-normal, median 150
words, ~9% past 512 tokens), rows of one table (bench/gpu/rows.py):
  forward                 the job's ScorePairs reranker, bare: Reranker.score on pre-tokenized
                          blocks of rows_per_call pairs; with the job's --attention/--compile
                          (auto: padded, compiled on CUDA): the limit the pipeline is held to
  pipeline                TokenizeShard in worker processes (one core each) -> queue -> ScorePairs
                          (bench/gpu/overlap.py), the way Ray Data overlaps the two stages
  forward <variant>       the same weights on the other kernel paths: eager / compiled x padded /
                          unpadded (pipeline.modeling.kernels)
  flag-style, naive       FlagEmbedding's batching (length-sorted, 128 per batch) and input order
                          32 per batch, padded forwards of our model on our tokenization
  sentence-transformers   CrossEncoder.predict on the same saved encoder (m3 only), when importable
Per row: pairs/s, tokens/s, padding efficiency, MFU against the datasheet dense fp16 peak and
against an 8192^3 fp16 matmul measured here, peak GPU memory. The pipeline row adds the tokenizer
cores one GPU needs (forward pairs/s over one core's tokenizing rate). Parity (bench/gpu/parity.py):
fp16/bf16 against fp32 and every kernel path against padded eager, on the tiny golden models, and
for qwen3 the family's score against full-vocabulary logits. A shape whose family this version's
Reranker.load cannot score (it takes no `family=`) is reported skipped, with the reason. One JSON
file out (written again after each shape, so a run cut short keeps what it measured) and a table
on stdout. bench/gpu/check.sh runs this after tests/gpu.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from bench.gpu.corpus import PASSAGE_MEDIAN_WORDS, length_stats, make_corpus
from bench.gpu.models import SHAPES, Shape, build_model, smoke_shape
from bench.gpu.overlap import run_pipeline
from bench.gpu.parity import family_unsupported, parity_rows
from bench.gpu.report import check_targets, pipeline_figures, print_table
from bench.gpu.rows import (
    Corpus,
    Peaks,
    batching_row,
    flag_style_batches,
    matmul_flops,
    naive_batches,
    scorer_row,
    sentence_transformers_row,
)
from bench.hardware import linear_params, peak_flops, useful_flops_of_shape
from pipeline.config import ModelConfig, default_query_max_length
from pipeline.io import Storage
from pipeline.modeling.reranker import TORCH_DTYPES, Reranker
from pipeline.models.families.registry import family_named
from pipeline.models.families.template_tokenizer import TemplatePairTokenizer
from pipeline.rerank.config import InputConfig, ScoringConfig
from pipeline.rerank.settings import resolve_settings
from pipeline.rerank.stages.score import ScorePairs
from pipeline.rerank.stages.tokenize import TokenizeShard

MAX_LENGTH = 512
PAIRS = {"m3": 16384, "llm": 2048, "layerwise": 2048, "qwen3": 2048}  # on CUDA: ~5-10 s a row (estimated)
# pairs per scoring call on CUDA: the job's 4096 for m3; the decoders' 2048 pairs in 4 calls, so
# that the pipeline row overlaps tokenizing with scoring
ROWS_PER_CALL = {"m3": 0, "llm": 512, "layerwise": 512, "qwen3": 512}
CHECKED_ROWS = 16  # tokenized rows compared with the family's template before a shape is timed
SMOKE_MEDIAN_WORDS = 30  # --smoke: short passages (the code path, not the figures, is its point)
VARIANTS = (("padded", False), ("padded", True), ("unpadded", False), ("unpadded", True))


class WrongTemplateError(RuntimeError):
    """The tokenize stage's ids are not the family's template: the figures would be another family's."""


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m bench.gpu",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--smoke", action="store_true", help="CPU, the shapes shrunk, few pairs: the same code path"
    )
    ap.add_argument("--out", type=Path, help="where the JSON goes (default: stdout only)")
    ap.add_argument("--kinds", default=",".join(SHAPES), help=f"comma-separated shapes: {', '.join(SHAPES)}")
    ap.add_argument("--pairs", type=int, default=0, help="pairs per shape (default 16384 m3, 2048 others)")
    ap.add_argument("--workers", type=int, default=0, help="tokenizing processes (default min(4, cores-1))")
    ap.add_argument("--rows-per-call", type=int, default=0, help="default: the job's for the device")
    ap.add_argument("--max-batch-tokens", type=int, default=0, help="default: the job's for the device")
    ap.add_argument("--attention", default="auto", choices=["auto", "padded", "unpadded"], help="the job's")
    ap.add_argument("--compile", default="auto", choices=["auto", "on", "off"], help="the job's")
    ap.add_argument("--full", action="store_true", help="also the unpadded+compiled rows (a compile each)")
    ap.add_argument("--time-budget-s", type=float, default=0, help="skip kinds not started by then")
    ap.add_argument("--workdir", type=Path, help="models and corpora (default: a temp dir)")
    return ap.parse_args()


def tokenized_corpus(model: ModelConfig, uris: list[str], rows_per_call: int) -> Corpus:
    stage = TokenizeShard(model, InputConfig(uri="."), Storage(), block_rows=rows_per_call)
    table = pa.concat_tables([t for s, u in enumerate(uris) for t in stage.tokenize(s, u)])
    texts = pa.concat_tables([pq.read_table(u, columns=["query", "passage"]) for u in uris])
    ids = table.column("input_ids").combine_chunks()
    types = (
        table.column("token_type_ids").combine_chunks() if "token_type_ids" in table.column_names else None
    )
    lengths = ids.offsets.to_numpy()[1:] - ids.offsets.to_numpy()[:-1]
    return Corpus(ids, types, lengths, texts.column("query").to_pylist(), texts.column("passage").to_pylist())


def check_template(shape: Shape, model_dir: Path, corpus: Corpus) -> int:
    """The first CHECKED_ROWS tokenized rows against the family's template built here
    (TemplatePairTokenizer, the family's default instruction and query cap); WrongTemplateError if
    they differ. Returns the rows checked (0 for an encoder family: no template)."""
    family = family_named(shape.family)
    if family.layout is None:
        return 0
    n = min(CHECKED_ROWS, len(corpus.lengths))
    query_max_length = None if family.query_cap == "given" else default_query_max_length(MAX_LENGTH)
    expected = TemplatePairTokenizer.load(
        str(model_dir), family, MAX_LENGTH, query_max_length, family.instruction(None)
    ).encode_pairs(corpus.queries[:n], corpus.passages[:n])
    got = corpus.input_ids.slice(0, n).to_pylist()
    for row, (want, have) in enumerate(zip(expected, got, strict=True)):
        if want != have:
            at = next((i for i, (a, b) in enumerate(zip(want, have, strict=False)) if a != b), None)
            at = min(len(want), len(have)) if at is None else at
            raise WrongTemplateError(
                f"shape {shape.name}: the tokenize stage's row {row} is not the {family.name} template "
                f"(first difference at id {at}: {have[at : at + 5]} where the template has "
                f"{want[at : at + 5]}; {len(have)} ids vs {len(want)}); check that ModelConfig.family "
                "reaches load_pair_tokenizer"
            )
    return n


def variant_name(attention: str, compiled: bool) -> str:
    return (
        "forward "
        + ("unpadded" if attention == "unpadded" else "padded")
        + (" compiled" if compiled else " eager")
    )


def run_kind(shape: Shape, args: argparse.Namespace, work: Path, device: str, peaks: Peaks) -> dict[str, Any]:
    dtype = "float16" if device == "cuda" else "float32"
    model_dir, build_s = build_model(shape, work / shape.name, device)
    pairs = args.pairs or (64 if args.smoke else PAIRS[shape.name])
    scoring = ScoringConfig(
        max_batch_tokens=args.max_batch_tokens or None,
        rows_per_call=args.rows_per_call or None,
        torch_threads=1 if args.smoke else None,  # smoke: one thread, robust on a busy small CPU
    )
    settings = resolve_settings(
        scoring,
        device=device,  # type: ignore[arg-type]
        dtype=dtype,  # type: ignore[arg-type]
        kind=shape.kind,
        cpus_per_node=os.cpu_count() or 1,
    )
    rows_per_call = (
        args.rows_per_call or (32 if args.smoke else ROWS_PER_CALL[shape.name]) or settings.rows_per_call
    )
    shards = max(2, min(16, pairs // rows_per_call))
    median_words = SMOKE_MEDIAN_WORDS if args.smoke else PASSAGE_MEDIAN_WORDS
    corpus_dir = work / f"corpus-{shape.name}"
    uris = [str(p) for p in make_corpus(corpus_dir, pairs, shards, seed=1, median_words=median_words)]
    model = ModelConfig(
        name_or_path=str(model_dir),
        kind=shape.kind,
        family=shape.family,
        cutoff_layers=shape.cutoff_layers,
        max_length=MAX_LENGTH,
        attention=args.attention,
        compile=args.compile,
    )
    start = time.perf_counter()
    stage = ScorePairs(model, Storage(), settings)
    load_s = time.perf_counter() - start
    corpus = tokenized_corpus(model, uris, rows_per_call)
    template_rows = check_template(shape, model_dir, corpus)
    base = stage.reranker
    params = linear_params(base.scorer)
    flops = useful_flops_of_shape(params, shape.layers_run, shape.attention_width, corpus.lengths)
    rows: dict[str, dict] = {}
    rows["forward"] = scorer_row(base, corpus, rows_per_call, flops, peaks) | {
        "attention": base.attention,
        "compiled": base.compiled,
    }
    forward_path = (base.attention, base.compiled)
    workers = args.workers or max(1, min(4, (os.cpu_count() or 2) - 1))
    measured = run_pipeline(stage, model, uris, workers, rows_per_call, device)
    rows["pipeline"] = pipeline_figures(measured, corpus, flops, peaks, device, workers, rows["forward"])
    rows["pipeline"]["kernels"] = stage.kernel_info  # what the stage's `auto` chose on its first call
    base.use_attention(forward_path[0])  # the `--attention auto` probe may have left it on the other

    def variant(attention: str, compiled: bool) -> Reranker:
        return Reranker(
            base.scorer,
            device,
            base.pad_token_id,
            settings.max_batch_tokens,
            num_scores=base.num_scores,
            min_fill=settings.min_batch_fill,
            attention=attention,  # type: ignore[arg-type]
            compiled=compiled,
        )

    others = [v for v in VARIANTS if v != forward_path]
    if base.attention == "unpadded":  # the module now runs packed batches only
        others = [v for v in others if v[0] == "unpadded"]
    wanted = [v for v in others if want_variant(shape, v, args)]
    for attention, compiled in [v for v in wanted if v[0] == "padded"]:
        rows[variant_name(attention, compiled)] = scorer_row(
            variant(attention, compiled), corpus, rows_per_call, flops, peaks
        )
    if base.attention == "padded":
        eager = variant("padded", False)
        rows["flag-style"] = batching_row(eager, corpus, flag_style_batches(corpus), flops, peaks)
        rows["naive"] = batching_row(eager, corpus, naive_batches(corpus), flops, peaks)
    if shape.kind == "encoder":
        rows["sentence-transformers"] = sentence_transformers_row(
            str(model_dir), corpus, device, TORCH_DTYPES[dtype], flops, peaks
        )
    for attention, compiled in [v for v in wanted if v[0] == "unpadded"]:
        rows[variant_name(attention, compiled)] = scorer_row(
            variant(attention, compiled), corpus, rows_per_call, flops, peaks
        )
    return {
        "shape": shape.label,
        "kind": shape.kind,
        "family": shape.family,
        "template_checked_rows": template_rows,
        "dtype": dtype,
        "linear_params": params,
        "layers_run": shape.layers_run,
        "build_s": round(build_s, 1),
        "load_s": round(load_s, 1),
        "max_batch_tokens": settings.max_batch_tokens,
        "rows_per_call": rows_per_call,
        "corpus": length_stats(corpus.lengths, MAX_LENGTH),
        "rows": rows,
    }


def want_variant(shape: Shape, variant: tuple[str, bool], args: argparse.Namespace) -> bool:
    """Each compiled variant costs a compile (perhaps a minute a model, unmeasured): none in
    --smoke (minutes of tracing on a small CPU; tests/unit/test_compile.py covers the compiled
    path there); on CUDA the padded ones, and unpadded+compiled with --full."""
    attention, compiled = variant
    if not compiled:
        return True
    if args.smoke:
        return False
    return args.full or attention == "padded"


def meta(args: argparse.Namespace, device: str, peaks: Peaks) -> dict[str, Any]:
    import transformers

    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "smoke": args.smoke,
        "device": device,
        "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
        "cpu_cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "datasheet_fp16_tflops": peaks.datasheet_flops and round(peaks.datasheet_flops / 1e12, 1),
        "measured_fp16_matmul_tflops": peaks.measured_flops and round(peaks.measured_flops / 1e12, 1),
        "args": {k: str(v) for k, v in vars(args).items()},
    }


def main() -> int:
    args = parse_args()
    device = "cpu" if args.smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("python -m bench.gpu needs CUDA (or --smoke for the CPU code-path check)", file=sys.stderr)
        return 2
    started = time.perf_counter()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="rerank-gpu-bench-"))
    peaks = Peaks(peak_flops() if device == "cuda" else None, matmul_flops(device, 8192))
    result: dict[str, Any] = {"meta": meta(args, device, peaks), "kinds": {}}
    if args.smoke:
        torch.set_num_threads(1)  # a small, busy CPU: threads only contend
    result["parity"] = parity_rows(device, "inductor", 0 if args.smoke else 1, work, all_cases=not args.smoke)
    result["meta"]["parity_wall_s"] = round(time.perf_counter() - started, 1)
    write(result, args.out)
    for name in args.kinds.split(","):
        if args.time_budget_s and time.perf_counter() - started > args.time_budget_s:
            result["kinds"][name] = {"skipped": f"--time-budget-s {args.time_budget_s:.0f} reached"}
            continue
        shape = smoke_shape(SHAPES[name]) if args.smoke else SHAPES[name]
        if (reason := family_unsupported(shape)) is not None:
            result["kinds"][name] = {"skipped": reason}
            continue
        kind_start = time.perf_counter()
        result["kinds"][name] = run_kind(shape, args, work, device, peaks)
        result["kinds"][name]["wall_s"] = round(time.perf_counter() - kind_start, 1)
        gc.collect()  # the kind's models, before the next kind's are built
        if device == "cuda":
            torch.cuda.empty_cache()
        result["targets"] = check_targets(result["kinds"])
        write(result, args.out)
    result["targets"] = check_targets(result["kinds"])
    result["meta"]["wall_s"] = round(time.perf_counter() - started, 1)
    write(result, args.out)
    print_table(result)
    return 0


def write(result: dict[str, Any], out: Path | None) -> None:
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))
