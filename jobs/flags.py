"""Command-line flags made from the config's pydantic fields: the field's type gives the argparse
type or choices, its description (and default) the help text, so `--help`, the config file and
the README say the same thing."""

from __future__ import annotations

import argparse
import types
import typing
from typing import Any, Literal

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from pipeline.errors import ConfigError

# flag dest -> (config section, field in it)
FlagTable = dict[str, tuple[str, str]]


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
    if any(typing.get_origin(a) is list for a in members):
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


def add_storage_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--storage-option",
        action="append",
        metavar="KEY=VALUE",
        help="extra fsspec storage option (repeatable; VALUE parsed as YAML, dotted KEY nests)",
    )


def add_config_file(parser: argparse.ArgumentParser, sections: str) -> None:
    parser.add_argument("--config", help=f"YAML job config (sections {sections}); flags given override it")


def flag_overrides(given: dict[str, Any], table: FlagTable) -> dict[str, Any]:
    """Config overrides from the flags given, plus the repeatable `--storage-option KEY=VALUE`."""
    out: dict[str, Any] = {}
    for dest, (section, name) in table.items():
        if dest in given:
            out.setdefault(section, {})[name] = given[dest]
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
