"""LLM reranker scoring: our token-logit head vs the reference code's full-vocabulary logits, same batch.

    python bench/llm_head.py            # CPU: tiny gemma, a 256k-vocabulary gemma, a cut Qwen3-Reranker
    python bench/llm_head.py --gpu      # CUDA, fp16
    python bench/llm_head.py --rows 2 --reps 1 --qwen3-layers 1   # smoke run

The reference code runs the whole causal LM (`lm(...).logits`: vocabulary-sized logits at every
position) and keeps one number per row: FlagEmbedding's FlagLLMReranker the "Yes" column (flag-llm
family), the Qwen3-Reranker card logit("yes") - logit("no") (qwen3 family). Ours
(pipeline.modeling.llm_scorer.TokenLogitScorer) runs the decoder body and multiplies each row's last
hidden state by the family's score tokens' output-embedding rows, folded into one row.

Models: the tiny gemma test asset; the same shape with Gemma's 256k vocabulary (`--vocab`); and a
Qwen3ForCausalLM at Qwen3-Reranker-0.6B's width (hidden 1024, 16/8 heads, head_dim 128, Qwen's
151,669-token vocabulary, tied embeddings) with only `--qwen3-layers` of its 28 layers so CPU runs
finish, random weights (seeded) and the real Qwen3 tokenizer (tests/assets/qwen_tokenizer.py).
Pairs are tokenized with the family's template (TemplatePairTokenizer, its default instruction).

Both variants run the same right-padded batch; each runs in its own subprocess (`--one`, with the
model and `--family`) so its peak memory is its own (CPU: peak RSS; CUDA: max_memory_allocated
growth). Prints a table and one JSON line; max|diff| is between the two variants' scores.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.models.families.family import Family  # noqa: E402
from pipeline.models.families.registry import FLAG_LLM, QWEN3, family_named  # noqa: E402
from pipeline.models.families.template_tokenizer import TemplatePairTokenizer  # noqa: E402
from pipeline.models.padding import right_pad  # noqa: E402

TINY_GEMMA = ROOT / "tests" / "assets" / "models" / "tiny-gemma"
QWEN3_VOCAB = 151669  # Qwen3's 151,643 BPE ranks + 26 added tokens
# Qwen3-Reranker-0.6B's width (its config.json); the layer count comes from --qwen3-layers
QWEN3_0_6B_WIDTH = {
    "vocab_size": QWEN3_VOCAB,
    "hidden_size": 1024,
    "intermediate_size": 3072,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "rope_theta": 1000000.0,
    "tie_word_embeddings": True,
    "initializer_range": 0.02,
}
QWEN3_0_6B_LAYERS = 28

Score = Callable[[], torch.Tensor]


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


def qwen3_model(directory: Path, layers: int) -> str:
    """A Qwen3ForCausalLM at Qwen3-Reranker-0.6B's width with `layers` layers, random weights
    (seeded, transformers' init at the published initializer_range), and the Qwen3 tokenizer."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from tests.assets.family_models import QWEN3_RERANKER_CONFIG
    from tests.assets.qwen_tokenizer import build_qwen_tokenizer

    directory.mkdir(parents=True, exist_ok=True)
    fields = QWEN3_RERANKER_CONFIG | QWEN3_0_6B_WIDTH  # the tiny test config's other keys, as published
    fields |= {"num_hidden_layers": layers, "max_window_layers": layers}
    (directory / "config.json").write_text(json.dumps(fields, indent=2) + "\n")
    torch.manual_seed(0)
    lm = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(directory))
    lm.save_pretrained(directory)
    build_qwen_tokenizer(directory, "qwen3")
    return str(directory)


def batch(model_dir: str, family: Family, rows: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """`rows` seeded random pairs in the family's template, right-padded: (input_ids, mask)."""
    query_cap = 384 if family.query_cap == "default" else None  # qwen3: no cap unless given
    tok = TemplatePairTokenizer.load(model_dir, family, 512, query_cap, family.instruction(None))
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


def scoring(
    variant: str, model_dir: str, family: Family, input_ids: torch.Tensor, mask: torch.Tensor, dtype: str
) -> Score:
    """The variant's scoring of the batch, loaded and ready: a call gives fp32 scores [rows]."""
    from transformers import AutoModelForCausalLM

    from pipeline.modeling.llm_scorer import TokenLogitScorer
    from pipeline.models.families.score_tokens import score_token_ids, score_weights
    from pipeline.models.text_tokenizer import TextTokenizer

    torch_dtype = getattr(torch, dtype)
    ids = list(score_token_ids(family, TextTokenizer.load(model_dir)))
    weights = score_weights(family)
    device = input_ids.device
    if variant == "ours":
        scorer = TokenLogitScorer.load(model_dir, ids, weights, torch_dtype).to(device)
        return lambda: scorer(input_ids, mask)[:, 0]
    lm = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch_dtype).eval().to(device)
    last = mask.sum(dim=1) - 1
    w = torch.tensor(weights, device=device)

    def score() -> torch.Tensor:
        # FlagLLMReranker: logits[:, last, yes]; the Qwen3 card: logits[:, last, yes] - logits[:, last, no]
        logits = lm(input_ids=input_ids, attention_mask=mask).logits
        return logits[torch.arange(len(last), device=device), last][:, ids].float() @ w

    return score


