"""LLM reranker scoring: our "Yes"-row head vs FlagEmbedding's full-vocabulary logits, same batch.

    python bench/llm_head.py            # CPU: the tiny gemma test model + a 256k-vocabulary variant
    python bench/llm_head.py --gpu      # CUDA, fp16

FlagEmbedding's FlagLLMReranker runs the whole causal LM (`lm(...).logits`: vocabulary-sized logits
at every position) and keeps one number per row. Ours (pipeline.modeling.llm_scorer.YesLogitScorer) runs the
decoder body and multiplies each row's last hidden state by the one "Yes" row. Both run the same
right-padded batch of tokenized pairs; each variant runs in its own subprocess so its peak memory
is its own (CPU: peak RSS growth during scoring; CUDA: max_memory_allocated growth).
Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.config import DEFAULT_PROMPT  # noqa: E402
from pipeline.models.padding import right_pad  # noqa: E402
from pipeline.models.prompt_tokenizer import PromptPairTokenizer  # noqa: E402

TINY_GEMMA = ROOT / "tests" / "assets" / "models" / "tiny-gemma"


def big_vocab_model(directory: Path, vocab: int) -> str:
    """The tiny gemma's shape with Gemma's 256k vocabulary (the tokenizer uses its low ids only)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(TINY_GEMMA)
    config.vocab_size = vocab
    config.hidden_size, config.intermediate_size, config.head_dim = 256, 1024, 64
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    AutoTokenizer.from_pretrained(TINY_GEMMA).save_pretrained(directory)
    return str(directory)


def batch(model_dir: str, rows: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    tok = PromptPairTokenizer.load(model_dir, 512, 384, DEFAULT_PROMPT, always_bos=False)
    rng = np.random.default_rng(0)
    words = ["kalo", "sun", "ra", "vel", "on", "is", "zo", "pe", "dre", "bar", "ter", "mi"]
    queries = [" ".join(rng.choice(words, rng.integers(3, 12))) for _ in range(rows)]
    passages = [" ".join(rng.choice(words, int(rng.lognormal(4.1, 0.6)) + 5)) for _ in range(rows)]
    padded = right_pad(tok.encode(queries, passages)["input_ids"], np.arange(rows), 0)
    input_ids, mask = (torch.from_numpy(padded[k]).to(device) for k in ("input_ids", "attention_mask"))
    return input_ids, mask


def peak_bytes(device: str) -> int:
    if device == "cuda":
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_one(variant: str, model_dir: str, rows: int, device: str, dtype: str, reps: int) -> dict:
    """One variant in this process: load, build the batch, then time and measure scoring."""
    from transformers import AutoModelForCausalLM

    from pipeline.modeling.llm_scorer import YesLogitScorer
    from pipeline.models.pair_tokenizer import load_hf_tokenizer
    from pipeline.models.prompt_tokenizer import yes_token_id

    torch_dtype = getattr(torch, dtype)
    yes = yes_token_id(load_hf_tokenizer(model_dir))
    input_ids, mask = batch(model_dir, rows, device)
    if variant == "ours":
        scorer = YesLogitScorer.load(model_dir, yes, torch_dtype).to(device)

        def score() -> torch.Tensor:
            return scorer(input_ids, mask)[:, 0]
    else:
        lm = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch_dtype).eval().to(device)
        last = mask.sum(dim=1) - 1

        def score() -> torch.Tensor:  # FlagLLMReranker: full logits, last real token, the Yes column
            logits = lm(input_ids=input_ids, attention_mask=mask).logits
            return logits[torch.arange(len(last)), last, yes].float()

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    with torch.inference_mode():
        score()  # warm-up
        sync()
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        before = (
            peak_bytes(device)
            if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        )
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            scores = score()
            sync()
            times.append(time.perf_counter() - t0)
        after = peak_bytes(device)
    real_tokens = int(mask.sum())
    return {
        "variant": variant,
        "seconds_median": float(np.median(times)),
        "peak_extra_mib": round(max(0, after - before) / 2**20, 1) if device == "cuda" else None,
        "peak_mib": round(after / 2**20, 1),
        "rows": rows,
        "padded_shape": list(input_ids.shape),
        "real_tokens": real_tokens,
        "scores": scores.cpu().tolist(),
    }


def compare(model_dir: str, label: str, vocab: int, args: argparse.Namespace) -> dict:
    results = {}
    for variant in ("ours", "full-logits"):
        cmd = [sys.executable, __file__, "--one", variant, "--model", model_dir, "--rows", str(args.rows)]
        cmd += ["--reps", str(args.reps)] + (["--gpu"] if args.gpu else [])
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        results[variant] = json.loads(out.strip().splitlines()[-1])
    ours, full = results["ours"], results["full-logits"]
    diff = float(np.max(np.abs(np.array(ours["scores"]) - np.array(full["scores"]))))
    rows, width = full["padded_shape"]
    return {
        "model": label,
        "vocab": vocab,
        "batch": f"{rows} x {width}",
        "full_logits_tensor_mib": round(rows * width * vocab * (2 if args.gpu else 4) / 2**20, 1),
        "ours_s": round(ours["seconds_median"], 4),
        "full_s": round(full["seconds_median"], 4),
        "speedup": round(full["seconds_median"] / ours["seconds_median"], 2),
        "ours_peak_mib": ours["peak_extra_mib"] if args.gpu else ours["peak_mib"],
        "full_peak_mib": full["peak_extra_mib"] if args.gpu else full["peak_mib"],
        "max_abs_score_diff": diff,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gpu", action="store_true", help="CUDA, fp16")
    parser.add_argument("--rows", type=int, default=32, help="pairs in the batch")
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions (median reported)")
    parser.add_argument("--vocab", type=int, default=256000, help="vocabulary of the big-vocab variant")
    parser.add_argument("--one", choices=["ours", "full-logits"], help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    device, dtype = ("cuda", "float16") if args.gpu else ("cpu", "float32")
    if args.one:
        torch.set_num_threads(torch.get_num_threads())
        print(json.dumps(run_one(args.one, args.model, args.rows, device, dtype, args.reps)))
        return 0
    rows = [compare(str(TINY_GEMMA), "tiny-gemma (test asset)", 900, args)]
    with tempfile.TemporaryDirectory() as tmp:
        rows.append(compare(big_vocab_model(Path(tmp), args.vocab), "gemma-vocab variant", args.vocab, args))
    memory = "peak extra MiB" if args.gpu else "peak RSS MiB"
    print(f"device={device} dtype={dtype} rows={args.rows} ({memory} while scoring; median of {args.reps})")
    print(
        f"{'model':26} {'vocab':>7} {'batch':>9} {'logits MiB':>10} {'ours s':>8} {'full s':>8} "
        f"{'speedup':>7} {'ours mem':>9} {'full mem':>9} {'max|diff|':>10}"
    )
    for r in rows:
        print(
            f"{r['model']:26} {r['vocab']:>7} {r['batch']:>9} {r['full_logits_tensor_mib']:>10} "
            f"{r['ours_s']:>8} {r['full_s']:>8} {r['speedup']:>7} {r['ours_peak_mib']:>9} "
            f"{r['full_peak_mib']:>9} {r['max_abs_score_diff']:>10.2e}"
        )
    print(json.dumps({"device": device, "dtype": dtype, "results": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
