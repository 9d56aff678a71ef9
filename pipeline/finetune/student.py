"""The model being trained, wrapped in the same scoring module `rerank run` uses for its kind.

- encoder: `pipeline.modeling.reranker.EncoderScorer` over the sequence classifier; every weight trains.
- llm: `pipeline.modeling.llm_scorer.TokenLogitScorer` over the causal LM's decoder, with LoRA
  adapters (peft) in its linear layers; the score is the family's token-logit score at the last
  token (flag-llm's "Yes" logit, qwen3's yes - no, mxbai-v2's "1" - "0"), as in scoring. The
  published model has the adapters merged, so `rerank run` loads it as any LLM reranker.

Groups are tokenized by the job's own pair tokenizers (`pipeline.models.kinds.load_pair_tokenizer`), so
truncation and layout match scoring exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.config import ModelConfig
from pipeline.errors import ModelLoadError
from pipeline.finetune.config import ModelSection
from pipeline.finetune.groups import Group
from pipeline.modeling.llm_scorer import TokenLogitScorer
from pipeline.modeling.reranker import EncoderScorer
from pipeline.modeling.token_head import TokenLogitHead, final_logit_softcap, load_rows
from pipeline.models.families.registry import family_named
from pipeline.models.families.score_tokens import score_token_ids, score_weights
from pipeline.models.families.template_tokenizer import TemplatePairTokenizer
from pipeline.models.kinds import family_query_max_length, load_pair_tokenizer
from pipeline.models.padding import right_pad, token_lists
from pipeline.models.pair_tokenizer import PairTokenizer
from pipeline.models.text_tokenizer import TextTokenizer


@dataclass
class Student:
    """The trainable scoring module and what saving it needs."""

    scorer: nn.Module  # forward(input_ids, attention_mask[, token_type_ids]) -> fp32 [rows, 1]
    model: Any  # the transformers model (peft-wrapped for llm)
    kind: str

    def trainable_state(self) -> dict[str, torch.Tensor]:
        if self.kind == "llm":
            from peft import get_peft_model_state_dict

            return get_peft_model_state_dict(self.model)
        return self.model.state_dict()

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        if self.kind == "llm":
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(self.model, state)
        else:
            self.model.load_state_dict(state)

    def save_pretrained(self, directory: str, tokenizer: Any) -> None:
        """A plain model directory (LoRA merged in) plus the tokenizer: loadable by `rerank run`."""
        model = self.model.merge_and_unload() if self.kind == "llm" else self.model
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)


def scoring_model_config(section: ModelSection) -> ModelConfig:
    """The scoring job's model config for the same model, family, lengths and instruction
    (`section` resolved: its kind and family known)."""
    return ModelConfig(
        name_or_path=section.name_or_path,
        kind=section.kind,
        family=section.family,
        instruction=section.given_instruction if section.kind == "llm" else None,
        max_length=section.max_length,
        query_max_length=section.query_max_length,
        trust_remote_code=section.trust_remote_code,
    )


def load_student(path: str, section: ModelSection) -> Student:
    """The base model at `path` (a local directory or hub id), ready to train in float32;
    `section` resolved (its kind and family known)."""
    if section.kind == "encoder":
        from transformers import AutoModelForSequenceClassification

        try:
            model = AutoModelForSequenceClassification.from_pretrained(
                path, dtype=torch.float32, trust_remote_code=section.trust_remote_code
            )
        except Exception as e:
            raise ModelLoadError(f"cannot load --model {path!r} to fine-tune: {e}") from e
        return Student(EncoderScorer(model), model, section.kind)
    if section.kind == "llm":
        return _load_lora_student(path, section)
    raise ModelLoadError(f"fine-tuning supports --kind encoder and llm, not {section.kind!r}")


def _load_lora_student(path: str, section: ModelSection) -> Student:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    try:
        lm = AutoModelForCausalLM.from_pretrained(
            path, dtype=torch.float32, trust_remote_code=section.trust_remote_code
        )
    except Exception as e:
        raise ModelLoadError(f"cannot load --model {path!r} as a causal LM to fine-tune: {e}") from e
    family = family_named(section.family)
    token_ids = score_token_ids(family, TextTokenizer.load(path))
    lora = LoraConfig(
        r=section.lora_rank,
        lora_alpha=section.lora_alpha,
        lora_dropout=section.lora_dropout,
        target_modules=section.lora_target_modules or "all-linear",
        bias="none",
    )
    peft_model = get_peft_model(lm, lora)  # adapters go into lm's own modules, in place
    # the score rows stay frozen (LoRA leaves the output embedding alone): the head is a copy
    rows, bias = load_rows(lm, token_ids)
    head = TokenLogitHead(rows, score_weights(family), bias, final_logit_softcap(lm))
    return Student(TokenLogitScorer(lm.get_decoder(), head), peft_model, "llm")


class GroupEncoder:
    """Groups → padded model inputs, through the scoring job's pair tokenizer (prompt per group)."""

    def __init__(self, path: str, model: ModelConfig, pad_token_id: int | None = None) -> None:
        """`pad_token_id`: the model's (its config's); without one, the tokenizer's, else 0."""
        self.base = load_pair_tokenizer(path, model)
        self.model = model
        fallback = self.base.tokenizer.pad_token_id
        self.pad_token_id = int(pad_token_id if pad_token_id is not None else (fallback or 0))
        self._by_prompt: dict[str, PairTokenizer | TemplatePairTokenizer] = {}

    @property
    def tokenizer(self) -> Any:
        """The pair tokenizer's text tokenizer (what `Student.save_pretrained` saves with the model)."""
        return self.base.tokenizer

    def _tokenizer(self, prompt: str | None) -> PairTokenizer | TemplatePairTokenizer:
        if prompt is None or not isinstance(self.base, TemplatePairTokenizer):
            return self.base  # encoders take no prompt (FlagEmbedding ignores it there too)
        if prompt not in self._by_prompt:
            b, family = self.base, self.base.family
            self._by_prompt[prompt] = TemplatePairTokenizer(
                family, b.tokenizer, b.max_length, family_query_max_length(family, self.model), prompt
            )
        return self._by_prompt[prompt]

    def encode_pairs(self, queries: list[str], passages: list[str], prompt: str | None) -> list[Any]:
        """Token id rows (and type id rows, or None) of pairs sharing one prompt."""
        encoded = self._tokenizer(prompt).encode(queries, passages)
        ids = encoded["input_ids"].to_pylist()
        types = encoded["token_type_ids"].to_pylist() if "token_type_ids" in encoded else [None] * len(ids)
        return list(zip(ids, types, strict=True))

    def encode_groups(self, groups: list[Group]) -> list[Any]:
        rows = []
        for g in groups:
            rows += self.encode_pairs([g.query] * len(g.passages), list(g.passages), g.prompt)
        return rows

    def to_tensors(self, rows: list[Any], device: torch.device) -> dict[str, torch.Tensor]:
        """Right-padded input_ids / attention_mask (/ token_type_ids), as `Reranker.inputs` builds them."""
        ids = token_lists([row_ids for row_ids, _ in rows])
        has_types = bool(rows) and rows[0][1] is not None
        types = token_lists([row_types for _, row_types in rows]) if has_types else None
        padded = right_pad(ids, np.arange(len(rows)), self.pad_token_id, types)
        return {k: torch.from_numpy(v).to(device) for k, v in padded.items()}