def run_one(args: argparse.Namespace, device: str, dtype: str) -> dict:
    """One variant in this process: load, build the batch, then time and measure scoring."""
    family = family_named(args.family)
    input_ids, mask = batch(args.model, family, args.rows, device)
    score = scoring(args.one, args.model, family, input_ids, mask, dtype)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    with torch.inference_mode():
        score()  # warm-up
        sync()
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        before = peak_bytes(device)
        times = []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            scores = score()
            sync()
            times.append(time.perf_counter() - t0)
        after = peak_bytes(device)
    return {
        "variant": args.one,
        "family": family.name,
        "seconds_median": float(np.median(times)),
        "peak_extra_mib": round(max(0, after - before) / 2**20, 1) if device == "cuda" else None,
        "peak_mib": round(after / 2**20, 1),
        "rows": args.rows,
        "padded_shape": list(input_ids.shape),
        "real_tokens": int(mask.sum()),
        "scores": scores.cpu().tolist(),
    }


def compare(model_dir: str, label: str, family: Family, vocab: int, args: argparse.Namespace) -> dict:
    """Both variants on one model, each in its own subprocess: one table row."""
    results = {}
    for variant in ("ours", "full-logits"):
        cmd = [sys.executable, __file__, "--one", variant, "--model", model_dir, "--family", family.name]
        cmd += ["--rows", str(args.rows), "--reps", str(args.reps)] + (["--gpu"] if args.gpu else [])
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        results[variant] = json.loads(out.strip().splitlines()[-1])
    ours, full = results["ours"], results["full-logits"]
    diff = float(np.max(np.abs(np.array(ours["scores"]) - np.array(full["scores"]))))
    rows, width = full["padded_shape"]
    return {
        "model": label,
        "family": family.name,
        "vocab": vocab,
        "batch": f"{rows} x {width}",
        "full_logits_tensor_mib": round(rows * width * vocab * (2 if args.gpu else 4) / 2**20, 1),
        "ours_s": round(ours["seconds_median"], 4),
        "full_s": round(full["seconds_median"], 4),
        "speedup": round(full["seconds_median"] / ours["seconds_median"], 2),
        "ours_peak_mib": ours["peak_extra_mib"] if args.gpu else ours["peak_mib"],
        "full_peak_mib": full["peak_extra_mib"] if args.gpu else full["peak_mib"],
        "max_abs_score_diff": diff,
        "score_range": [round(min(full["scores"]), 4), round(max(full["scores"]), 4)],
    }


def print_table(rows: list[dict], args: argparse.Namespace, device: str, dtype: str) -> None:
    memory = "peak extra MiB" if args.gpu else "peak RSS MiB"
    print(f"device={device} dtype={dtype} rows={args.rows} ({memory} while scoring; median of {args.reps})")
    print(
        f"{'model':32} {'family':8} {'vocab':>7} {'batch':>9} {'logits MiB':>10} {'ours s':>8} "
        f"{'full s':>8} {'speedup':>7} {'ours mem':>9} {'full mem':>9} {'max|diff|':>10}"
    )
    for r in rows:
        print(
            f"{r['model']:32} {r['family']:8} {r['vocab']:>7} {r['batch']:>9} "
            f"{r['full_logits_tensor_mib']:>10} {r['ours_s']:>8} {r['full_s']:>8} {r['speedup']:>7} "
            f"{r['ours_peak_mib']:>9} {r['full_peak_mib']:>9} {r['max_abs_score_diff']:>10.2e}"
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gpu", action="store_true", help="CUDA, fp16")
    parser.add_argument("--rows", type=int, default=32, help="pairs in the batch")
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions (median reported)")
    parser.add_argument("--vocab", type=int, default=256000, help="vocabulary of the big-vocab variant")
    parser.add_argument(
        "--qwen3-layers",
        type=int,
        default=4,
        help=f"decoder layers of the Qwen3-Reranker-0.6B-width model (the real one has {QWEN3_0_6B_LAYERS})",
    )
    parser.add_argument("--one", choices=["ours", "full-logits"], help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--family", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not 1 <= args.qwen3_layers <= QWEN3_0_6B_LAYERS:
        parser.error(f"--qwen3-layers={args.qwen3_layers}: give 1 to {QWEN3_0_6B_LAYERS}")
    return args


def main() -> int:
    args = parse_args()
    device, dtype = ("cuda", "float16") if args.gpu else ("cpu", "float32")
    if args.one:
        torch.set_num_threads(torch.get_num_threads())
        print(json.dumps(run_one(args, device, dtype)))
        return 0
    rows = [compare(str(TINY_GEMMA), "tiny-gemma (test asset)", FLAG_LLM, 900, args)]
    with tempfile.TemporaryDirectory() as tmp:
        gemma = big_vocab_model(Path(tmp) / "gemma", args.vocab)
        rows.append(compare(gemma, "gemma-vocab variant", FLAG_LLM, args.vocab, args))
    with tempfile.TemporaryDirectory() as tmp:
        qwen3 = qwen3_model(Path(tmp) / "qwen3", args.qwen3_layers)
        label = f"Qwen3-Reranker-0.6B, {args.qwen3_layers}/{QWEN3_0_6B_LAYERS} layers"
        rows.append(compare(qwen3, label, QWEN3, QWEN3_VOCAB, args))
    print_table(rows, args, device, dtype)
    print(json.dumps({"device": device, "dtype": dtype, "results": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
