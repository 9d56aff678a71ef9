"""End-to-end throughput: the rerank job vs the bare-forward limit, naive batching and the peers.

    python bench/throughput.py                      # CPU: MiniLM-L6 cross-encoder shape, fp32
    python bench/throughput.py --pairs 600          # a quicker run
    python bench/throughput.py --gpu                # CUDA: bge-reranker-v2-m3 shape (XLM-R large), fp16
    python bench/throughput.py --json out.json      # also write the JSON result to a file

One generated corpus (seeded: queries of 3-12 words, log-normal passage lengths with a median of
~60 words and a tail past 512 tokens, 20 candidates per query, several Parquet shards) and one model
directory, saved once and used by every contender. Rows of the table:
  limit                  bare model forward over length-sorted token-budget micro-batches (the job's
                         plan_micro_batches at the job's default budget and min fill, over the whole
                         corpus sorted at once); tensors padded beforehand, so no tokenization or
                         I/O is timed: the most the job's scoring can reach
  job (steady, reported) `rerank run` as a subprocess; OUTPUT/_SUCCESS `steady_pairs_per_s` (pairs /
                         time from the first scoring call's start to the last one's end, on the
                         scoring actors' clocks) and the job's own padding efficiency
  job (marginal)         (pairs - small pairs) / (wall - small wall): the same job run again on one
                         query per shard gives its fixed cost, so this is the per-pair rate of the
                         whole job (tokenize, score, publish) without start-up, independent of how
                         the job times itself
  job (end to end)       the big run: pairs / wall time of the whole subprocess (Ray start included)
  naive                  input order, 32 pairs per padded batch, pre-padded like the limit
  flagembedding          FlagReranker.compute_score (batch 128, max_length 512), side venv
  sentence-transformers  CrossEncoder.predict (batch 32, max_length 512, raw logits), side venv
The peers run bench/peers.py in the side venv .venv-flag (FlagEmbedding 1.4.2 needs transformers
4.x); they are skipped with a note when it is missing. Their timed call includes their own
tokenization (their API has no other way), and FlagEmbedding's also includes its batch-size probe,
a second forward of its first (longest) batch. Their padding efficiency is computed from our token
lengths with their batching: FlagEmbedding sorts by token length, 128 per batch;
sentence-transformers sorts by character length, 32 per batch.

tokens/s counts real (unpadded) tokens of our tokenization: every row scores the same pairs.
Padding efficiency = real tokens / padded tokens. On GPU, MFU = useful FLOPs / s / dense fp16 peak,
with useful FLOPs = 2 * P * T + 4 * layers * hidden * sum(L_i^2): P = non-embedding parameters,
T = real tokens, L_i = real length of pair i (QK^T and attention x V, 2 FLOPs per multiply-add);
padding is not useful work, so it lowers MFU. Every contender runs with the same torch thread count
(all cores); load1 (1-minute load average after each row) shows when other processes competed for
the cores, which makes the ratios unreliable. Weights are random (MiniLM-L6 encoder weights on CPU,
random head): figures are about cost, not relevance. Prints a table, the issue's CPU targets checked
on both job figures, the job's phases from its log, and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.hardware import peak_flops, useful_flops  # noqa: E402
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
FLAG, ST = "flagembedding", "sentence-transformers"
# The CPU targets for the job's steady-state pairs/s: (row compared against, minimum ratio).
TARGET_RATIOS = {"limit": 0.90, FLAG: 2.0, ST: 1.05}
TARGET_PAD_EFF = 0.97
JOB_REPORTED, JOB_MARGINAL = "job (steady, reported)", "job (marginal)"
MET = {True: "met", False: "NOT met", None: "n/a (no figure)"}
COLUMNS = [
    ("pairs/s", "pairs_per_s"),
    ("tokens/s", "tokens_per_s"),
    ("pad eff", "padding_efficiency"),
    ("seconds", "seconds"),
    ("vs limit", "vs_limit"),
    ("vs flag", f"vs_{FLAG}"),
    ("vs st", f"vs_{ST}"),
    ("load1", "load1"),
]
# Landmark lines of the job's log, in order: (phase that ends at the line, text in the line).
PHASE_MARKERS = [
    ("Ray start", "Started a local Ray instance"),
    ("checks before scoring", "Starting execution of Dataset"),
    ("dataset: tokenize + score", "execution finished in"),
    ("publish, markers, _SUCCESS", "rerank: summary:"),
]
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\s+\w+\s+(.*)$")


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


def run_job(input_dir: Path, output: Path, model_dir: Path, budget: int, gpu: bool) -> dict[str, Any]:
    """`rerank run` in a subprocess: its wall time, phases from its log, and OUTPUT/_SUCCESS `last_run`."""
    cmd = [sys.executable, "-m", "jobs.cli", "run", str(input_dir), str(output), "--model", str(model_dir)]
    cmd += ["--max-batch-tokens", str(budget), "--fresh"]
    cmd += ["--device", "cuda"] if gpu else ["--device", "cpu", "--torch-threads", str(os.cpu_count())]
    env = os.environ | {"RAY_USAGE_STATS_ENABLED": "0"}
    log_path = output.with_suffix(".log")
    launched, t0 = time.time(), time.perf_counter()
    with log_path.open("w") as log:
        rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - t0
    log_text = log_path.read_text()
    if rc != 0:
        tail = "".join(log_text.splitlines(keepends=True)[-30:])
        raise RuntimeError(f"`{' '.join(cmd)}` exited {rc}; last lines of its log:\n{tail}")
    return {
        "subprocess_wall_s": round(wall, 2),
        "phases_s": job_phases(log_text, launched, launched + wall),
        "summary": json.loads((output / "_SUCCESS").read_text())["last_run"],
    }


def job_phases(log_text: str, launched: float, ended: float) -> dict[str, float]:
    """Seconds between the job's landmark log lines (best effort: a missing landmark is skipped)."""
    stamps = []
    for line in log_text.splitlines():
        m = LOG_LINE.match(line)
        if m:
            stamps.append((datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp(), m.group(2)))
    if not stamps:
        return {}
    phases = {"python start, imports, config": stamps[0][0] - launched}
    last = stamps[0][0]
    for name, marker in PHASE_MARKERS:
        at = next((t for t, text in stamps if marker in text), None)
        if at is not None and at >= last:
            phases[name], last = at - last, at
    phases["exit (Ray shutdown)"] = ended - last
    return {k: round(v, 2) for k, v in phases.items()}


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
    corpus: Corpus, pairs_per_s: float | None, padded: int | None, seconds: float | None
) -> dict[str, Any]:
    return {
        "pairs_per_s": None if pairs_per_s is None else round(pairs_per_s, 2),
        "tokens_per_s": None if pairs_per_s is None else round(pairs_per_s * corpus.tokens / corpus.pairs),
        "padding_efficiency": round(corpus.tokens / padded, 4) if padded else None,
        "seconds": round(seconds, 2) if seconds is not None else None,
        "load1": round(os.getloadavg()[0], 2),
    }


