"""The scoring model: a one-logit sequence classifier run over padded token-budget micro-batches."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from pipeline.batching import plan_micro_batches
from pipeline.errors import ModelLoadError

log = logging.getLogger(__name__)

TORCH_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def resolve_dtype(dtype: str, device: str) -> str:
    """`auto` means float16 on CUDA (FlagEmbedding's use_fp16) and float32 on CPU."""
    if dtype != "auto":
        return dtype
    return "float16" if device == "cuda" else "float32"


def check_reranker_config(name_or_path: str, trust_remote_code: bool = False) -> None:
    """Fails fast, before any shard work, if the model is missing or not a one-logit classifier."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except Exception as e:
        raise ModelLoadError(
            f"cannot load --model {name_or_path!r}: {e}; pass a local model directory or a hub id "
            "this machine can reach"
        ) from e
    archs = config.architectures or []
    if archs and not any(a.endswith("ForSequenceClassification") for a in archs):
        raise ModelLoadError(
            f"--model {name_or_path!r} is a {', '.join(archs)}, not a sequence classifier; "
            "offline-rerank scores with cross-encoder rerankers (e.g. BAAI/bge-reranker-v2-m3)"
        )
    if getattr(config, "num_labels", 1) != 1:
        raise ModelLoadError(
            f"--model {name_or_path!r} has {config.num_labels} labels; a reranker has exactly one "
            "logit (the relevance score)"
        )


@dataclass
class ScoredBatch:
    scores: np.ndarray  # float32, one per row, in input order
    padded_lengths: np.ndarray  # int32, the padded length each row was run at


class Reranker:
    """Holds one encoder reranker on one device; scores pre-tokenized pairs."""

    def __init__(self, model: torch.nn.Module, device: str, pad_token_id: int, max_batch_tokens: int) -> None:
        self.model = model
        self.device = torch.device(device)
        self.pad_token_id = pad_token_id
        self.max_batch_tokens = max_batch_tokens
        self.is_cuda = self.device.type == "cuda"

    @classmethod
    def load(
        cls,
        name_or_path: str,
        device: str,
        dtype: str,
        max_batch_tokens: int,
        trust_remote_code: bool = False,
    ) -> Reranker:
        from transformers import AutoModelForSequenceClassification

        try:
            model = AutoModelForSequenceClassification.from_pretrained(
                name_or_path,
                dtype=TORCH_DTYPES[resolve_dtype(dtype, device)],
                trust_remote_code=trust_remote_code,
            )
        except Exception as e:
            raise ModelLoadError(f"cannot load --model {name_or_path!r} for scoring: {e}") from e
        model.eval().to(device)
        pad = model.config.pad_token_id
        return cls(model, device, 0 if pad is None else int(pad), max_batch_tokens)

    def _pad(self, rows: list[np.ndarray], fill: int, dtype: type[np.generic]) -> torch.Tensor:
        width = max(len(r) for r in rows)
        out = np.full((len(rows), width), fill, dtype=dtype)
        for i, r in enumerate(rows):
            out[i, : len(r)] = r
        # Pinning a fresh host buffer per batch costs more than the copy it speeds up; reusable
        # pinned buffers and copy/compute overlap belong with the throughput work.
        return torch.from_numpy(out).to(self.device)

    @torch.inference_mode()
    def forward(
        self, input_ids: pa.ListArray, token_type_ids: pa.ListArray | None, rows: np.ndarray
    ) -> np.ndarray:
        """fp32 logits of the given rows, run as one right-padded batch."""
        offsets = input_ids.offsets.to_numpy()
        flat = input_ids.values.to_numpy()
        seqs = [flat[offsets[i] : offsets[i + 1]] for i in rows]
        kwargs = {
            "input_ids": self._pad(seqs, self.pad_token_id, np.int64),
            "attention_mask": self._pad([np.ones(len(r), np.int64) for r in seqs], 0, np.int64),
        }
        if token_type_ids is not None:
            flat_types = token_type_ids.values.to_numpy()
            kwargs["token_type_ids"] = self._pad(
                [flat_types[offsets[i] : offsets[i + 1]] for i in rows], 0, np.int64
            )
        return self.model(**kwargs).logits.view(-1).float().cpu().numpy()

    def score(self, input_ids: pa.ListArray, token_type_ids: pa.ListArray | None = None) -> ScoredBatch:
        """Scores every row; micro-batches are token-budget, longest first, right-padded."""
        lengths = np.diff(input_ids.offsets.to_numpy())
        out = ScoredBatch(np.empty(len(lengths), dtype=np.float32), np.empty(len(lengths), dtype=np.int32))
        for idx in plan_micro_batches(lengths, self.max_batch_tokens):
            self._score_rows(input_ids, token_type_ids, idx, lengths, out)
        return out

    def _score_rows(
        self,
        input_ids: pa.ListArray,
        token_type_ids: pa.ListArray | None,
        idx: np.ndarray,
        lengths: np.ndarray,
        out: ScoredBatch,
    ) -> None:
        """One micro-batch; on out-of-memory it is split in halves and retried, down to one row."""
        try:
            out.scores[idx] = self.forward(input_ids, token_type_ids, idx)
            out.padded_lengths[idx] = lengths[idx].max()
        except torch.OutOfMemoryError:
            if len(idx) == 1:
                raise
            if self.is_cuda:
                torch.cuda.empty_cache()
            log.warning(
                "out of memory on a batch of %d x %d tokens; splitting it in two and retrying",
                len(idx),
                int(lengths[idx].max()),
            )
            half = len(idx) // 2
            self._score_rows(input_ids, token_type_ids, idx[:half], lengths, out)
            self._score_rows(input_ids, token_type_ids, idx[half:], lengths, out)
