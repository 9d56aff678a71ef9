"""What every goldens script shares: the pairs they score and the recording of the token ids a
package actually fed its model. Plain Python (no torch, no package import), so the side venv's
scripts (run as scripts: `from golden_pairs import ...`) and the main venv's (`from
tests.assets.golden_pairs import ...`) use the same code.

    make_goldens.py          FlagEmbedding 1.4.2 (side venv)
    make_family_goldens.py   builds the tiny Qwen3 / mxbai / ModernBERT models (main venv) and
    score_family_goldens.py  scores them with the publishers' code (side venv)
"""

from __future__ import annotations

import random
from typing import Any

SEED = 7


def make_pairs(seed: int = SEED) -> list[list[str]]:
    """Short pairs, passages far past 512 tokens, queries past the query cap, non-ASCII text, an
    empty query."""
    rng = random.Random(seed)
    syll = ["ka", "lo", "mi", "ter", "sun", "ra", "vel", "on", "is", "zo", "pe", "dre", "bar"]

    def words(n: int) -> str:
        return " ".join("".join(rng.choice(syll) for _ in range(rng.randint(1, 3))) for _ in range(n))

    pairs = [
        ["what is kalo", "kalo is a sunra of the velon."],
        ["how does zo pe work?", "short"],
        ["café naïve", "Ünïcödé text — with dashes, emoji 🙂 and עברית"],
        ["", "empty query still scores"],
    ]
    for n_q, n_p in [(3, 20), (8, 60), (12, 300), (5, 900), (60, 50), (200, 400), (1, 1)]:
        pairs.append([words(n_q), words(n_p)])
    for _ in range(12):
        pairs.append([words(rng.randint(2, 15)), words(int(rng.lognormvariate(4.0, 1.0)) + 1)])
    return pairs


def record_inputs(model: Any) -> list[tuple[int, ...]]:
    """Wraps `model.forward` to record each row's real token ids (mask 1) as it is called: the ids a
    package fed its model, whatever its own batching and padding."""
    seen: list[tuple[int, ...]] = []
    forward = model.forward

    def recording(*args: Any, **kwargs: Any) -> Any:
        ids, mask = kwargs["input_ids"], kwargs["attention_mask"]
        for row, m in zip(ids.tolist(), mask.tolist()):
            seen.append(tuple(t for t, keep in zip(row, m) if keep))
        return forward(*args, **kwargs)

    model.forward = recording
    return seen
