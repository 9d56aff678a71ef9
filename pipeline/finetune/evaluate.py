"""MRR@10 / nDCG@10 of a scoring module over held-out queries: all of a query's passages reranked."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from pipeline.finetune.data import TrainQuery
from pipeline.finetune.metrics import mrr_at_k, ndcg_at_k
from pipeline.finetune.student import GroupEncoder

EVAL_ROWS_PER_BATCH = 64


@torch.no_grad()
def score_query(
    scorer: nn.Module,
    encoder: GroupEncoder,
    q: TrainQuery,
    device: torch.device,
    autocast: contextlib.AbstractContextManager,
) -> list[float]:
    """The scores of q's positives then negatives, in that order."""
    passages = [*q.pos, *q.neg]
    rows = encoder.encode_pairs([q.query] * len(passages), passages, q.prompt)
    out: list[float] = []
    for i in range(0, len(rows), EVAL_ROWS_PER_BATCH):
        with autocast:
            scores = scorer(**encoder.to_tensors(rows[i : i + EVAL_ROWS_PER_BATCH], device))
        out += scores[:, 0].float().cpu().tolist()
    return out


def evaluate(
    scorer: nn.Module,
    encoder: GroupEncoder,
    queries: list[TrainQuery],
    device: torch.device,
    autocast: contextlib.AbstractContextManager | None = None,
) -> dict[str, float]:
    """Mean MRR@10 and nDCG@10 (positives relevant) over `queries`, in eval mode."""
    was_training = scorer.training
    scorer.eval()
    mrr = ndcg = 0.0
    for q in queries:
        scores = score_query(scorer, encoder, q, device, autocast or contextlib.nullcontext())
        relevant = [True] * len(q.pos) + [False] * len(q.neg)
        mrr += mrr_at_k(scores, relevant)
        ndcg += ndcg_at_k(scores, relevant)
    scorer.train(was_training)
    n = max(1, len(queries))
    return {"mrr@10": round(mrr / n, 4), "ndcg@10": round(ndcg / n, 4), "queries": len(queries)}