def measure_forwards(
    corpus: Corpus, model_dir: Path, device: str, budget: int, min_fill: float
) -> tuple[dict[str, dict[str, Any]], float]:
    """The limit and naive rows (pre-padded forwards in this process), and the corpus' useful FLOPs."""
    reranker = Reranker.load(str(model_dir), device, "float16" if device == "cuda" else "float32", budget)
    plans = {
        "limit": plan_micro_batches(corpus.lengths, budget, min_fill),
        "naive": fixed_batches(np.arange(corpus.pairs), 32),
    }
    rows = {}
    for name, batches in plans.items():
        inputs = pad_batches(corpus, batches, reranker.pad_token_id, device)
        time_forwards(reranker.model, inputs[:3], reranker.is_cuda)  # warm-up
        seconds = time_forwards(reranker.model, inputs, reranker.is_cuda)
        rows[name] = row(corpus, corpus.pairs / seconds, padded_tokens(corpus.lengths, batches), seconds)
    return rows, useful_flops(model_dir, reranker.model, corpus.lengths)


def peer_padded_tokens(corpus: Corpus) -> dict[str, int]:
    """Padded tokens of the peers' batching, from our token lengths."""
    st_order = np.argsort(-corpus.char_lengths)  # as CrossEncoder.predict sorts (not stable)
    return {
        FLAG: padded_tokens(corpus.lengths, fixed_batches(longest_first(corpus.lengths), 128)),
        ST: padded_tokens(corpus.lengths, fixed_batches(st_order, 32)),
    }


