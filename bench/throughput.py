"""End-to-end throughput: the rerank job per precision vs the bare-forward limit, vLLM and the peers.

    python bench/throughput.py                      # CPU: MiniLM-L6 cross-encoder shape, fp32 and bf16
    python bench/throughput.py --pairs 600          # a quicker run
    python bench/throughput.py --dtypes float32 --no-vllm --no-peers   # the job alone, fp32
    python bench/throughput.py --gpu                # CUDA: bge-reranker-v2-m3 shape (XLM-R large), fp16
    python bench/throughput.py --json out.json      # also write the JSON result to a file

One generated corpus (seeded: queries of 3-12 words, log-normal passage lengths with a median of
~60 words and a tail past 512 tokens, 20 candidates per query, several Parquet shards), a small one
(one query per shard) for the fixed costs, and one model directory, saved once and used by every
contender. Rows of the table, per precision P of --dtypes (fp32, bf16; fp16 with --gpu):
  limit P                    bare model forward over length-sorted token-budget micro-batches (the
                             job's plan_micro_batches at the job's default budget and min fill, over
                             the whole corpus sorted at once); tensors padded beforehand, so no
                             tokenization or I/O is timed: the most the job's padded path can reach
                             (its packed path, which `--attention auto` picks where it measures
                             faster, skips the padding, runs a cross-encoder's last layer at its
                             first tokens only and, on CPU, attends with our own kernel: it can
                             pass this row)
  job P (steady, reported)   `rerank run --dtype P` (attention and compile `auto`) as a
                             subprocess; OUTPUT/_SUCCESS `steady_pairs_per_s` (pairs / time from the
                             first scoring call's start to the last one's end, on the scoring actors'
                             clocks) and the job's own padding efficiency
  job P (marginal)           (pairs - small pairs) / (wall - small wall): the same job run again on
                             the small corpus gives its fixed cost, so this is the per-pair rate of
                             the whole job (tokenize, score, publish) without start-up, independent
                             of how the job times itself
  job P (end to end)         the big run: pairs / wall time of the whole subprocess (Ray start in)
  job default (...)          the same three rows for `rerank run` with no --dtype, --attention or
                             --compile flag: what the job's `auto` picks (noted: the fingerprint's
                             dtype and any `last_run` key naming a dtype/attention/compile choice)
  vllm P (steady)            vLLM's CPU build (bench/vllm_peer.py in the side venv .venv-vllm,
                             `make vllm-venv`): its one timed `LLM.score` call over every pair (its
                             own tokenization included), OpenMP threads bound to all cores
  vllm P (whole wall)        pairs / the vLLM subprocess' wall time (its 30-60 s start-up included)
  vllm P (marginal)          (pairs - small pairs) / (wall - small wall), the job's small corpus
  naive                      the first --dtypes precision (fp32 by default), input order, 32 pairs
                             per padded batch, pre-padded like the limit
  flagembedding              FlagReranker.compute_score (batch 128, max_length 512), fp32, side venv
  sentence-transformers      CrossEncoder.predict (batch 32, max_length 512, raw logits), fp32
FlagEmbedding and sentence-transformers run bench/peers.py in the side venv .venv-flag (FlagEmbedding
1.4.2 needs transformers 4.x); their timed call includes their own tokenization, FlagEmbedding's
also its batch-size probe (a second forward of its first, longest batch). Their padding efficiency
is computed from our token lengths with their batching: FlagEmbedding sorts by token length, 128 per
batch; sentence-transformers by character length, 32 per batch. A peer or vLLM run that cannot run
(side venv missing, the run failed) is a row of dashes with a note saying why, not a crash; a vLLM
run that printed its result and then exited non-zero counts, with a note.

tokens/s counts real (unpadded) tokens of our tokenization: every row scores the same pairs.
Padding efficiency = real tokens / padded tokens. Ratio columns: `vs limit` and `vs vllm` against
the limit and vLLM's steady row of the row's own precision, `vs flag` and `vs st` against those
peers (fp32). On GPU, MFU = useful FLOPs / s / dense fp16 peak, with useful FLOPs = 2 * P * T +
4 * layers * hidden * sum(L_i^2): P = non-embedding parameters, T = real tokens, L_i = real length
of pair i (QK^T and attention x V, 2 FLOPs per multiply-add); padding is not useful work, so it
lowers MFU. Every contender runs with all cores; load1 (1-minute load average after each row) shows
when other processes competed for them, which makes the ratios unreliable. Weights are random
(MiniLM-L6 encoder weights on CPU, random head): figures are about cost, not relevance; scores are
compared (max |diff| of raw logits against the job's fp32 scores). Prints a table, the issue's
targets, the job's phases from its log, and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.hardware import peak_flops, useful_flops  # noqa: E402
from bench.job_runs import choices_made, run_job, scores_in_input_order  # noqa: E402
from bench.throughput_table import FLAG, ST, add_ratios, check_targets, job_name, print_report  # noqa: E402
from bench.vllm_rows import VLLM_PYTHON, run_notes, run_vllm, vllm_rates  # noqa: E402
from pipeline.demo.corpus import make_corpus  # noqa: E402
from pipeline.demo.model import make_demo_model  # noqa: E402
from pipeline.modeling.reranker import Reranker  # noqa: E402
from pipeline.models.batching import (  # noqa: E402
    fixed_batches,
    longest_first,
    padded_tokens,
    plan_micro_batches,
)
from pipeline.models.padding import right_pad  # noqa: E402
from pipeline.models.pair_tokenizer import PairTokenizer  # noqa: E402
from pipeline.rerank.settings import DEFAULT_MAX_BATCH_TOKENS, DEFAULT_MIN_BATCH_FILL  # noqa: E402

SIDE_PYTHON = ROOT / ".venv-flag" / "bin" / "python"
CANDIDATES = 20
MAX_LENGTH = 512
TAGS = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
VLLM_DTYPES = ("float32", "bfloat16")  # what vLLM's CPU build runs


@dataclass(frozen=True)
class Corpus:
    """The benchmark pairs, tokenized once with the job's tokenizer."""

    input_ids: pa.ListArray
    token_type_ids: pa.ListArray | None
    lengths: np.ndarray  # real tokens per pair
    char_lengths: np.ndarray  # len(query) + len(passage): sentence-transformers' sort key

    @property
    def pairs(self) -> int:
        return len(self.lengths)

    @property
    def tokens(self) -> int:
        return int(self.lengths.sum())


