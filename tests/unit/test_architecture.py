"""The layout's rules, checked on the source: no import cycles (function-level imports included),
and the layers depend in one direction: jobs -> pipeline jobs (rerank, finetune) -> shared
(models, storage, config, cluster)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def modules() -> dict[str, Path]:
    found = {}
    for package in ("pipeline", "jobs"):
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            found[name] = path
    return found


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """Our modules that `path` imports anywhere in its body (top level or inside functions)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                out.add(full if full in known else node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return {m for m in out if m in known}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, known) for name, path in known.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt, stack)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (cycle := visit(start, [])):
            return cycle
    return None


def test_find_cycle_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles():
    assert find_cycle(graph()) is None


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [
        ("pipeline", ("jobs",)),
        ("pipeline.models", ("pipeline.rerank", "pipeline.finetune")),
        ("pipeline.rerank", ("pipeline.finetune",)),
        ("pipeline.finetune", ("pipeline.rerank",)),
        ("pipeline.config", ("pipeline.io", "pipeline.rerank", "pipeline.models")),
    ],
)
def test_layers_depend_one_way(layer, forbidden):
    wrong = [
        f"{module} imports {target}"
        for module, targets in graph().items()
        if module == layer or module.startswith(layer + ".")
        for target in targets
        if any(target == f or target.startswith(f + ".") for f in forbidden)
    ]
    assert not wrong


def test_top_level_pipeline_modules_are_the_shared_ones():
    top = sorted(p.stem for p in (ROOT / "pipeline").glob("*.py") if p.stem != "__init__")
    assert top == ["cluster", "config", "errors", "faults", "io", "logs", "model_cache"]


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [
        # the torch-free half of the models: the driver and the tokenize stage import only it
        ("pipeline.models", ("pipeline.modeling",)),
        # the stages run in Ray workers: they know the inputs and the output, not the driver
        (
            "pipeline.rerank.stages",
            ("pipeline.rerank.stream", "pipeline.rerank.report", "pipeline.rerank.runner"),
        ),
        (
            "pipeline.rerank.input",
            ("pipeline.rerank.stages", "pipeline.rerank.stream", "pipeline.rerank.output"),
        ),
        (
            "pipeline.rerank.output",
            (
                "pipeline.rerank.stages",
                "pipeline.rerank.stream",
                "pipeline.rerank.input",
                "pipeline.rerank.compare",
            ),
        ),
        # the score store and the reuse lookup: beside the stages, below the driver
        (
            "pipeline.rerank.reuse",
            (
                "pipeline.rerank.stages",
                "pipeline.rerank.stream",
                "pipeline.rerank.report",
                "pipeline.rerank.runner",
            ),
        ),
        (
            "pipeline.rerank.report",
            ("pipeline.rerank.stages", "pipeline.rerank.stream", "pipeline.rerank.input"),
        ),
        # the comparisons (change feed, drift, quality, gate): run by the write stage and the
        # driver's end of run, below both
        (
            "pipeline.rerank.compare",
            (
                "pipeline.rerank.stages",
                "pipeline.rerank.stream",
                "pipeline.rerank.report",
                "pipeline.rerank.runner",
                "pipeline.rerank.prepare",
            ),
        ),
    ],
)
def test_rerank_roles_depend_one_way(layer, forbidden):
    test_layers_depend_one_way(layer, forbidden)


MAX_MODULES_PER_FOLDER = 12
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60  # from `def` to its last line, docstring included


def test_folders_stay_small():
    crowded = {}
    for folder in [ROOT / "pipeline", *(p for p in (ROOT / "pipeline").rglob("*") if p.is_dir())]:
        count = len([p for p in folder.glob("*.py") if p.name != "__init__.py"])
        if count > MAX_MODULES_PER_FOLDER:
            crowded[str(folder.relative_to(ROOT))] = count
    assert not crowded, f"group these modules by role in sub-packages: {crowded}"


def test_files_and_functions_stay_short():
    long = []
    for package in ("pipeline", "jobs"):
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text()
            name = path.relative_to(ROOT)
            if text.count("\n") > MAX_FILE_LINES:
                long.append(f"{name}: {text.count(chr(10))} lines")
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    lines = (node.end_lineno or node.lineno) - node.lineno + 1
                    if lines > MAX_FUNCTION_LINES:
                        long.append(f"{name}:{node.lineno} {node.name}: {lines} lines")
    assert not long, "split these: " + "; ".join(long)