def job_rows(
    corpus: Corpus, job: dict[str, Any], small: dict[str, Any], small_pairs: int, notes: list[str]
) -> dict[str, dict[str, Any]]:
    """The job's rows: its own steady figure, the marginal rate between two sizes, end to end."""
    s = job["summary"]
    padded, wall = s.get("padded_tokens"), job["subprocess_wall_s"]
    marginal_s = wall - small["subprocess_wall_s"]
    rows = {
        JOB_REPORTED: row(corpus, s.get("steady_pairs_per_s"), padded, None),
        # wall times too close to tell apart (a tiny --pairs, or noise) give no marginal rate
        JOB_MARGINAL: row(
            corpus, (corpus.pairs - small_pairs) / marginal_s if marginal_s > 0 else None, padded, marginal_s
        ),
        "job (end to end)": row(corpus, corpus.pairs / wall, padded, wall),
    }
    notes.append(
        f"job: subprocess wall {wall} s ({small['subprocess_wall_s']} s for {small_pairs} pairs); "
        f"_SUCCESS: wall_s {s.get('wall_s')}, startup_s {s.get('startup_s')}, "
        f"steady_pairs_per_s {s.get('steady_pairs_per_s')}"
    )
    notes.append("job phases (s, from its log): " + json.dumps(job["phases_s"]))
    if s.get("tokens") != corpus.tokens:
        notes.append(f"the job counted {s.get('tokens')} tokens, this script {corpus.tokens}")
    return rows


def add_ratios(rows: dict[str, dict[str, Any]], pairs: int, flops: float, peak: float | None) -> None:
    """Ratios of every row against the limit and the two peers (None where one is missing); MFU."""
    for r in rows.values():
        for base in ("limit", FLAG, ST):
            base_rate = rows.get(base, {}).get("pairs_per_s")
            rate = r["pairs_per_s"]
            r[f"vs_{base}"] = round(rate / base_rate, 3) if base_rate and rate is not None else None
        if peak is not None and r["pairs_per_s"]:
            r["mfu"] = round(flops * r["pairs_per_s"] / pairs / peak, 3)


def check_targets(rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's CPU targets, checked on both job figures; met is None where a peer is missing."""
    checks: list[dict[str, Any]] = [
        {"target": f"job / {base}", "key": f"vs_{base}", "minimum": m} for base, m in TARGET_RATIOS.items()
    ]
    checks.append(
        {"target": "job padding efficiency", "key": "padding_efficiency", "minimum": TARGET_PAD_EFF}
    )
    for c in checks:
        key = c.pop("key")
        c["by"] = {}
        for name in (JOB_REPORTED, JOB_MARGINAL):
            measured = rows[name][key]
            c["by"][name] = {
                "measured": measured,
                "met": None if measured is None else measured >= c["minimum"],
            }
    return checks


def _cell(value: Any, width: int) -> str:
    return f"{'-' if value is None else value:>{width}}"


def print_report(result: dict[str, Any]) -> None:
    rows, notes = result["results"], result["notes"]
    print(
        f"device={result['device']} model={result['model']} pairs={result['pairs']} "
        f"mean tokens/pair={result['mean_tokens_per_pair']} pairs at {MAX_LENGTH} tokens="
        f"{result['pairs_at_max_length']} budget={result['max_batch_tokens']} "
        f"threads={result['torch_threads']}"
    )
    columns = COLUMNS + ([("mfu", "mfu")] if any("mfu" in r for r in rows.values()) else [])
    print(f"{'row':<24}" + "".join(f"{title:>10}" for title, _ in columns))
    for name, r in rows.items():
        print(f"{name:<24}" + "".join(_cell(r.get(key), 10) for _, key in columns))
    print(
        f"{'targets (the issue, CPU)':<30}{'minimum':>9}"
        + "".join(f"{n:>26}" for n in (JOB_REPORTED, JOB_MARGINAL))
    )
    for t in result["targets"]:
        cells = [f"{_cell(b['measured'], 9)} {MET[b['met']]:<16}" for b in t["by"].values()]
        print(f"{t['target']:<30}{'>= ' + str(t['minimum']):>9}" + "".join(cells))
    for note in notes:
        print(f"note: {note}")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=1200, help="pairs in the corpus (20 per query)")
    ap.add_argument("--shards", type=int, default=4, help="Parquet shards of the corpus")
    ap.add_argument("--seed", type=int, default=7, help="corpus seed")
    ap.add_argument("--gpu", action="store_true", help="CUDA, fp16, bge-reranker-v2-m3 shape")
    ap.add_argument("--max-batch-tokens", type=int, default=0, help="default: the job's for the device")
    ap.add_argument("--no-peers", action="store_true", help="skip FlagEmbedding and sentence-transformers")
    ap.add_argument("--json", type=Path, help="also write the JSON result to this file")
    ap.add_argument("--workdir", type=Path, help="keep corpus, model, outputs and logs here (default: temp)")
    return ap.parse_args()


