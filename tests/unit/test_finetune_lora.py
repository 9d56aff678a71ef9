"""LLM rerankers fine-tune through LoRA on their family's score (flag-llm's "Yes" logit, qwen3's
yes - no, mxbai-v2's "1" - "0"); the merged model, with its reranker.json, scores in `rerank run`
as the same family without flags."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.config import ModelConfig
from pipeline.finetune.config import ModelSection
from pipeline.finetune.groups import Group
from pipeline.finetune.loss import listwise_ce
from pipeline.finetune.student import GroupEncoder, load_student, scoring_model_config
from pipeline.modeling.reranker import Reranker
from pipeline.models.families.sidecar import write_sidecar
from pipeline.models.kinds import load_pair_tokenizer, resolve_model

PASSAGES = ("the sun is a star", "bananas are yellow", "rain falls down", "stars shine at night")


def group_scores(student, encoder, group) -> torch.Tensor:
    return student.scorer(**encoder.to_tensors(encoder.encode_groups([group]), torch.device("cpu")))[:, 0]


@pytest.mark.parametrize(
    ("family", "fixture"),
    [("flag-llm", "tiny_gemma"), ("qwen3", "tiny_qwen3_reranker"), ("mxbai-v2", "tiny_mxbai_v2")],
)
def test_lora_step_moves_the_family_score_and_the_merged_model_scores_as_that_family(
    family, fixture, tmp_path, request
):
    path = request.getfixturevalue(fixture)
    torch.manual_seed(0)
    section = resolve_model(path, ModelSection(name_or_path=path, max_length=96, instruction="Rank."))
    assert section.family == family
    student = load_student(path, section)
    trainable = [n for n, p in student.scorer.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    encoder = GroupEncoder(path, scoring_model_config(section), 0)
    group = Group("what is the sun", PASSAGES, None, None)

    student.scorer.eval()
    with torch.no_grad():
        before = group_scores(student, encoder, group)
    base = Reranker.load(path, "cpu", "float32", 4096, kind="llm", family=family)
    encoded = encoder.base.encode([group.query] * len(PASSAGES), list(PASSAGES))
    np.testing.assert_allclose(base.score(encoded["input_ids"]).scores, before.numpy(), atol=1e-5)
    optimizer = torch.optim.AdamW([p for p in student.scorer.parameters() if p.requires_grad], lr=5e-2)
    student.scorer.train()
    for _ in range(3):
        loss = listwise_ce(group_scores(student, encoder, group).view(1, -1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    student.scorer.eval()
    with torch.no_grad():
        after = group_scores(student, encoder, group)
    assert not torch.allclose(before, after, atol=1e-3)
    assert after[0] - after[1:].max() > before[0] - before[1:].max()  # the positive moved up

    merged = str(tmp_path / "merged")
    student.save_pretrained(merged, encoder.tokenizer)
    write_sidecar(merged, family, "Rank.")  # as the training job publishes it
    resolved = resolve_model(merged, ModelConfig(name_or_path=merged, max_length=96))
    assert (resolved.family, resolved.instruction) == (family, "Rank.")
    reranker = Reranker.load(merged, "cpu", "float32", 4096, kind="llm", family=family)
    encoded = load_pair_tokenizer(merged, resolved).encode([group.query] * len(PASSAGES), list(PASSAGES))
    np.testing.assert_allclose(
        reranker.score(encoded["input_ids"]).scores, after.numpy(), rtol=1e-4, atol=1e-4
    )
