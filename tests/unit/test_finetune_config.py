"""The fine-tuning config: defaults, every problem at once, the CLI flags that map onto it."""

from __future__ import annotations

import pytest

from jobs.cli import build_parser
from jobs.finetune import FLAG_FIELDS, main
from jobs.flags import flag_overrides
from pipeline.errors import ConfigError
from pipeline.finetune.config import load_finetune_config

BASE = {"data": {"train_uri": "t.jsonl"}, "model": {"base": "m"}, "run": {"output_uri": "out"}}


def test_defaults_and_checkpoint_location():
    cfg = load_finetune_config(None, BASE)
    assert cfg.train.loss == "ce" and cfg.train.train_group_size == 8
    assert cfg.run.resolved_checkpoint_uri == "out.checkpoints"


def test_every_problem_is_reported_at_once():
    bad = {
        "data": {"train_uri": "t.jsonl", "format": "csv"},
        "model": {"base": "m", "kind": "encoder", "prompt": "P", "max_length": 64, "query_max_length": 63},
        "train": {"train_group_size": 1, "distill_weight": 0.2, "bogus": 1},
        "run": {"output_uri": "out", "checkpoint_uri": "out"},
    }
    with pytest.raises(ConfigError) as err:
        load_finetune_config(None, bad)
    text = str(err.value)
    for what in ["data.format", "train.train_group_size", "train.bogus"]:
        assert what in text
    cross = {
        **BASE,
        "model": {"base": "m", "kind": "encoder", "prompt": "P"},
        "train": {"precision": "float16"},
    }
    cross["run"] = {"output_uri": "out", "checkpoint_uri": "out/", "device": "cpu"}
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
    assert main(["--train", "t.jsonl", "--model", "m", "--output", "o", "--learning-rate", "-1"]) == 2


def test_malformed_data_exits_2_naming_the_line(tmp_path, tiny_bert, caplog):
    data = tmp_path / "t.jsonl"
    data.write_text('{"query": "q", "pos": ["p"], "neg": ["n"]}\n{"query": "q", "pos": "p", "neg": ["n"]}\n')
    assert main(["--train", str(data), "--model", tiny_bert, "--output", str(tmp_path / "o")]) == 2
    assert f"{data} line 2: 'pos' must be a non-empty list" in caplog.text
    assert not (tmp_path / "o").exists()


def test_finetune_takes_storage_options_like_rerank_run():
    argv = ["finetune", "--train", "t.jsonl", "--model", "m", "--output", "o"]
    argv += ["--storage-option", "client_kwargs.verify=false", "--storage-region", "eu-west-1"]
    overrides = flag_overrides(vars(build_parser().parse_args(argv)), FLAG_FIELDS)
    assert overrides["storage"] == {"options": {"client_kwargs": {"verify": False}}, "region": "eu-west-1"}
    cfg = load_finetune_config(None, overrides)
    assert cfg.storage.options == {"client_kwargs": {"verify": False}}
