"""Group sampling, the step schedule, the losses and the ranking metrics (pure, no Ray)."""

from __future__ import annotations

import dataclasses
import math
import random

import pytest
import torch
import torch.nn.functional as F

from pipeline.finetune.data import TrainQuery
from pipeline.finetune.groups import Schedule, sample_group
from pipeline.finetune.loss import distill_kl, group_loss, listwise_ce
from pipeline.finetune.metrics import mrr_at_k, ndcg_at_k, spearman


def query(negatives: int, scores: bool = True) -> TrainQuery:
    neg = tuple(f"n{i}" for i in range(negatives))
    return TrainQuery(
        "q",
        ("p0", "p1"),
        neg,
        None,
        (10.0, 11.0) if scores else None,
        tuple(float(i) for i in range(negatives)) if scores else None,
    )


def test_group_has_positive_first_and_aligned_teacher_scores():
    g = sample_group(query(20), 8, random.Random(0))
    assert len(g.passages) == 8 and g.passages[0] in ("p0", "p1")
    assert len(set(g.passages[1:])) == 7 and all(p.startswith("n") for p in g.passages[1:])
    assert g.teacher is not None
    assert g.teacher[0] == {"p0": 10.0, "p1": 11.0}[g.passages[0]]
    assert all(g.teacher[i] == float(g.passages[i][1:]) for i in range(1, 8))


def test_few_negatives_are_repeated_to_fill_the_group():
    g = sample_group(query(2, scores=False), 8, random.Random(0))
    assert len(g.passages) == 8 and set(g.passages[1:]) == {"n0", "n1"} and g.teacher is None


def test_schedule_covers_every_query_once_per_epoch_across_workers():
    s = Schedule(num_queries=40, workers=2, queries_per_micro_batch=4, grad_accum_steps=1, epochs=1, seed=3)
    assert s.total_steps == 5
    seen = [i for step in range(5) for w in range(2) for mb in s.micro_batches(step, w) for i, _ in mb]
    assert sorted(seen) == list(range(40))


def test_schedule_is_a_function_of_seed_step_and_worker_only():
    """A run resumed at step 2 (a new Schedule, no earlier steps computed) trains exactly what the
    uninterrupted run trains at step 2; another seed trains other queries."""
    args = dict(num_queries=40, workers=2, queries_per_micro_batch=4, grad_accum_steps=2, epochs=2, seed=3)
    uninterrupted = Schedule(**args)
    steps = {(step, w): uninterrupted.micro_batches(step, w) for step in range(5) for w in range(2)}
    resumed = Schedule(**args)
    assert resumed.micro_batches(2, 1) == steps[(2, 1)]
    assert resumed.micro_batches(4, 0) == steps[(4, 0)]  # second epoch: (index, epoch=1) pairs
    assert {e for mb in steps[(4, 0)] for _, e in mb} == {1}
    assert steps[(2, 1)] != steps[(2, 0)]  # workers train different queries at the same step
    reseeded = dataclasses.replace(uninterrupted, seed=4)
    assert reseeded.micro_batches(2, 1) != steps[(2, 1)]


def test_schedule_rounds_partial_epochs_up():
    s = Schedule(num_queries=10, workers=1, queries_per_micro_batch=4, grad_accum_steps=2, epochs=1.5, seed=0)
    assert s.total_steps == math.ceil(1.5 * 2)


def test_listwise_ce_is_cross_entropy_with_the_positive_first():
    scores = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]])
    assert torch.isclose(listwise_ce(scores), F.cross_entropy(scores, torch.tensor([0, 0])))


def test_distillation_is_zero_when_the_student_matches_the_teacher():
    teacher = torch.tensor([[3.0, 1.0, -1.0]])
    assert distill_kl(teacher.clone(), teacher, 2.0).abs() < 1e-6
    assert distill_kl(torch.tensor([[-1.0, 1.0, 3.0]]), teacher, 2.0) > 0.1


def test_mixed_loss_weights_both_terms_and_distill_needs_teacher_scores():
    scores, teacher = torch.tensor([[0.5, 1.0]]), torch.tensor([[1.0, 0.0]])
    mixed = group_loss(scores, teacher, "mixed", 0.25, 1.0)
    expected = 0.75 * listwise_ce(scores) + 0.25 * distill_kl(scores, teacher, 1.0)
    assert torch.isclose(mixed, expected)
    with pytest.raises(ValueError, match="needs teacher scores"):
        group_loss(scores, None, "distill", 0.5, 1.0)


def test_ranking_metrics():
    assert mrr_at_k([0.1, 0.9, 0.5], [True, False, False]) == pytest.approx(1 / 3)
    assert mrr_at_k([0.9, 0.1], [True, False]) == 1.0
    assert mrr_at_k([float(-i) for i in range(12)], [False] * 11 + [True]) == 0.0  # beyond @10
    assert ndcg_at_k([0.9, 0.8, 0.1], [True, False, True]) == pytest.approx(
        (1 + 1 / 2) / (1 + 1 / math.log2(3))
    )
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 1], [1, 2, 3]) == 0.0
