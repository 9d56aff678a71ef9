"""The docs and the code cannot drift apart: every flag of every `rerank` command is documented in
README.md or docs/, every `--flag` the docs name exists, every file the docs name or link exists,
and docs/architecture.md's module map names every module of the tree."""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

import pytest

from jobs.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
ARCHITECTURE = ROOT / "docs" / "architecture.md"

FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
# Flags of other tools that the docs show in commands, each with the command it belongs to.
OTHER_TOOLS_FLAGS = {
    "--confcutdir": "pytest",
    "--durations": "pytest",
    "--strict-markers": "pytest",
    "--working-dir": "ray job submit",
    "--no-index": "pip install",
    "--no-deps": "pip install / download",
    "--target": "pip install",
    "--only-binary": "pip download",
    "--python-version": "pip download",
    "--implementation": "pip download",
    "--platform": "pip download",
    "--dry-run": "bench/gpu/check.sh (a shell script: no argparse to read)",
}
# A path in backticks that names a file of this repository (not OUTPUT/..., not s3://...).
REPO_PATH = re.compile(r"`((?:pipeline|jobs|bench|tests|deploy|docs)/[\w./*-]*)`")
LINK = re.compile(r"\]\(([^)\s]+)\)")
MODULE_ROOTS = ("pipeline", "jobs", "bench")


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Every command reachable from `parser`, by its full name (`run`, `nightly`, ...), nested
    sub-commands included."""
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[name] = sub
                found |= {f"{name} {inner}": p for inner, p in subparsers(sub).items()}
    return found


COMMANDS = subparsers(build_parser())


def shown_flags(parser: argparse.ArgumentParser) -> set[str]:
    """The long flags `--help` shows (hidden ones, help=SUPPRESS, are not shown)."""
    return {
        option
        for action in parser._actions
        if action.help is not argparse.SUPPRESS
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    }


def every_flag() -> set[str]:
    """Every long flag any command accepts, hidden ones included."""
    return {o for p in COMMANDS.values() for a in p._actions for o in a.option_strings if o.startswith("--")}


def bench_flags() -> set[str]:
    """The flags of the benchmark scripts (`add_argument("--x", ...)`), read from their source."""
    found = set()
    for path in (ROOT / "bench").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
                found |= {
                    a.value
                    for a in node.args
                    if isinstance(a, ast.Constant) and isinstance(a.value, str) and a.value.startswith("--")
                }
    return found


def docs_text() -> str:
    return "\n".join(path.read_text() for path in DOCS)


def mentions(text: str, flag: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text) is not None


def test_the_commands_are_found():
    assert {"run", "nightly", "finetune", "demo", "status"} <= set(COMMANDS)
    assert all(shown_flags(p) for p in COMMANDS.values())


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_flag_of_a_command_is_documented(command):
    text = docs_text()
    missing = sorted(f for f in shown_flags(COMMANDS[command]) if not mentions(text, f))
    assert not missing, f"`rerank {command}` flags in no page of README.md or docs/: {missing}"


def test_every_flag_the_docs_name_exists():
    known = every_flag() | bench_flags() | set(OTHER_TOOLS_FLAGS)
    unknown = {
        f"{path.relative_to(ROOT)}: {flag}"
        for path in DOCS
        for flag in FLAG.findall(path.read_text())
        if flag not in known
    }
    assert not unknown, (
        f"no command has these (renamed? another tool's: OTHER_TOOLS_FLAGS): {sorted(unknown)}"
    )


def test_the_flag_pattern_is_precise():
    assert FLAG.findall("`--top-k 5`, --storage-*, a--b, `| --- |`, x --max-length=8") == [
        "--top-k",
        "--storage-",
        "--max-length",
    ]


def test_every_path_the_docs_name_exists():
    missing = sorted(
        f"{path.relative_to(ROOT)}: {name}"
        for path in DOCS
        for name in REPO_PATH.findall(path.read_text())
        if not list(ROOT.glob(name.rstrip("/")))
    )
    assert not missing


def test_every_relative_link_resolves():
    broken = []
    for path in DOCS:
        for target in LINK.findall(path.read_text()):
            file, _, anchor = target.partition("#")
            if re.match(r"[a-z]+:", file):
                continue  # https:, mailto:
            linked = (path.parent / file).resolve() if file else path
            if not linked.exists():
                broken.append(f"{path.relative_to(ROOT)}: {target}")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked.read_text()):
                broken.append(f"{path.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", markdown, re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def mapped_modules() -> set[str]:
    """The files docs/architecture.md's tables name: a cell's first path gives the folder of the
    bare names after it (`pipeline/demo/corpus.py`, `model.py` -> pipeline/demo/model.py)."""
    named = set()
    for line in ARCHITECTURE.read_text().splitlines():
        if not line.startswith("| `"):
            continue
        folder = ""
        for name in re.findall(r"`([\w./-]+\.(?:py|sh))`", line.split(" | ")[0]):
            if "/" in name:
                folder = name.rsplit("/", 1)[0]
                named.add(name)
            elif folder:
                named.add(f"{folder}/{name}")
    return named


def test_the_module_map_names_every_module_and_only_real_ones():
    tree = {
        str(p.relative_to(ROOT))
        for root in MODULE_ROOTS
        for p in (ROOT / root).rglob("*.py")
        if p.stem not in ("__init__", "__main__")
    }
    named = mapped_modules()
    gone = sorted(name for name in named if not (ROOT / name).exists())
    unmapped = sorted(tree - named)
    assert not gone, f"named in docs/architecture.md, not in the tree: {gone}"
    assert not unmapped, f"in the tree, not in docs/architecture.md's module map: {unmapped}"
