"""Reranker kinds: told apart from config.json, checked against the model, validated in the config."""

import json
import shutil

import pytest

from pipeline.config import DEFAULT_PROMPT
from pipeline.errors import ConfigError, ModelLoadError
from pipeline.modeling.minicpm_layerwise import LayerwiseConfig
from pipeline.models.kinds import check_model, detect_kind, read_model_config, resolve_kind
from pipeline.rerank.config import load_config
from pipeline.rerank.output.fingerprint import fingerprint
from tests.conftest import MODELS

BASE = {"input": {"uri": "in"}, "output": {"uri": "out"}, "model": {"name_or_path": "m"}}


@pytest.mark.parametrize(
    "model,kind",
    [
        ("tiny-bert", "encoder"),
        ("tiny-xlmr", "encoder"),
        ("tiny-gemma", "llm"),
        ("tiny-minicpm-layerwise", "layerwise"),
    ],
)
def test_auto_kind_from_config(model, kind):
    assert detect_kind(read_model_config(str(MODELS / model))) == kind
    assert resolve_kind(str(MODELS / model), "auto") == kind


@pytest.mark.parametrize(
    "model,requested,message",
    [
        ("tiny-gemma", "encoder", "use --kind llm"),
        ("tiny-gemma", "layerwise", "needs a minicpm-layerwise checkpoint"),
        ("tiny-bert", "llm", "use --kind encoder"),
        ("tiny-minicpm-layerwise", "encoder", "use --kind layerwise"),
    ],
)
def test_wrong_kind_is_a_clear_error(model, requested, message):
    with pytest.raises(ModelLoadError, match=message):
        resolve_kind(str(MODELS / model), requested)


def test_unknown_architecture_asks_for_kind(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["T5Model"], "model_type": "t5"}))
    with pytest.raises(ModelLoadError, match="pass --kind encoder, llm or layerwise"):
        resolve_kind(str(tmp_path), "auto")


def test_layerwise_with_a_vocabulary_head_is_refused(tmp_path, tiny_layerwise):
    config = read_model_config(tiny_layerwise) | {"head_type": "raw"}
    with pytest.raises(ModelLoadError, match="head_type='raw'"):
        LayerwiseConfig.from_dict(config)


def test_check_model_names_the_valid_cutoff_range(tmp_path, tiny_layerwise):
    target = tmp_path / "m"
    shutil.copytree(tiny_layerwise, target)
    cfg = load_config(None, {**BASE, "model": {"name_or_path": str(target), "kind": "layerwise"}})
    check_model(str(target), cfg.model)
    bad = cfg.model.model_copy(update={"cutoff_layers": [40]})
    with pytest.raises(ModelLoadError, match=r"\[40\] out of range.*2\.\.6"):
        check_model(str(target), bad)


def test_kind_options_are_validated_together():
    bad = {
        **BASE,
        "model": {"name_or_path": "m", "kind": "encoder", "prompt": "p?"},
    }
    with pytest.raises(ConfigError, match=r"model.instruction \(--instruction, --prompt\) is for llm/layer"):
        load_config(None, bad)
    for kind in ("encoder", "llm"):
        with pytest.raises(ConfigError, match="cutoff_layers=.* is for layerwise"):
            load_config(None, {**BASE, "model": {"name_or_path": "m", "kind": kind, "cutoff_layers": [28]}})
    with pytest.raises(ConfigError, match="distinct layers"):
        load_config(None, {**BASE, "model": {"name_or_path": "m", "cutoff_layers": [28, 28]}})


def test_score_columns_per_cutoff_and_reserved_names():
    one = load_config(None, {**BASE, "model": {"name_or_path": "m", "cutoff_layers": [28]}})
    assert one.model.score_columns == ["score"]
    two = load_config(None, {**BASE, "model": {"name_or_path": "m", "cutoff_layers": [28, 40]}})
    assert two.model.score_columns == ["score_l28", "score_l40"]
    clash = {
        **BASE,
        "model": {"name_or_path": "m", "cutoff_layers": [28, 40]},
        "input": {"uri": "in", "query_column": "score_l40"},
    }
    with pytest.raises(ConfigError, match="'score_l40' clashes with an output column"):
        load_config(None, clash)


def test_fingerprint_names_decoder_options_but_keeps_encoder_runs_unchanged():
    encoder = load_config(None, {**BASE, "model": {"name_or_path": "m", "kind": "encoder"}})
    assert "kind" not in fingerprint(encoder, "float32")  # outputs of earlier versions still resume
    llm = load_config(None, {**BASE, "model": {"name_or_path": "m", "kind": "llm"}})
    fp = fingerprint(llm, "float16")
    assert fp["kind"] == "llm" and fp["prompt"] == DEFAULT_PROMPT
    other = llm.model_copy(update={"model": llm.model.model_copy(update={"prompt": "Relevant?"})})
    assert fingerprint(other, "float16") != fp