def gpu_model(directory: Path) -> Path:
    """bge-reranker-v2-m3 shape (XLM-R large, random weights) + the test XLM-R tokenizer."""
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

    config = XLMRobertaConfig(
        vocab_size=250002,
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        intermediate_size=4096,
        max_position_embeddings=8194,
        type_vocab_size=1,
        pad_token_id=1,  # XLM-R's <pad>, as in the tokenizer copied below
        bos_token_id=0,
        eos_token_id=2,
    )
    config.num_labels = 1
    torch.manual_seed(0)
    XLMRobertaForSequenceClassification(config).save_pretrained(directory)
    tokenizer_dir = ROOT / "tests" / "assets" / "models" / "tiny-xlmr"
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(tokenizer_dir / name, directory / name)
    return directory


def load_corpus(input_dir: Path, model_dir: Path) -> Corpus:
    """Reads every shard (sorted, as bench/peers.py does) and tokenizes it like the job."""
    tables = [pq.read_table(p, columns=["query", "passage"]) for p in sorted(input_dir.glob("*.parquet"))]
    table = pa.concat_tables(tables)
    queries, passages = table.column("query").to_pylist(), table.column("passage").to_pylist()
    tokenizer = PairTokenizer.load(str(model_dir), MAX_LENGTH, MAX_LENGTH * 3 // 4)
    enc = tokenizer.encode(queries, passages)
    ids = enc["input_ids"]
    chars = np.array([len(q) + len(p) for q, p in zip(queries, passages, strict=True)], dtype=np.int64)
    return Corpus(ids, enc.get("token_type_ids"), np.diff(ids.offsets.to_numpy()), chars)


def pad_batches(
    corpus: Corpus, batches: list[np.ndarray], pad_id: int, device: str
) -> list[dict[str, torch.Tensor]]:
    """Right-padded model inputs of every batch (as the scorer builds them), on the device, built
    before any timing."""
    return [
        {
            k: torch.from_numpy(v).to(device)
            for k, v in right_pad(corpus.input_ids, rows, pad_id, corpus.token_type_ids).items()
        }
        for rows in batches
    ]


@torch.inference_mode()
def time_forwards(model: torch.nn.Module, inputs: list[dict[str, torch.Tensor]], is_cuda: bool) -> float:
    """Seconds for a forward over every pre-padded batch (CUDA synchronized at both ends)."""
    if is_cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for kw in inputs:
        model(**kw)
    if is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def run_peer(peer: str, work: Path, model_dir: Path, gpu: bool) -> dict[str, Any]:
    """bench/peers.py in the side venv; its JSON line, or {"error": ...}."""
    if not SIDE_PYTHON.exists():
        return {"error": f"side venv {SIDE_PYTHON} not found (make goldens creates it)"}
    device = "cuda:0" if gpu else "cpu"
    cmd = [str(SIDE_PYTHON), str(ROOT / "bench" / "peers.py"), peer, str(work / "in"), str(model_dir)]
    cmd += ["--threads", str(torch.get_num_threads()), "--device", device]
    env = os.environ | {"RAY_USAGE_STATS_ENABLED": "0"}
    log_path = work / f"{peer}.log"
    with log_path.open("w") as log:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-10:])
        return {"error": f"exit {proc.returncode}, no result; last lines of its log:\n{tail}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def row(
    corpus: Corpus, tag: str | None, pairs_per_s: float | None, padded: int | None, seconds: float | None
) -> dict[str, Any]:
    """One table row; `tag` is the precision it ran at (the ratio columns compare within it)."""
    return {
        "dtype": tag,
        "pairs_per_s": None if pairs_per_s is None else round(pairs_per_s, 2),
        "tokens_per_s": None if pairs_per_s is None else round(pairs_per_s * corpus.tokens / corpus.pairs),
        "padding_efficiency": round(corpus.tokens / padded, 4) if padded else None,
        "seconds": round(seconds, 2) if seconds is not None else None,
        "load1": round(os.getloadavg()[0], 2),
    }


