"""Which family a model is: from config.json's architectures, known model names, the tokenizer's
chat tokens, a `reranker.json` sidecar or `--family`; the conflicts with `--kind` and the model;
and, until their scoring lands, the new families refused with the way to score them the old way.
Model directories are built in tmp_path: config.json and tokenizer files, no weights."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from jobs import finetune, rerank
from jobs.cli import build_parser
from jobs.flags import flag_overrides
from pipeline.config import ModelConfig
from pipeline.errors import ConfigError, ModelLoadError
from pipeline.finetune.config import load_finetune_config
from pipeline.io import Storage
from pipeline.models.families.detect import added_tokens, resolve_family
from pipeline.models.families.sidecar import Sidecar, read_sidecar
from pipeline.models.kinds import resolve_model
from pipeline.rerank.config import load_config
from pipeline.rerank.preflight import load_model_locally
from tests.helpers import MODELS

QWEN3_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>")
QWEN2_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def model_dir(
    root: Path,
    name: str,
    architecture: str,
    tokens: tuple[str, ...] = (),
    *,
    in_tokenizer_json: bool = False,
    **config: object,
) -> str:
    """A model directory `root/name`: config.json, and the added `tokens` in tokenizer_config.json
    (or tokenizer.json)."""
    path = root / name
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"architectures": [architecture], **config}))
    if in_tokenizer_json:
        added = [{"id": 100 + i, "content": t, "special": True} for i, t in enumerate(tokens)]
        (path / "tokenizer.json").write_text(json.dumps({"added_tokens": added}))
    elif tokens:
        decoder = {str(100 + i): {"content": t, "special": True} for i, t in enumerate(tokens)}
        (path / "tokenizer_config.json").write_text(json.dumps({"added_tokens_decoder": decoder}))
    return str(path)


def family(path: str, kind: str = "auto", forced: str = "auto", given_name: str | None = None) -> str:
    return resolve_family(path, kind, forced, given_name).name  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("model", "kind", "name"),
    [
        ("tiny-bert", "encoder", "cross-encoder"),
        ("tiny-xlmr", "encoder", "cross-encoder"),
        ("tiny-gemma", "llm", "flag-llm"),
        ("tiny-minicpm-layerwise", "layerwise", "flag-layerwise"),
    ],
)
def test_the_committed_models_resolve_to_their_legacy_families(model, kind, name):
    path = str(MODELS / model)
    assert family(path) == family(path, kind=kind) == name
    resolved = resolve_model(path, ModelConfig(name_or_path=path))
    assert (resolved.kind, resolved.family) == (kind, name)


def test_known_names_with_their_architecture(tmp_path):
    qwen3 = model_dir(tmp_path, "Qwen3-Reranker-0.6B", "Qwen3ForCausalLM", QWEN3_TOKENS)
    assert family(qwen3) == family(qwen3, kind="llm") == "qwen3"
    mxbai = model_dir(tmp_path, "mxbai-rerank-base-v2", "Qwen2ForCausalLM", QWEN2_TOKENS)
    assert family(mxbai) == "mxbai-v2"
    large = model_dir(tmp_path, "MXBAI-RERANK-LARGE-V2", "Qwen2ForCausalLM", QWEN2_TOKENS)
    assert family(large) == "mxbai-v2"  # names match case-insensitively


def test_a_name_counts_only_with_the_family_s_architecture(tmp_path):
    llama = model_dir(tmp_path, "Qwen3-Reranker-0.6B", "LlamaForCausalLM", QWEN3_TOKENS)
    assert family(llama) == "flag-llm"
    plain = model_dir(tmp_path, "my-qwen3", "Qwen3ForCausalLM", QWEN3_TOKENS)
    assert family(plain) == "flag-llm"  # a Qwen3 base model is not a Qwen3-Reranker


def test_the_name_in_config_json_or_as_given_counts_too(tmp_path):
    hub_name = model_dir(
        tmp_path, "checkpoint", "Qwen3ForCausalLM", QWEN3_TOKENS, _name_or_path="Qwen/Qwen3-Reranker-4B"
    )
    assert family(hub_name) == "qwen3"
    cached = model_dir(tmp_path, "3f9a0c1d", "Qwen2ForCausalLM", QWEN2_TOKENS)
    assert family(cached) == "flag-llm"
    assert family(cached, given_name="s3://bucket/models/mxbai-rerank-large-v2/") == "mxbai-v2"


def test_modernbert_by_its_architecture(tmp_path):
    path = model_dir(tmp_path, "gte-reranker-modernbert-base", "ModernBertForSequenceClassification")
    assert family(path) == family(path, kind="encoder") == "modernbert"
    other = model_dir(tmp_path, "any-name", "ModernBertForSequenceClassification")
    assert family(other) == "modernbert"
    assert family(model_dir(tmp_path, "roberta", "RobertaForSequenceClassification")) == "cross-encoder"


def test_the_sidecar_names_the_family(tmp_path):
    path = model_dir(tmp_path, "fine-tuned", "Qwen3ForCausalLM", QWEN3_TOKENS)
    (Path(path) / "reranker.json").write_text(json.dumps({"family": "qwen3", "instruction": "Find it"}))
    assert read_sidecar(path) == Sidecar(family="qwen3", instruction="Find it")
    assert family(path) == "qwen3"
    assert family(path, forced="flag-llm") == "flag-llm"  # --family wins over the file
    named = model_dir(tmp_path, "Qwen3-Reranker-0.6B", "Qwen3ForCausalLM", QWEN3_TOKENS)
    (Path(named) / "reranker.json").write_text(json.dumps({"family": "flag-llm"}))
    assert family(named) == "flag-llm"  # the file wins over the name
    assert read_sidecar(str(MODELS / "tiny-gemma")) is None and read_sidecar("org/name") is None


def test_a_bad_sidecar_is_named(tmp_path):
    path = model_dir(tmp_path, "m", "Qwen3ForCausalLM", QWEN3_TOKENS)
    sidecar = Path(path) / "reranker.json"
    sidecar.write_text(json.dumps({"family": "qwen-3"}))
    with pytest.raises(ModelLoadError, match="no reranker family 'qwen-3'; the families are cross-encoder"):
        family(path)
    sidecar.write_text(json.dumps({"family": "qwen3", "template": "x"}))
    with pytest.raises(ModelLoadError, match=r"reranker.json': unknown key 'template'"):
        family(path)
    sidecar.write_text("{")
    with pytest.raises(ModelLoadError, match="reranker.json.*looks damaged"):
        family(path)
    sidecar.write_text(json.dumps({"family": "qwen3"}))
    with pytest.raises(ModelLoadError, match="names family 'qwen3', an llm family, but --kind encoder"):
        family(path, kind="encoder")


def test_family_forces_the_layout(tmp_path):
    named = model_dir(tmp_path, "Qwen3-Reranker-0.6B", "Qwen3ForCausalLM", QWEN3_TOKENS)
    assert family(named, forced="flag-llm") == family(named, kind="llm", forced="flag-llm") == "flag-llm"
    plain = model_dir(tmp_path, "my-model", "Qwen3ForCausalLM", QWEN3_TOKENS)
    assert family(plain, forced="qwen3") == "qwen3"
    bert = str(MODELS / "tiny-bert")
    assert family(bert, forced="modernbert") == "modernbert"


def test_a_forced_family_on_another_architecture_is_a_warning(tmp_path, caplog):
    qwen2 = model_dir(tmp_path, "tuned", "Qwen2ForCausalLM", QWEN3_TOKENS)
    with caplog.at_level(logging.WARNING):
        assert family(qwen2, forced="qwen3") == "qwen3"
    assert "--family qwen3: --model" in caplog.text and "Qwen2ForCausalLM, not an architecture" in caplog.text


@pytest.mark.parametrize(
    ("forced", "kind", "message"),
    [
        ("qwen3", "encoder", "--family qwen3 is an llm family; drop --kind encoder"),
        ("cross-encoder", "llm", "--family cross-encoder is an encoder family; drop --kind llm"),
        ("flag-llm", "layerwise", "--family flag-llm is an llm family; drop --kind layerwise"),
    ],
)
def test_family_and_kind_that_contradict_each_other(forced, kind, message):
    with pytest.raises(ConfigError, match=message):
        family(str(MODELS / "tiny-gemma"), kind=kind, forced=forced)


@pytest.mark.parametrize(
    ("model", "forced", "message"),
    [
        (
            "tiny-bert",
            "qwen3",
            "--family qwen3 is an llm family; --model .* is BertForSequenceClassification "
            r"\(kind encoder\); pass --family auto or one of that kind: cross-encoder, modernbert",
        ),
        ("tiny-gemma", "cross-encoder", "--family cross-encoder is an encoder family; .* GemmaForCausalLM"),
        ("tiny-gemma", "flag-layerwise", "--family flag-layerwise is a layerwise family"),
        ("tiny-minicpm-layerwise", "modernbert", "one of that kind: flag-layerwise"),
    ],
)
def test_a_family_the_model_does_not_fit(model, forced, message):
    with pytest.raises(ModelLoadError, match=message):
        family(str(MODELS / model), forced=forced)


def test_a_family_s_chat_tokens_are_required(tmp_path):
    qwen2_tokens = model_dir(tmp_path, "Qwen3-Reranker-0.6B", "Qwen3ForCausalLM", QWEN2_TOKENS)
    with pytest.raises(
        ModelLoadError, match=r"no added token '<think>', '</think>', which the qwen3 template"
    ):
        family(qwen2_tokens, forced="qwen3")
    with pytest.raises(ModelLoadError, match="by its name.*no added token '<think>'"):
        family(qwen2_tokens)
    with pytest.raises(ModelLoadError, match=r"no added token '<\|im_start\|>', '<\|im_end\|>'"):
        family(str(MODELS / "tiny-gemma"), forced="mxbai-v2")


def test_a_kind_filters_the_detection(tmp_path):
    named = model_dir(tmp_path, "Qwen3-Reranker-0.6B", "Qwen3ForCausalLM", QWEN3_TOKENS)
    with pytest.raises(ModelLoadError, match="--kind encoder needs a sequence classifier.*use --kind llm"):
        family(named, kind="encoder")
    with pytest.raises(ModelLoadError, match="pass --kind encoder, llm or layerwise"):
        family(model_dir(tmp_path, "t5", "T5Model"))


def test_a_chat_tokenizer_falling_back_to_flag_llm_is_a_warning(tmp_path, caplog):
    chat = model_dir(tmp_path, "some-chat-model", "Qwen2ForCausalLM", QWEN2_TOKENS, in_tokenizer_json=True)
    assert added_tokens(chat) == set(QWEN2_TOKENS)
    with caplog.at_level(logging.WARNING):
        assert family(chat) == "flag-llm"
    assert "has a chat tokenizer (<|im_start|>)" in caplog.text
    assert "pass --family qwen3 or --family mxbai-v2" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert family(str(MODELS / "tiny-gemma")) == "flag-llm"
        assert family(chat, forced="flag-llm") == "flag-llm"  # asked for: no warning
    assert not caplog.text


@pytest.mark.parametrize(
    ("name", "architecture", "tokens", "family"),
    [
        ("Qwen3-Reranker-0.6B", "Qwen3ForCausalLM", QWEN3_TOKENS, "qwen3"),
        ("mxbai-rerank-base-v2", "Qwen2ForCausalLM", QWEN2_TOKENS, "mxbai-v2"),
        ("gte-reranker-modernbert-base", "ModernBertForSequenceClassification", (), "modernbert"),
    ],
)
def test_the_new_families_resolve_with_their_instruction(tmp_path, name, architecture, tokens, family):
    path = model_dir(tmp_path, name, architecture, tokens)
    resolved = resolve_model(path, ModelConfig(name_or_path=path))
    assert resolved.family == family and resolved.kind == ("encoder" if family == "modernbert" else "llm")
    if family == "modernbert":  # a family without an instruction refuses one
        with pytest.raises(ModelLoadError, match="which takes none: drop it"):
            resolve_model(path, ModelConfig(name_or_path=path, instruction="Find answers."))
        return
    given = resolve_model(path, ModelConfig(name_or_path=path, prompt="Find answers."))
    assert given.given_instruction == "Find answers."
    (tmp_path / name / "reranker.json").write_text('{"instruction": "From the file."}')
    assert resolve_model(path, ModelConfig(name_or_path=path)).instruction == "From the file."
    assert resolve_model(path, ModelConfig(name_or_path=path, instruction="Flag.")).instruction == "Flag."


def test_the_run_resolves_them_before_any_shard_work(tiny_qwen3_reranker):
    path = tiny_qwen3_reranker
    places = {"input": {"uri": "in"}, "output": {"uri": "out"}}
    cfg = load_config(None, {**places, "model": {"name_or_path": path}})
    resolved, kind = load_model_locally(cfg, Storage())
    assert (resolved.model.family, kind) == ("qwen3", "llm")
    with pytest.raises(ConfigError, match="older spelling of model.instruction"):
        load_config(None, {**places, "model": {"name_or_path": path, "instruction": "a", "prompt": "b"}})


def test_family_is_a_flag_of_run_and_finetune():
    parser = build_parser()
    args = parser.parse_args(["run", "in", "out", "--model", "m", "--family", "qwen3"])
    assert rerank.overrides_from_args(args)["model"]["family"] == "qwen3"
    assert load_config(None, rerank.overrides_from_args(args)).model.family == "qwen3"
    args = parser.parse_args(["finetune", "t.jsonl", "out", "--model", "m", "--family", "flag-llm"])
    overrides = flag_overrides(vars(args), {**finetune.POSITIONALS, **finetune.FLAG_FIELDS})
    assert load_finetune_config(None, overrides).model.family == "flag-llm"
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "in", "out", "--model", "m", "--family", "qwen"])
    with pytest.raises(
        ConfigError, match="model.family=flag-layerwise: fine-tuning supports encoder and llm"
    ):
        load_finetune_config(None, {**overrides, "model": {"name_or_path": "m", "family": "flag-layerwise"}})


def test_modernbert_hard_position_limit_and_no_packed_path_refused_before_any_shard_work(tiny_modernbert):
    places = {"input": {"uri": "in"}, "output": {"uri": "out"}}
    cfg = load_config(None, {**places, "model": {"name_or_path": tiny_modernbert, "max_length": 8192}})
    assert load_model_locally(cfg, Storage())[0].model.family == "modernbert"
    too_long = load_config(None, {**places, "model": {"name_or_path": tiny_modernbert, "max_length": 8193}})
    with pytest.raises(ModelLoadError, match="--max-length 8193 exceeds .* 8192 tokens"):
        load_model_locally(too_long, Storage())
    packed = load_config(
        None, {**places, "model": {"name_or_path": tiny_modernbert, "attention": "unpadded"}}
    )
    with pytest.raises(ModelLoadError, match="--attention unpadded does not support the modernbert family"):
        load_model_locally(packed, Storage())
