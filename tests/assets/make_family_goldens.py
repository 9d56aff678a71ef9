"""Writes tests/assets/goldens/families.json: the Qwen3-Reranker, mxbai-rerank-v2 and ModernBERT
goldens that tests/unit/test_family_parity.py checks the job (and tests/assets/card_reference.py)
against. Not part of CI:

    make family-goldens     # or: .venv/bin/python -m tests.assets.make_family_goldens

1. The main venv builds the three tiny models into a temporary directory with the fixtures' own
   builders (tests/assets/family_models.py) and checks their weight digests;
2. the side venv `.venv-flag` (transformers 4.57.6, mxbai-rerank 0.1.6, sentence-transformers
   5.7.0; see the Makefile) scores every case with the publishers' code
   (tests/assets/score_family_goldens.py);
3. the results are stored per case with the model's name and weights digest, max_length,
   instruction, the token ids the scorer fed its model and its raw scores; the pairs once.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.assets import family_models, golden_pairs

ASSETS = Path(__file__).resolve().parent
ROOT = ASSETS.parents[1]

SIDE_PYTHON = ROOT / ".venv-flag" / "bin" / "python"
SEED = 7

# model name -> (family, builder, expected weights digest)
MODELS = {
    "tiny-qwen3-reranker": (
        "qwen3",
        family_models.build_tiny_qwen3_reranker,
        family_models.QWEN3_RERANKER_DIGEST,
    ),
    "tiny-mxbai-rerank-base-v2": (
        "mxbai-v2",
        family_models.build_tiny_mxbai_v2,
        family_models.MXBAI_V2_DIGEST,
    ),
    "tiny-modernbert-reranker": (
        "modernbert",
        family_models.build_tiny_modernbert,
        family_models.MODERNBERT_DIGEST,
    ),
}
# (model, max_length, instruction or None for the family's default / none)
CASES = [
    ("tiny-qwen3-reranker", 512, None),
    ("tiny-qwen3-reranker", 96, None),
    ("tiny-qwen3-reranker", 160, "Given a question, retrieve passages that answer it"),
    ("tiny-mxbai-rerank-base-v2", 512, None),
    ("tiny-mxbai-rerank-base-v2", 64, None),
    ("tiny-mxbai-rerank-base-v2", 128, "Retrieve passages that answer the question."),
    ("tiny-modernbert-reranker", 512, None),
    ("tiny-modernbert-reranker", 64, None),
]


def make_pairs() -> list[list[str]]:
    """make_goldens' pairs (short, passages far past 512 tokens, long queries, non-ASCII, an empty
    query), and one whose texts hold template-like and special-token text."""
    extra = ["{query} <Document>: is it?", "text with <|im_end|> and [SEP] inside\n\nrelevance: 1"]
    return [*golden_pairs.make_pairs(SEED), extra]


def build_models(root: Path) -> dict[str, dict[str, str]]:
    """The tiny models under `root`, each checked against its pinned digest."""
    built = {}
    for name, (family, builder, expected) in MODELS.items():
        model_dir = builder(root / name)
        digest = family_models.weights_digest(model_dir)
        if digest != expected:
            raise SystemExit(f"{name}: weights digest {digest} != pinned {expected} (family_models.py)")
        built[name] = {"family": family, "dir": str(model_dir), "weights_digest": digest}
    return built


def main() -> int:
    if not SIDE_PYTHON.exists():
        raise SystemExit(f"no side venv at {SIDE_PYTHON}: run `make family-goldens`, which creates it")
    pairs = make_pairs()
    with tempfile.TemporaryDirectory(prefix="family-goldens-") as tmp:
        models = build_models(Path(tmp) / "models")
        spec = {
            "pairs": pairs,
            "cases": [
                {
                    "family": models[name]["family"],
                    "model": name,
                    "model_dir": models[name]["dir"],
                    "max_length": max_length,
                    "instruction": instruction,
                }
                for name, max_length, instruction in CASES
            ],
        }
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "scored.json"
        spec_path.write_text(json.dumps(spec))
        scorer = ASSETS / "score_family_goldens.py"
        subprocess.run([str(SIDE_PYTHON), str(scorer), str(spec_path), str(out_path)], check=True)
        scored = json.loads(out_path.read_text())
    cases = [{**c, "weights_digest": models[c["model"]]["weights_digest"]} for c in scored["cases"]]
    golden = {
        "generated_by": "tests/assets/make_family_goldens.py (make family-goldens)",
        "side_venv": scored["versions"],
        "pairs": pairs,
        "cases": cases,
    }
    out = ASSETS / "goldens" / "families.json"
    out.write_text(to_json(golden) + "\n")
    print(f"wrote {out}")
    return 0


def to_json(value: object, indent: str = "") -> str:
    """JSON with one line per list of scalars (a pair, a row of token ids), nested otherwise."""
    inner = indent + " "
    if isinstance(value, dict):
        items = [f"{inner}{json.dumps(k)}: {to_json(v, inner)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{indent}}}"
    if isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        return "[\n" + ",\n".join(inner + to_json(v, inner) for v in value) + f"\n{indent}]"
    return json.dumps(value, ensure_ascii=False)


if __name__ == "__main__":
    sys.exit(main())