def measure_forwards(
    corpus: Corpus, model_dir: Path, device: str, dtype: str, budget: int, min_fill: float, naive: bool
) -> tuple[dict[str, dict[str, Any]], float]:
    """The limit row at `dtype` (and the naive row when asked), pre-padded forwards in this
    process, and the corpus' useful FLOPs."""
    tag = TAGS[dtype]
    reranker = Reranker.load(str(model_dir), device, dtype, budget)
    plans = {f"limit {tag}": plan_micro_batches(corpus.lengths, budget, min_fill)}
    if naive:
        plans["naive"] = fixed_batches(np.arange(corpus.pairs), 32)
    rows = {}
    for name, batches in plans.items():
        inputs = pad_batches(corpus, batches, reranker.pad_token_id, device)
        time_forwards(reranker.model, inputs[:3], reranker.is_cuda)  # warm-up
        seconds = time_forwards(reranker.model, inputs, reranker.is_cuda)
        padded = padded_tokens(corpus.lengths, batches)
        rows[name] = row(corpus, tag, corpus.pairs / seconds, padded, seconds)
    return rows, useful_flops(model_dir, reranker.model, corpus.lengths)


def peer_padded_tokens(corpus: Corpus) -> dict[str, int]:
    """Padded tokens of the peers' batching, from our token lengths."""
    st_order = np.argsort(-corpus.char_lengths)  # as CrossEncoder.predict sorts (not stable)
    return {
        FLAG: padded_tokens(corpus.lengths, fixed_batches(longest_first(corpus.lengths), 128)),
        ST: padded_tokens(corpus.lengths, fixed_batches(st_order, 32)),
    }


