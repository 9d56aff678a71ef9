"""The fine-tuning config: defaults, every problem at once, the CLI flags that map onto it."""

from __future__ import annotations

import pytest

from jobs.cli import build_parser, main
from jobs.finetune import FLAG_FIELDS, POSITIONALS
from jobs.flags import flag_overrides
from pipeline.errors import ConfigError
from pipeline.finetune.config import load_finetune_config

BASE = {"data": {"train_uri": "t.jsonl"}, "model": {"name_or_path": "m"}, "output": {"uri": "out"}}


def test_defaults_and_checkpoint_location():
    cfg = load_finetune_config(None, BASE)
    assert cfg.train.loss == "ce" and cfg.train.train_group_size == 8
    assert cfg.output.resolved_checkpoint_uri == "out.checkpoints"


def test_every_problem_is_reported_at_once():
    bad = {
        "data": {"train_uri": "t.jsonl", "format": "csv"},
        "model": {
            "name_or_path": "m",
            "kind": "encoder",
            "prompt": "P",
            "max_length": 64,
            "query_max_length": 63,
        },
        "train": {"train_group_size": 1, "distill_weight": 0.2, "bogus": 1},
        "output": {"uri": "out", "checkpoint_uri": "out"},
    }
    with pytest.raises(ConfigError) as err:
        load_finetune_config(None, bad)
    text = str(err.value)
    for what in ["data.format", "train.train_group_size", "train.bogus"]:
        assert what in text
    cross = {
        **BASE,
        "model": {"name_or_path": "m", "kind": "encoder", "prompt": "P", "device": "cpu"},
        "train": {"precision": "float16"},
    }
    cross["output"] = {"uri": "out", "checkpoint_uri": "out/"}
    with pytest.raises(ConfigError) as err:
        load_finetune_config(None, cross)
    assert len(err.value.problems) == 3, err.value.problems


def test_rerank_finetune_subcommand_parses_flags():
    args = build_parser().parse_args(
        [
            "finetune",
            "--train",
            "t.jsonl",
            "--model",
            "m",
            "--output",
            "o",
            "--loss",
            "mixed",
            "--workers",
            "2",
        ]
    )
    assert args.command == "finetune" and args.loss == "mixed" and args.workers == 2


def test_bad_config_exits_2(tmp_path):
    assert main(["finetune", "t.jsonl", "o", "--model", "m", "--learning-rate", "-1"]) == 2


def test_malformed_data_exits_2_naming_the_line(tmp_path, tiny_bert, caplog):
    data = tmp_path / "t.jsonl"
    data.write_text('{"query": "q", "pos": ["p"], "neg": ["n"]}\n{"query": "q", "pos": "p", "neg": ["n"]}\n')
    assert main(["finetune", str(data), str(tmp_path / "o"), "--model", tiny_bert]) == 2
    assert f"{data} line 2: 'pos' must be a non-empty list" in caplog.text
    assert not (tmp_path / "o").exists()


def test_a_missing_data_file_exits_2_saying_it_does_not_exist(tmp_path, tiny_bert, caplog):
    data = tmp_path / "t.jsonl"
    data.write_text('{"query": "q", "pos": ["p"], "neg": ["n"]}\n')
    missing = tmp_path / "missing.jsonl"
    args = ["finetune", str(data), str(tmp_path / "o"), "--model", tiny_bert]
    assert main([*args, "--eval", str(missing)]) == 2
    assert f"--eval {str(missing)!r} does not exist" in caplog.text
    assert "no training queries" not in caplog.text and not (tmp_path / "o").exists()
    assert main(["finetune", str(missing), str(tmp_path / "o"), "--model", tiny_bert]) == 2
    assert f"TRAIN {str(missing)!r} does not exist" in caplog.text


def test_finetune_takes_storage_options_like_rerank_run():
    argv = ["finetune", "--train", "t.jsonl", "--model", "m", "--output", "o"]
    argv += ["--storage-option", "client_kwargs.verify=false", "--storage-region", "eu-west-1"]
    overrides = flag_overrides(vars(build_parser().parse_args(argv)), FLAG_FIELDS)
    assert overrides["storage"] == {"options": {"client_kwargs": {"verify": False}}, "region": "eu-west-1"}
    cfg = load_finetune_config(None, overrides)
    assert cfg.storage.options == {"client_kwargs": {"verify": False}}


