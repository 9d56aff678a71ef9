"""LLM rerankers fine-tune through LoRA on the "Yes" logit; the merged model scores in `rerank run`."""

from __future__ import annotations

import numpy as np
import torch

from pipeline.finetune.config import ModelSection
from pipeline.finetune.groups import Group
from pipeline.finetune.loss import listwise_ce
from pipeline.finetune.student import GroupEncoder, load_student, scoring_model_config
from pipeline.modeling.reranker import Reranker
from pipeline.models.kinds import load_pair_tokenizer

PASSAGES = ("the sun is a star", "bananas are yellow", "rain falls down", "stars shine at night")


def group_scores(student, encoder, group) -> torch.Tensor:
    return student.scorer(**encoder.to_tensors(encoder.encode_groups([group]), torch.device("cpu")))[:, 0]


def test_lora_step_changes_yes_logits_and_merged_model_loads_as_llm_reranker(tiny_gemma, tmp_path):
    torch.manual_seed(0)
    section = ModelSection(name_or_path=tiny_gemma, max_length=64)
    student = load_student(tiny_gemma, section, "llm")
    trainable = [n for n, p in student.scorer.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    encoder = GroupEncoder(tiny_gemma, scoring_model_config(section, "llm"), 0)
    group = Group("what is the sun", PASSAGES, None, None)

    student.scorer.eval()
    with torch.no_grad():
        before = group_scores(student, encoder, group)
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

    student.save_pretrained(str(tmp_path / "merged"), encoder.tokenizer)
    merged = str(tmp_path / "merged")
    reranker = Reranker.load(merged, "cpu", "float32", 4096, kind="llm")
    tokenizer = load_pair_tokenizer(
        merged, scoring_model_config(section.model_copy(update={"name_or_path": merged}), "llm")
    )
    encoded = tokenizer.encode([group.query] * len(PASSAGES), list(PASSAGES))
    scored = reranker.score(encoded["input_ids"]).scores
    np.testing.assert_allclose(scored, after.numpy(), rtol=1e-4, atol=1e-4)