def job_rows(
    corpus: Corpus,
    label: str,
    job: dict[str, Any],
    small: dict[str, Any],
    small_pairs: int,
    notes: list[str],
) -> dict[str, dict[str, Any]]:
    """One job configuration's rows: its own steady figure, the marginal rate between two sizes,
    end to end. The rows' precision is the one the job resolved (its fingerprint's dtype)."""
    s = job["summary"]
    tag = TAGS.get(job["resolved_dtype"] or "", job["resolved_dtype"])
    padded, wall = s.get("padded_tokens"), job["subprocess_wall_s"]
    marginal_s = wall - small["subprocess_wall_s"]
    # wall times too close to tell apart (a tiny --pairs, or noise) give no marginal rate
    marginal = (corpus.pairs - small_pairs) / marginal_s if marginal_s > 0 else None
    rows = {
        job_name(label, "steady, reported"): row(corpus, tag, s.get("steady_pairs_per_s"), padded, None),
        job_name(label, "marginal"): row(corpus, tag, marginal, padded, marginal_s),
        job_name(label, "end to end"): row(corpus, tag, corpus.pairs / wall, padded, wall),
    }
    notes.append(
        f"job {label} {' '.join(job['flags']) or '(no precision flags)'}: subprocess wall {wall} s "
        f"({small['subprocess_wall_s']} s for {small_pairs} pairs); _SUCCESS: wall_s {s.get('wall_s')}, "
        f"startup_s {s.get('startup_s')}, steady_pairs_per_s {s.get('steady_pairs_per_s')}"
    )
    notes.append(f"job {label} phases (s, from its log): " + json.dumps(job["phases_s"]))
    if s.get("tokens") != corpus.tokens:
        notes.append(f"job {label} counted {s.get('tokens')} tokens, this script {corpus.tokens}")
    return rows


def dtype_list(text: str) -> list[str]:
    """--dtypes: comma-separated precisions, each one of TAGS."""
    dtypes = [d.strip() for d in text.split(",") if d.strip()]
    bad = [d for d in dtypes if d not in TAGS]
    if bad or not dtypes:
        raise argparse.ArgumentTypeError(f"--dtypes {text!r}: use a comma-separated list of {sorted(TAGS)}")
    return dtypes


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=3000, help="pairs in the corpus (20 per query)")
    ap.add_argument("--shards", type=int, default=4, help="Parquet shards of the corpus")
    ap.add_argument("--seed", type=int, default=7, help="corpus seed")
    ap.add_argument("--gpu", action="store_true", help="CUDA, fp16, bge-reranker-v2-m3 shape")
    ap.add_argument(
        "--dtypes",
        type=dtype_list,
        help="precisions of the limit, job and vLLM rows; default float32,bfloat16 (CPU), float16 (--gpu)",
    )
    ap.add_argument("--max-batch-tokens", type=int, default=0, help="default: the job's for the device")
    ap.add_argument("--no-peers", action="store_true", help="skip FlagEmbedding and sentence-transformers")
    ap.add_argument("--no-vllm", action="store_true", help="skip the vLLM rows")
    ap.add_argument("--no-naive", action="store_true", help="skip the naive row (minutes at 3,000 pairs)")
    ap.add_argument("--vllm-python", type=Path, default=VLLM_PYTHON, help="the side venv's python")
    ap.add_argument("--vllm-eager", action="store_true", help="vLLM without torch.compile (enforce_eager)")
    ap.add_argument("--json", type=Path, help="also write the JSON result to this file")
    ap.add_argument("--workdir", type=Path, help="keep corpus, model, outputs and logs here (default: temp)")
    args = ap.parse_args()
    args.dtypes = args.dtypes or (["float16"] if args.gpu else ["float32", "bfloat16"])
    return args