def overrides(argv: list[str]) -> dict:
    return flag_overrides(
        vars(build_parser().parse_args(["finetune", *argv])), {**POSITIONALS, **FLAG_FIELDS}
    )


def test_train_and_output_are_positionals_as_input_and_output_of_rerank_run(caplog):
    cfg = load_finetune_config(
        None, overrides(["t.jsonl", "o", "--model", "m", "--device", "cpu", "--fresh"])
    )
    assert (cfg.data.train_uri, cfg.output.uri, cfg.model.name_or_path) == ("t.jsonl", "o", "m")
    assert cfg.model.device == "cpu" and cfg.output.fresh is True
    assert "deprecated" not in caplog.text
    split = ["finetune", "t.jsonl", "--model", "m", "o"]  # a flag between them: still both positionals
    assert main([*split, "--learning-rate", "-1"]) == 2 and "train.learning_rate" in caplog.text


def test_deprecated_train_and_output_flags_still_work_with_a_warning(caplog):
    cfg = load_finetune_config(None, overrides(["--train", "t.jsonl", "--model", "m", "--output", "o"]))
    assert (cfg.data.train_uri, cfg.output.uri) == ("t.jsonl", "o")
    assert "--train is deprecated; use the positional TRAIN" in caplog.text
    assert "--output is deprecated; use the positional OUTPUT" in caplog.text
    with pytest.raises(ConfigError, match="--output and the positional OUTPUT are both given"):
        overrides(["t.jsonl", "o", "--model", "m", "--output", "o2"])


def test_deprecated_config_keys_still_work_with_a_warning(tmp_path, caplog):
    path = tmp_path / "finetune.yaml"
    path.write_text(
        "data: {train_uri: t.jsonl}\nmodel: {base: m}\n"
        "run: {output_uri: out, fresh: true, device: cpu, ray_address: 'ray://h:10001', dashboard: true}\n"
    )
    cfg = load_finetune_config(path, {})
    assert (cfg.model.name_or_path, cfg.output.uri, cfg.output.fresh) == ("m", "out", True)
    assert (cfg.model.device, cfg.ray.address, cfg.ray.dashboard) == ("cpu", "ray://h:10001", True)
    assert "config key model.base is deprecated; use model.name_or_path" in caplog.text
    assert "config key run.output_uri is deprecated; use output.uri" in caplog.text
    # a flag overrides the file's old key as it does the new one
    assert load_finetune_config(path, {"output": {"uri": "flag"}}).output.uri == "flag"
    with pytest.raises(ConfigError, match="run.fresh and output.fresh are both given"):
        load_finetune_config(None, {**BASE, "run": {"fresh": True}, "output": {"uri": "o", "fresh": False}})


def test_the_checkpoints_fingerprint_keeps_its_recorded_shape():
    cfg = load_finetune_config(None, {**BASE, "model": {"name_or_path": "m", "device": "cpu"}})
    model = cfg.fingerprint()["model"]
    assert model["base"] == "m" and "name_or_path" not in model and "device" not in model


@pytest.mark.parametrize("loss", ["ce", "distill"])
def test_distill_weight_given_without_mixed_loss_is_a_problem_even_at_its_default_value(loss):
    with pytest.raises(ConfigError, match="train.distill_weight=0.5 applies to --loss mixed"):
        load_finetune_config(None, {**BASE, "train": {"loss": loss, "distill_weight": 0.5}})
    assert load_finetune_config(None, {**BASE, "train": {"loss": "mixed", "distill_weight": 0.5}})
    assert load_finetune_config(None, {**BASE, "train": {"loss": loss}}).train.distill_weight == 0.5


def test_layerwise_kind_is_refused_by_the_config():
    with pytest.raises(ConfigError, match="fine-tuning supports encoder and llm"):
        load_finetune_config(None, {**BASE, "model": {"name_or_path": "m", "kind": "layerwise"}})
