"""The minicpm-layerwise checkpoint's config.json fields, checked: no torch, so the driver and the
tokenize stage can validate `--cutoff-layers` without loading a model."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from pipeline.errors import ModelLoadError


@dataclass(frozen=True)
class LayerwiseConfig:
    """The fields of the checkpoint's config.json this model reads (defaults: MiniCPM's)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None
    hidden_act: str = "silu"
    attention_bias: bool = False
    scale_emb: float = 1.0
    scale_depth: float = 1.0
    start_layer: int = 8
    head_multi: bool = True
    head_type: str = "simple"
    pad_token_id: int | None = None

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> LayerwiseConfig:
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in config.items() if k in names}
        if values.get("num_key_value_heads") is None:
            values["num_key_value_heads"] = config.get("num_attention_heads")
        try:
            cfg = cls(**values)
        except TypeError as e:
            raise ModelLoadError(f"layerwise reranker config.json is incomplete: {e}") from e
        if cfg.head_type != "simple":
            raise ModelLoadError(
                f"layerwise reranker head_type={cfg.head_type!r} is a language-model head; only "
                "'simple' (one score per layer, as in bge-reranker-v2-minicpm-layerwise) is supported"
            )
        scaling = (cfg.rope_scaling or {}).get("type", (cfg.rope_scaling or {}).get("rope_type"))
        if cfg.rope_scaling is not None and scaling not in ("linear", "dynamic"):
            raise ModelLoadError(f"layerwise reranker rope_scaling={cfg.rope_scaling!r} is not supported")
        return cfg

    def resolve_cutoffs(self, cutoff_layers: list[int] | None) -> list[int]:
        """The requested layers (default: the last), each checked to have a head."""
        layers = cutoff_layers or [self.num_hidden_layers]
        bad = [k for k in layers if not self.start_layer <= k <= self.num_hidden_layers]
        if bad:
            raise ModelLoadError(
                f"--cutoff-layers {bad} out of range: this model has heads for layers "
                f"{self.start_layer}..{self.num_hidden_layers}"
            )
        return list(layers)
