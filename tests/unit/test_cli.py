"""The CLI is made from the config: every flag's help is its field's description, and one
exit-code table serves every command. (That every flag is documented: tests/unit/test_docs.py.)"""

from __future__ import annotations

import argparse

import pytest

from jobs import demo, finetune, rerank, rerank_nightly, status
from jobs.cli import COMMANDS, build_parser, main
from jobs.entry import EXIT_CODES, EXIT_INTERNAL, execute, exit_code_for
from jobs.flags import field_info, help_text
from pipeline.errors import ConfigError, InputContractError, LeaseHeldError, StorageError
from pipeline.finetune.config import FinetuneConfig
from pipeline.rerank.config import JobConfig


def subparser(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def test_the_command_table_has_every_command():
    assert set(COMMANDS) == {"run", "nightly", "finetune", "demo", "status"}


@pytest.mark.parametrize(
    ("command", "root", "table"),
    [("run", JobConfig, rerank.FLAG_FIELDS), ("finetune", FinetuneConfig, finetune.FLAG_FIELDS)],
)
def test_flag_help_is_the_field_description(command, root, table):
    actions = {a.dest: a for a in subparser(command)._actions}
    for dest, (section, name) in table.items():
        assert actions[dest].help == help_text(field_info(root, section, name))
        assert field_info(root, section, name).description in actions[dest].help


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (LeaseHeldError("held"), 3),
        (ConfigError(["bad"]), 2),
        (InputContractError("bad"), 2),
        (StorageError("bad"), 2),
        (RuntimeError("a bug"), EXIT_INTERNAL),
        (KeyError("a bug"), EXIT_INTERNAL),
    ],
)
def test_one_exit_code_table(error, code):
    assert exit_code_for(error) == code


def test_a_subclass_is_listed_before_its_base():
    for i, (kind, _) in enumerate(EXIT_CODES):
        assert not any(issubclass(kind, earlier) for earlier, _ in EXIT_CODES[:i])


def test_an_internal_error_exits_4_with_its_traceback(caplog):
    def broken(_args):
        raise ZeroDivisionError("boom")

    assert execute(broken, argparse.Namespace()) == 4
    assert "internal error" in caplog.text and "ZeroDivisionError: boom" in caplog.text
    assert "Traceback" in caplog.text


TABLES = {
    "run": {**rerank.POSITIONALS, **rerank.FLAG_FIELDS},
    "nightly": rerank_nightly.FLAG_FIELDS,
    "finetune": {**finetune.POSITIONALS, **finetune.FLAG_FIELDS},
    "demo": demo.FLAG_FIELDS,
    "status": status.FLAG_FIELDS,
}
# each job names its own input section: `input` (shards to score), `data` (training data)
OWN_INPUT_COLUMNS = {"query_id_column", "query_column", "passage_column"}


def test_an_option_has_the_same_flag_and_config_key_in_every_command():
    for a, table_a in TABLES.items():
        for b, table_b in TABLES.items():
            for dest in (set(table_a) & set(table_b)) - OWN_INPUT_COLUMNS:
                assert table_a[dest] == table_b[dest], (a, b, dest)
    for dest in ("model", "device", "ray_address", "dashboard", "fresh", "output"):
        assert TABLES["run"][dest] == TABLES["finetune"][dest]


@pytest.mark.parametrize("command", ["nightly", "demo", "status"])
def test_flags_of_run_keep_their_help_in_every_command(command):
    actions = {a.dest: a for a in subparser(command)._actions}
    for dest, (section, name) in TABLES[command].items():
        assert actions[dest].help == help_text(field_info(JobConfig, section, name))


def test_a_scalar_section_in_a_nightly_config_is_a_config_error(tmp_path, caplog):
    path = tmp_path / "nightly.yaml"
    path.write_text('input: "/data/{date}"\noutput: {uri: "/out/{date}"}\nmodel: {name_or_path: m}\n')
    assert main(["nightly", "--date", "2026-11-27", "--config", str(path)]) == 2
    assert "input" in caplog.text and "/data/2026-11-27" in caplog.text
    assert "internal error" not in caplog.text
