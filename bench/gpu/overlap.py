"""The job's two stages overlapped in one process tree, without Ray: `TokenizeShard` in worker
processes (one CPU core each: RAYON_NUM_THREADS=1, like a tokenizing actor) feeding `ScorePairs` in
this process through a bounded queue, as Ray Data overlaps the tokenize actors with the scoring
actor. Each worker tokenizes its own shards into blocks of `rows_per_call` rows (longest first) and
reports how long it spent tokenizing, which gives the tokenizing rate of one core.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.config import ModelConfig
from pipeline.io import Storage
from pipeline.rerank.config import InputConfig
from pipeline.rerank.stages.score import ScorePairs

READY, BLOCK, DONE, FAILED = "ready", "block", "done", "failed"
PRELOAD = ["bench.gpu.overlap", "pipeline.rerank.stages.tokenize", "transformers"]


def tokenize_worker(
    model: ModelConfig, shards: list[tuple[int, str]], rows_per_call: int, out: Any, go: Any
) -> None:
    """A tokenizing actor: loads the tokenizer, waits for `go`, then sends its shards' blocks."""
    os.environ["RAYON_NUM_THREADS"] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        from pipeline.rerank.stages.tokenize import TokenizeShard

        stage = TokenizeShard(model, InputConfig(uri="."), Storage(), block_rows=rows_per_call)
        out.put((READY, None))
        go.wait()
        busy, pairs = 0.0, 0
        batch = {"shards": [[s for s, _ in shards]], "uris": [[u for _, u in shards]]}
        blocks = iter(stage(batch))
        while True:
            start = time.perf_counter()
            block = next(blocks, None)
            busy += time.perf_counter() - start
            if block is None:
                break
            pairs += block.num_rows
            out.put((BLOCK, block))
        out.put((DONE, (busy, pairs)))
    except Exception as e:  # reported to the driver, which fails the row with it
        out.put((FAILED, f"{type(e).__name__}: {e}"))


def run_pipeline(
    stage: ScorePairs, model: ModelConfig, uris: list[str], workers: int, rows_per_call: int, device: str
) -> dict[str, Any]:
    """Scores every shard through `workers` tokenizing processes and `stage`; returns pairs, the
    wall time from the go signal, the steady span (first call's start to last call's end, as the
    job reports it), the workers' tokenizing seconds and the tokens actually run."""
    ctx = mp.get_context("forkserver")  # a fresh interpreter, not a fork of this CUDA process,
    ctx.set_forkserver_preload(PRELOAD)  # and its imports paid once for every kind's workers
    out = ctx.Queue(maxsize=2 * workers)  # bounded, as Ray Data's backpressure bounds the queue
    go = ctx.Event()
    shards = list(enumerate(uris))
    procs = [
        ctx.Process(
            target=tokenize_worker, args=(model, shards[w::workers], rows_per_call, out, go), daemon=True
        )
        for w in range(workers)
    ]
    for p in procs:
        p.start()
    try:
        return _drive(stage, model.score_columns[0], lambda: _get(out, procs), go, workers, device)
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()


def _get(out: Any, procs: list[Any], patience_s: float = 600.0) -> tuple[str, Any]:
    """The next message; fails when a worker died without reporting, or all stay silent."""
    deadline = time.monotonic() + patience_s
    while time.monotonic() < deadline:
        try:
            return out.get(timeout=1.0)
        except queue.Empty:
            dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if dead:
                raise RuntimeError(f"a tokenizing worker exited with code {dead[0]}") from None
    raise RuntimeError(f"the tokenizing workers sent nothing for {patience_s:.0f} s")


def _drive(
    stage: ScorePairs, score: str, get: Callable[[], tuple[str, Any]], go: Any, workers: int, device: str
) -> dict[str, Any]:
    import torch

    ready = 0
    while ready < workers:
        tag, payload = get()
        if tag == FAILED:
            raise RuntimeError(f"a tokenizing worker failed: {payload}")
        ready += tag == READY
    go.set()
    start = time.perf_counter()
    done, pairs, run_tokens, busy, tokenized, non_finite = 0, 0, 0, 0.0, 0, 0
    first_call: float | None = None
    while done < workers:
        tag, payload = get()
        if tag == FAILED:
            raise RuntimeError(f"a tokenizing worker failed: {payload}")
        if tag == DONE:
            done += 1
            busy += payload[0]
            tokenized += payload[1]
            continue
        scored: pa.Table = stage(payload)
        first_call = first_call if first_call is not None else float(scored.column("call_start")[0].as_py())
        pairs += scored.num_rows
        run_tokens += int(np.asarray(scored.column("padded_tokens")).sum())
        non_finite += int((~np.isfinite(np.asarray(scored.column(score)))).sum())
    if device == "cuda":
        torch.cuda.synchronize()
    end = time.perf_counter()
    return {
        "pairs": pairs,
        "wall_s": end - start,
        "steady_s": time.time() - (first_call or time.time()),
        "run_tokens": run_tokens,
        "tokenize_busy_s": busy,
        "tokenized_pairs": tokenized,
        "non_finite_scores": non_finite,
    }