def vllm_runs(
    args: argparse.Namespace, work: Path, model_dir: Path, corpus: Corpus, small_pairs: int, notes: list[str]
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """vLLM's rows per precision (big and small corpus runs) and the raw runs, for the JSON."""
    rows, runs = {}, {}
    for dtype in args.dtypes:
        tag = TAGS[dtype]
        if dtype not in VLLM_DTYPES:
            notes.append(f"vllm {tag}: not run (the CPU build runs {', '.join(VLLM_DTYPES)})")
            continue
        scores = work / f"vllm-{tag}-scores.npy"
        scores.unlink(missing_ok=True)  # a kept --workdir: never compare an earlier run's scores
        eager = args.vllm_eager
        big = run_vllm(
            args.vllm_python,
            work / "in",
            model_dir,
            dtype,
            work / f"vllm-{tag}",
            scores_out=scores,
            enforce_eager=eager,
        )
        small = big  # a failed big run: the same failure, not a second try
        if "error" not in big:
            small = run_vllm(
                args.vllm_python,
                work / "in-small",
                model_dir,
                dtype,
                work / f"vllm-{tag}-small",
                enforce_eager=eager,
            )
        for form, (rate, seconds) in vllm_rates(big, small, small_pairs).items():
            r = row(corpus, tag, rate, None, seconds)
            failed = "error" in big or (form == "marginal" and "error" in small)
            rows[f"vllm {tag} ({form})"] = r | ({"note": "failed: see the notes"} if failed else {})
        notes.extend(run_notes(tag, big, small))
        has_scores = "error" not in big and scores.exists()
        runs[tag] = {"big": big, "small": small, "scores": str(scores) if has_scores else None}
    return rows, runs


def measure_jobs(
    args: argparse.Namespace,
    work: Path,
    model_dir: Path,
    budget: int,
    corpus: Corpus,
    small_pairs: int,
    rows: dict[str, dict[str, Any]],
    notes: list[str],
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """The job's rows at each precision (explicit flags) and with its defaults, big and small
    corpus runs each; the raw runs, for the JSON."""
    jobs: dict[str, Any] = {}
    configs = {TAGS[d]: ["--dtype", d] for d in args.dtypes}
    table: dict[str, dict[str, Any]] = {}
    for label, flags in (configs | {"default": []}).items():
        big = run_job(work / "in", work / f"out-{label}", model_dir, budget, args.gpu, flags)
        small = run_job(work / "in-small", work / f"out-{label}-small", model_dir, budget, args.gpu, flags)
        jobs[label] = {"big": big, "small": small | {"pairs": small_pairs}}
        table |= job_rows(corpus, label, big, small, small_pairs, notes)
        limit_rate = rows.get(f"limit {TAGS.get(big['resolved_dtype'], '')}", {}).get("pairs_per_s")
        if limit_rate and (big["summary"].get("steady_pairs_per_s") or 0) > 1.1 * limit_rate:
            paths = (big["summary"].get("kernels") or {}).get("attention") or {}
            notes.append(
                f"job {label}'s steady rate is above the bare-forward limit, which is the padded path's: "
                "the job ran packed batches (unpadded; an encoder's last layer at first tokens only)"
                if "unpadded" in paths
                else f"job {label}'s steady rate is above the bare-forward limit: other load slowed the "
                "limit row (see load1); rerun on a quiet machine, the ratios are not reliable"
            )
    notes.append("job default chose: " + json.dumps(choices_made(jobs["default"]["big"])))
    return table, jobs


def score_agreement(work: Path, tags: list[str], vllm: dict[str, Any]) -> dict[str, float]:
    """max |diff| of raw scores against the job's fp32 ones, in input order: the job at each other
    precision, vLLM at each."""
    if "fp32" not in tags:
        return {}
    reference = scores_in_input_order(work / "in", work / "out-fp32")
    others = {f"job {t}": scores_in_input_order(work / "in", work / f"out-{t}") for t in tags if t != "fp32"}
    others |= {f"vllm {t}": np.load(r["scores"]) for t, r in vllm.items() if r["scores"]}
    return {f"{k} vs job fp32": float(np.abs(v - reference).max()) for k, v in others.items()}


def run_all(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    device = "cuda" if args.gpu else "cpu"
    tags = [TAGS[d] for d in args.dtypes]
    budget = args.max_batch_tokens or DEFAULT_MAX_BATCH_TOKENS[device]
    torch.set_num_threads(os.cpu_count() or 1)
    make_corpus(work / "in", max(1, args.pairs // CANDIDATES), CANDIDATES, args.shards, seed=args.seed)
    # one query per shard: the fixed cost at the same shard count, for the marginal rates
    small_pairs = make_corpus(work / "in-small", args.shards, CANDIDATES, args.shards, seed=args.seed + 1)
    model_dir = gpu_model(work / "model") if args.gpu else make_demo_model(work / "model")
    corpus = load_corpus(work / "in", model_dir)
    notes: list[str] = []
    min_fill = DEFAULT_MIN_BATCH_FILL[device]
    rows: dict[str, dict[str, Any]] = {}
    for i, dtype in enumerate(args.dtypes):
        limit, flops = measure_forwards(
            corpus, model_dir, device, dtype, budget, min_fill, naive=i == 0 and not args.no_naive
        )
        rows |= limit
    padded = peer_padded_tokens(corpus)
    for peer in () if args.no_peers else (FLAG, ST):
        result = run_peer(peer, work, model_dir, args.gpu)
        if "error" in result:
            notes.append(f"{peer} skipped: {result['error']}")
            rows[peer] = row(corpus, None, None, None, None) | {"note": "not run: see the notes"}
        else:
            tag = "fp16" if args.gpu else "fp32"
            rows[peer] = row(corpus, tag, result["pairs_per_s"], padded[peer], result["seconds"])
    vllm_table: dict[str, dict[str, Any]] = {}
    vllm: dict[str, Any] = {}
    if args.gpu or args.no_vllm:
        why = "--gpu: the side venv holds vLLM's CPU build" if args.gpu else "--no-vllm"
        notes.append(f"vllm: not run ({why})")
    else:
        vllm_table, vllm = vllm_runs(args, work, model_dir, corpus, small_pairs, notes)
    job_table, jobs = measure_jobs(args, work, model_dir, budget, corpus, small_pairs, rows, notes)
    limits = {k: rows.pop(k) for k in [f"limit {t}" for t in tags]}
    rows = limits | job_table | vllm_table | rows  # rows: naive and the peers
    add_ratios(rows, corpus.pairs, flops, peak_flops() if args.gpu else None)
    agreement = score_agreement(work, tags, vllm)
    notes.extend(f"max |score diff|, {k}: {v:.3g}" for k, v in agreement.items())
    return {
        "device": device,
        "gpu": torch.cuda.get_device_name() if args.gpu else None,
        "model": ("bge-reranker-v2-m3 shape" if args.gpu else "MiniLM-L6 cross-encoder shape")
        + f", {'/'.join(tags)}",
        "pairs": corpus.pairs,
        "tokens": corpus.tokens,
        "mean_tokens_per_pair": round(corpus.tokens / corpus.pairs, 1),
        "pairs_at_max_length": int((corpus.lengths >= MAX_LENGTH).sum()),
        "max_batch_tokens": budget,
        "min_batch_fill": min_fill,
        "torch_threads": torch.get_num_threads(),
        "results": rows,
        "jobs": jobs,
        "vllm": vllm,
        "score_agreement": agreement,
        "targets": check_targets(rows, tags),
        "notes": notes,
    }


def main() -> int:
    args = parse_args()
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        result = run_all(args, args.workdir.resolve())
    else:
        with tempfile.TemporaryDirectory(prefix="rerank-bench-throughput-") as tmp:
            result = run_all(args, Path(tmp))
    print_report(result, MAX_LENGTH)
    line = json.dumps(result)
    print(line)
    if args.json:
        args.json.write_text(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
