"""The training objectives over groups of scores [groups, group_size], positive at index 0."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def listwise_ce(scores: torch.Tensor) -> torch.Tensor:
    """FlagEmbedding's reranker loss: cross-entropy with the positive (index 0) as the target."""
    target = torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device)
    return F.cross_entropy(scores.float(), target)


def distill_kl(scores: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) between the softmaxes at `temperature`, scaled by T^2 (Hinton et al.)."""
    t = temperature
    student = F.log_softmax(scores.float() / t, dim=-1)
    target = F.log_softmax(teacher.float() / t, dim=-1)
    return F.kl_div(student, target, log_target=True, reduction="batchmean") * t * t


def group_loss(
    scores: torch.Tensor, teacher: torch.Tensor | None, kind: str, distill_weight: float, temperature: float
) -> torch.Tensor:
    """`ce`, `distill` or `mixed` ((1 - w) * ce + w * distill); distill needs teacher scores."""
    if kind == "ce":
        return listwise_ce(scores)
    if teacher is None:
        raise ValueError(f"--loss {kind} needs teacher scores (pos_scores/neg_scores or scored shards)")
    kd = distill_kl(scores, teacher, temperature)
    if kind == "distill":
        return kd
    return (1 - distill_weight) * listwise_ce(scores) + distill_weight * kd
