"""The CPU benchmarks' models and corpus (bench/kernels.py, bench/precision.py): the demo MiniLM-L6
cross-encoder (real encoder weights, random head) and XLM-R base and large shapes (random weights,
the MiniLM WordPiece tokenizer: the compute is the shape's, the 30,522-word vocabulary only sizes
the embedding), over the demo corpus tokenized as the job does (max_length 512, query cap 384)."""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.demo.corpus import make_corpus  # noqa: E402
from pipeline.demo.model import make_demo_model  # noqa: E402
from pipeline.models.pair_tokenizer import PairTokenizer  # noqa: E402

CANDIDATES = 20
# name -> (layers, hidden, heads, intermediate); None: the demo MiniLM-L6 model itself
SHAPES: dict[str, tuple[int, int, int, int] | None] = {
    "minilm": None,
    "xlmr-base": (12, 768, 12, 3072),
    "xlmr-large": (24, 1024, 16, 4096),
}


@dataclass(frozen=True)
class Corpus:
    input_ids: pa.ListArray
    token_type_ids: pa.ListArray | None
    queries: np.ndarray  # the query index of each pair (20 candidates each)

    @property
    def tokens(self) -> int:
        return int(np.diff(self.input_ids.offsets.to_numpy()).sum())

    def __len__(self) -> int:
        return len(self.input_ids)


def build_model(shape: str, work: Path) -> Path:
    """The model directory of a shape (built once under `work`)."""
    demo = make_demo_model(work / "minilm")
    if SHAPES[shape] is None:
        return demo
    directory = work / shape
    if (directory / "model.safetensors").exists():
        return directory
    import torch
    from transformers import AutoTokenizer, XLMRobertaConfig, XLMRobertaForSequenceClassification

    layers, hidden, heads, intermediate = SHAPES[shape]  # type: ignore[misc]
    config = XLMRobertaConfig(
        vocab_size=30522,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=514,
        type_vocab_size=2,  # the WordPiece tokenizer's segment ids (XLM-R's own has 1: same compute)
        pad_token_id=0,  # the tokenizer's [PAD]: RoBERTa positions count from it
        num_labels=1,
    )
    torch.manual_seed(0)
    XLMRobertaForSequenceClassification(config).save_pretrained(directory)
    AutoTokenizer.from_pretrained(demo).save_pretrained(directory)
    return directory


def load_corpus(work: Path, model_dir: Path, pairs: int, seed: int = 7) -> Corpus:
    """`pairs` demo pairs (queries of 20 candidates), tokenized with the model's tokenizer."""
    queries = max(1, pairs // CANDIDATES)
    directory = work / f"corpus-{queries}-{seed}"
    if not directory.exists():
        make_corpus(directory, queries, CANDIDATES, 1, seed=seed)
    table = pa.concat_tables(
        pq.read_table(p, columns=["query", "passage"]) for p in sorted(directory.glob("*.parquet"))
    )
    enc = PairTokenizer.load(str(model_dir), 512, 384).encode(
        table.column("query").to_pylist(), table.column("passage").to_pylist()
    )
    return Corpus(enc["input_ids"], enc.get("token_type_ids"), np.arange(table.num_rows) // CANDIDATES)


def shape_arguments(description: str) -> argparse.ArgumentParser:
    """The options every CPU benchmark takes: shapes, pairs, passes, a work directory."""
    ap = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--shapes", nargs="+", default=["minilm", "xlmr-base"], choices=sorted(SHAPES))
    ap.add_argument("--pairs", type=int, default=0, help="default: 1500 for minilm, 400 for the XLM-R shapes")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--workdir", type=Path, help="keep models and corpus here (default: temp)")
    return ap


def in_workdir(
    args: argparse.Namespace, measure: Callable[[argparse.Namespace, Path], dict], prefix: str
) -> dict:
    """`measure(args, work)` in --workdir, or in a temporary directory removed afterwards."""
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        return measure(args, args.workdir)
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        return measure(args, Path(tmp))
