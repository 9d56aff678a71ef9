"""The CLI is made from the config: every flag's help is its field's description, every flag is in
the README, and one exit-code table serves every command."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from jobs import finetune, rerank
from jobs.cli import COMMANDS, build_parser
from jobs.entry import EXIT_CODES, EXIT_INTERNAL, execute, exit_code_for
from jobs.flags import field_info, help_text
from pipeline.errors import ConfigError, InputContractError, LeaseHeldError, StorageError
from pipeline.finetune.config import FinetuneConfig
from pipeline.rerank.config import JobConfig

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def subparser(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def flags(name: str) -> set[str]:
    return {o for a in subparser(name)._actions for o in a.option_strings if o.startswith("--")} - {"--help"}


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


@pytest.mark.parametrize("command", ["run", "finetune", "status"])
def test_every_flag_is_in_the_readme(command):
    missing = [f for f in sorted(flags(command)) if f not in README]
    assert not missing


def test_every_flag_the_readme_tables_name_exists():
    named = set(re.findall(r"^\| `(--[a-z-]+)", README, re.M))
    named |= {
        f for row in re.findall(r"^\| (`--[^|]+)\|", README, re.M) for f in re.findall(r"--[a-z-]+", row)
    }
    known = set().union(*(flags(c) for c in COMMANDS))
    assert named and not (named - known - {"--storage-"})


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