def run_all(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    device = "cuda" if args.gpu else "cpu"
    budget = args.max_batch_tokens or DEFAULT_MAX_BATCH_TOKENS[device]
    torch.set_num_threads(os.cpu_count() or 1)
    make_corpus(work / "in", max(1, args.pairs // CANDIDATES), CANDIDATES, args.shards, seed=args.seed)
    # one query per shard: the job's fixed cost at the same shard count, for the marginal rate
    small_pairs = make_corpus(work / "in-small", args.shards, CANDIDATES, args.shards, seed=args.seed + 1)
    model_dir = gpu_model(work / "model") if args.gpu else make_demo_model(work / "model")
    corpus = load_corpus(work / "in", model_dir)
    notes: list[str] = []
    min_fill = DEFAULT_MIN_BATCH_FILL[device]
    rows, flops = measure_forwards(corpus, model_dir, device, budget, min_fill)
    padded = peer_padded_tokens(corpus)
    for peer in () if args.no_peers else (FLAG, ST):
        result = run_peer(peer, work, model_dir, args.gpu)
        if "error" in result:
            notes.append(f"{peer} skipped: {result['error']}")
        else:
            rows[peer] = row(corpus, result["pairs_per_s"], padded[peer], result["seconds"])
    job = run_job(work / "in", work / "out", model_dir, budget, args.gpu)
    small = run_job(work / "in-small", work / "out-small", model_dir, budget, args.gpu)
    rows = {"limit": rows.pop("limit")} | job_rows(corpus, job, small, small_pairs, notes) | rows
    if (rows[JOB_REPORTED]["pairs_per_s"] or 0) > 1.1 * rows["limit"]["pairs_per_s"]:
        notes.append(
            "the job's steady rate is above the bare-forward limit: other load slowed the limit row (see "
            "load1); rerun on a quiet machine, the ratios are not reliable"
        )
    add_ratios(rows, corpus.pairs, flops, peak_flops() if args.gpu else None)
    return {
        "device": device,
        "gpu": torch.cuda.get_device_name() if args.gpu else None,
        "model": "bge-reranker-v2-m3 shape, fp16" if args.gpu else "MiniLM-L6 cross-encoder shape, fp32",
        "pairs": corpus.pairs,
        "tokens": corpus.tokens,
        "mean_tokens_per_pair": round(corpus.tokens / corpus.pairs, 1),
        "pairs_at_max_length": int((corpus.lengths >= MAX_LENGTH).sum()),
        "max_batch_tokens": budget,
        "min_batch_fill": min_fill,
        "torch_threads": torch.get_num_threads(),
        "results": rows,
        "job": job,
        "job_small": small | {"pairs": small_pairs},
        "targets": check_targets(rows),
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
    print_report(result)
    line = json.dumps(result)
    print(line)
    if args.json:
        args.json.write_text(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
