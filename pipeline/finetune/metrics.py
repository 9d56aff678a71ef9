"""Ranking metrics of reranked candidates: MRR@k and nDCG@k (binary relevance). Pure."""

from __future__ import annotations

import math
from collections.abc import Sequence


def _ranked_relevance(scores: Sequence[float], relevant: Sequence[bool]) -> list[bool]:
    # Stable sort: ties keep input order, as `rerank run` ranks them.
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    return [relevant[i] for i in order]


def mrr_at_k(scores: Sequence[float], relevant: Sequence[bool], k: int = 10) -> float:
    for rank, rel in enumerate(_ranked_relevance(scores, relevant)[:k], start=1):
        if rel:
            return 1.0 / rank
    return 0.0


def ndcg_at_k(scores: Sequence[float], relevant: Sequence[bool], k: int = 10) -> float:
    ranked = _ranked_relevance(scores, relevant)[:k]
    dcg = sum(1.0 / math.log2(r + 1) for r, rel in enumerate(ranked, start=1) if rel)
    ideal = sum(1.0 / math.log2(r + 1) for r in range(1, min(k, sum(relevant)) + 1))
    return dcg / ideal if ideal else 0.0


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties); 0 when either side is constant."""

    def ranks(x: Sequence[float]) -> list[float]:
        order = sorted(range(len(x)), key=lambda i: x[i])
        out = [0.0] * len(x)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and x[order[j + 1]] == x[order[i]]:
                j += 1
            for m in range(i, j + 1):
                out[order[m]] = (i + j) / 2
            i = j + 1
        return out

    ra, rb = ranks(a), ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
    va = math.sqrt(sum((x - ma) ** 2 for x in ra))
    vb = math.sqrt(sum((y - mb) ** 2 for y in rb))
    return cov / (va * vb) if va and vb else 0.0
