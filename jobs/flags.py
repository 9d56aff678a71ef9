"""Command-line flags made from the config's pydantic fields: the field's type gives the argparse
type or choices, its description (and default) the help text, so `--help`, the config file and
the README say the same thing. The one way every command declares its flags: a table of flag dest
-> config field, the shared sections' rows (`MODEL_FLAGS`, `RAY_FLAGS`, `STORAGE_FLAGS`,
`FRESH_FLAG`) the same in every command; positionals the same way; old spellings as `OldFlag`s."""

from __future__ import annotations

import argparse
import logging
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from pipeline.errors import ConfigError

log = logging.getLogger("rerank")

# flag dest -> (config section, field in it)
FlagTable = dict[str, tuple[str, str]]

# The sections both jobs share (pipeline/config.py): one flag, one YAML key, in every command.
MODEL_FLAGS: FlagTable = {
    "model": ("model", "name_or_path"),
    "kind": ("model", "kind"),
    "family": ("model", "family"),
    "instruction": ("model", "instruction"),
    "prompt": ("model", "prompt"),
    "max_length": ("model", "max_length"),
    "query_max_length": ("model", "query_max_length"),
    "device": ("model", "device"),
    "trust_remote_code": ("model", "trust_remote_code"),
}
RAY_FLAGS: FlagTable = {"ray_address": ("ray", "address"), "dashboard": ("ray", "dashboard")}
STORAGE_FLAGS: FlagTable = {
    "storage_endpoint_url": ("storage", "endpoint_url"),
    "storage_region": ("storage", "region"),
    "storage_profile": ("storage", "profile"),
    "storage_anonymous": ("storage", "anonymous"),
}
FRESH_FLAG: FlagTable = {"fresh": ("output", "fresh")}


@dataclass(frozen=True)
class OldFlag:
    """A flag's deprecated spelling, still accepted: it sets the same config field as `instead`,
    with a warning."""

    flag: str  # e.g. --train
    instead: str  # what replaces it, e.g. "the positional TRAIN"
    section: str
    field: str

    @property
    def dest(self) -> str:
        return "old_" + self.flag.lstrip("-").replace("-", "_")


OLD_FLAGS_GIVEN = "old_flags_given"  # namespace attribute: [(OldFlag, value), ...] in command-line order


class _OldFlagAction(argparse.Action):
    def __init__(self, option_strings: list[str], dest: str, old: OldFlag, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.old = old

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: str | None = None) -> None:
        setattr(namespace, OLD_FLAGS_GIVEN, [*getattr(namespace, OLD_FLAGS_GIVEN, []), (self.old, values)])


def parse_layers(value: str) -> list[int]:
    """`28` or `28,40` (the flag may also be repeated)."""
    try:
        return [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes layer numbers, e.g. 28 or 28,40; got {value!r}") from None


def int_or_auto(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes a number or auto, got {value!r}") from None


def field_info(root: type[BaseModel], section: str, name: str) -> FieldInfo:
    annotation = root.model_fields[section].annotation
    assert isinstance(annotation, type) and issubclass(annotation, BaseModel), section
    return annotation.model_fields[name]


def _members(annotation: Any) -> list[Any]:
    """The members of a union (`X | None`), or the annotation itself."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(annotation) if a is not type(None)]
    return [annotation]


def help_text(info: FieldInfo) -> str:
    text = info.description or ""
    default = info.default
    if default is not PydanticUndefined and default is not None and default is not False:
        text += f" (default {default})"
    return text


def argument_options(info: FieldInfo) -> dict[str, Any]:
    """add_argument keywords for a field: store_true, choices, a type, or a list parser."""
    members = _members(info.annotation)
    if members == [bool]:
        return {"action": "store_true"}
    literals = [a for a in members if typing.get_origin(a) is Literal]
    if len(members) == 1 and literals:
        return {"choices": list(typing.get_args(literals[0]))}
    if int in members and literals:
        return {"type": int_or_auto, "metavar": "N|auto"}
    lists = [typing.get_args(a) for a in members if typing.get_origin(a) is list]
    if lists and lists[0] == (str,):  # a repeatable flag, e.g. --reuse URI --reuse URI
        return {"action": "append", "metavar": "URI"}
    if lists:
        return {"type": parse_layers, "action": "extend", "metavar": "K[,K...]"}
    for kind in (int, float, str):
        if kind in members:
            return {"type": kind}
    raise TypeError(f"no flag type for {info.annotation!r}")


def add_field_flags(parser: argparse.ArgumentParser, root: type[BaseModel], table: FlagTable) -> None:
    """One optional flag per table entry, typed and described by its config field."""
    for dest, (section, name) in table.items():
        info = field_info(root, section, name)
        flag = "--" + dest.replace("_", "-")
        parser.add_argument(flag, dest=dest, help=help_text(info), **argument_options(info))


def add_positionals(
    parser: argparse.ArgumentParser, root: type[BaseModel], table: FlagTable, is_optional: bool = False
) -> None:
    """One positional per table entry (shown as its dest in capitals), described by its config field;
    `is_optional`: each may be left out (the config file, or an old flag spelling, gives it)."""
    for dest, (section, name) in table.items():
        more: dict[str, Any] = {"nargs": "?"} if is_optional else {}
        info = field_info(root, section, name)
        parser.add_argument(dest, metavar=dest.upper(), help=help_text(info), **more)


def add_old_flags(parser: argparse.ArgumentParser, old_flags: Sequence[OldFlag]) -> None:
    """The deprecated spellings, each shown in --help as such."""
    for old in old_flags:
        parser.add_argument(
            old.flag,
            dest=old.dest,
            action=_OldFlagAction,
            old=old,
            metavar=old.flag.lstrip("-").upper(),
            help=f"deprecated spelling of {old.instead} (still accepted, with a warning)",
        )


def add_storage_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--storage-option",
        action="append",
        metavar="KEY=VALUE",
        help="extra fsspec storage option (repeatable; VALUE parsed as YAML, dotted KEY nests)",
    )


def add_config_file(parser: argparse.ArgumentParser, sections: str, is_required: bool = False) -> None:
    parser.add_argument(
        "--config",
        required=is_required,
        help=f"YAML job config (sections {sections}); flags given override it",
    )


def flag_overrides(given: dict[str, Any], table: FlagTable) -> dict[str, Any]:
    """Config overrides from the flags (and positionals) given, the old spellings given (a warning
    each; ConfigError if the new spelling is given too), and the repeatable `--storage-option KEY=VALUE`."""
    out: dict[str, Any] = {}
    for dest, (section, name) in table.items():
        if dest in given:
            out.setdefault(section, {})[name] = given[dest]
    for old, value in given.get(OLD_FLAGS_GIVEN) or []:
        section_given = out.setdefault(old.section, {})
        if old.field in section_given:
            raise ConfigError(
                [
                    f"{old.flag} and {old.instead} are both given ({value!r}, {section_given[old.field]!r}); "
                    f"{old.flag} is the deprecated spelling: give {old.instead} only"
                ]
            )
        log.warning("%s is deprecated; use %s", old.flag, old.instead)
        section_given[old.field] = value
    for item in given.get("storage_option") or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError([f"--storage-option must be KEY=VALUE, got {item!r}"])
        node = out.setdefault("storage", {}).setdefault("options", {})
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(raw)
    return out
