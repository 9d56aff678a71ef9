import typing
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from jobs.cli import build_parser, main
from jobs.rerank import overrides_from_args
from pipeline.errors import ConfigError
from pipeline.finetune.config import FinetuneConfig
from pipeline.rerank.config import JobConfig, load_config
from pipeline.rerank.output.fingerprint import fingerprint, fingerprint_digest

BASE = {"input": {"uri": "in"}, "output": {"uri": "out"}, "model": {"name_or_path": "m"}}


def test_defaults_follow_flagembedding():
    cfg = load_config(None, BASE)
    assert cfg.model.max_length == 512
    assert cfg.model.resolved_query_max_length == 384
    assert cfg.ranking.normalize is False


def test_every_problem_reported_at_once():
    bad = {
        **BASE,
        "model": {"name_or_path": "m", "max_length": 2, "dtype": "float8"},
        "scoring": {"min_actors": 0, "bogus": 1},
    }
    with pytest.raises(ConfigError) as err:
        load_config(None, bad)
    text = str(err.value)
    assert len(err.value.problems) == 4
    for expected in ["model.max_length", "model.dtype", "scoring.min_actors", "scoring.bogus", "'float8'"]:
        assert expected in text


def test_cross_field_problems_collected():
    bad = {
        **BASE,
        "model": {"name_or_path": "m", "max_length": 128, "query_max_length": 126},
        "scoring": {"min_actors": 3, "max_actors": 2, "max_batch_tokens": 100},
    }
    with pytest.raises(ConfigError) as err:
        load_config(None, bad)
    assert len(err.value.problems) == 3
    assert "--query-max-length" in str(err.value) and "--actors" in str(err.value)


def test_batch_budget_message_names_the_floor_it_failed():
    short = {**BASE, "model": {"name_or_path": "m", "max_length": 32}, "scoring": {"max_batch_tokens": 40}}
    with pytest.raises(ConfigError) as err:
        load_config(None, short)
    (problem,) = err.value.problems
    assert "below the smallest budget, 64 tokens" in problem and "at least 64" in problem
    assert "max_length" not in problem  # 40 holds a full 32-token pair: that is not what failed
    long = {**BASE, "model": {"name_or_path": "m", "max_length": 128}, "scoring": {"max_batch_tokens": 100}}
    with pytest.raises(ConfigError, match="below model.max_length=128.*at least 128"):
        load_config(None, long)


def test_yaml_then_flags_win(tmp_path: Path):
    path = tmp_path / "job.yaml"
    path.write_text("model:\n  name_or_path: from-yaml\n  max_length: 256\nranking:\n  top_k: 5\n")
    args = build_parser().parse_args(
        ["run", "in", "out", "--model", "from-flag", "--config", str(path), "--actors", "1:3", "--normalize"]
    )
    cfg = load_config(args.config, overrides_from_args(args))
    assert cfg.model.name_or_path == "from-flag"
    assert cfg.model.max_length == 256  # from the file, no flag given
    assert cfg.ranking.top_k == 5 and cfg.ranking.normalize is True
    assert (cfg.scoring.min_actors, cfg.scoring.max_actors) == (1, 3)


def test_missing_and_bad_yaml(tmp_path: Path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.yaml", BASE)
    (tmp_path / "bad.yaml").write_text("- a list\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(tmp_path / "bad.yaml", BASE)


def models_in(annotation: object) -> list[type[BaseModel]]:
    """The config models an annotation holds: itself, or inside `X | None`, `list[X]`, `dict[str, X]`,
    `Annotated[X, ...]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in models_in(arg)]


def undescribed_fields(root: type[BaseModel]) -> tuple[list[str], set[str]]:
    """Walks every field of `root` and of every section nested in it, at any depth: (dotted paths of
    fields without a description, dotted paths of the sections walked)."""
    missing: list[str] = []
    sections: set[str] = set()

    def walk(model: type[BaseModel], path: str) -> None:
        for name, field in model.model_fields.items():
            if not (field.description or "").strip():
                missing.append(f"{path}.{name}")
            for nested in models_in(field.annotation):
                sections.add(f"{path}.{name}")
                walk(nested, f"{path}.{name}")

    walk(root, root.__name__)
    return missing, sections


@pytest.mark.parametrize("root", [JobConfig, FinetuneConfig])
def test_every_field_of_every_section_has_a_description(root):
    missing, sections = undescribed_fields(root)
    assert missing == []
    # every top-level section was walked into, the inherited `storage` one included
    top_level = {name for name, f in root.model_fields.items() if models_in(f.annotation)}
    assert {"storage", "model"} <= top_level
    assert {f"{root.__name__}.{name}" for name in top_level} <= sections


def test_the_description_walk_reaches_sections_nested_in_optional_list_and_dict_fields():
    class Leaf(BaseModel):
        described: int = Field(1, description="yes")
        bare: int = 1

    class Branch(BaseModel):
        maybe: Leaf | None = Field(None, description="optional section")
        many: list[Leaf] = Field(default_factory=list, description="list of sections")
        named: dict[str, Leaf] = Field(default_factory=dict, description="mapping of sections")

    class Root(BaseModel):
        branch: Branch = Field(description="a section")
        blank: str = Field("", description="  ")

    missing, sections = undescribed_fields(Root)
    assert sorted(missing) == [
        "Root.blank",
        "Root.branch.many.bare",
        "Root.branch.maybe.bare",
        "Root.branch.named.bare",
    ]
    assert sections == {"Root.branch", "Root.branch.maybe", "Root.branch.many", "Root.branch.named"}


def test_fingerprint_changes_with_scoring_settings():
    a = load_config(None, BASE)
    b = load_config(None, {**BASE, "model": {"name_or_path": "m", "max_length": 256}})
    assert fingerprint_digest(fingerprint(a, "float32")) != fingerprint_digest(fingerprint(b, "float32"))
    assert fingerprint_digest(fingerprint(a, "float32")) != fingerprint_digest(fingerprint(a, "float16"))
    # pool size does not change results, so it may differ between a run and its resume
    c = load_config(None, {**BASE, "scoring": {"max_actors": 4}})
    assert fingerprint(a, "float32") == fingerprint(c, "float32")


def test_shipped_configs_validate():
    root = Path(__file__).resolve().parents[2]
    files = sorted(root.glob("deploy/**/*.yaml")) + sorted(root.glob("jobs/**/*.yaml"))
    job_files = [f for f in files if "input:" in f.read_text() and "model:" in f.read_text()]
    assert job_files, "deploy/ ships at least one job config"
    for f in job_files:
        load_config(f, {})


@pytest.mark.parametrize(
    ("flags", "missing"),
    [
        (["--max-chunks", "4"], "--long-passages chunk"),
        (["--chunk-overlap", "32"], "--long-passages chunk"),  # the default value, but given
        (["--chunk-aggregate", "mean", "--long-passages", "truncate"], "--long-passages chunk"),
        (["--candidates-column", "cands"], "--layout nested"),
        (["--candidates-column", "candidates", "--layout", "long"], "--layout nested"),
    ],
)
def test_a_mode_option_without_its_mode_exits_2_naming_the_missing_flag(flags, missing, tmp_path, caplog):
    given = flags[0]
    assert main(["run", str(tmp_path / "in"), str(tmp_path / "out"), "--model", "m", *flags]) == 2
    assert not (tmp_path / "out").exists()  # refused while reading the config, before anything
    assert f"{given} needs {missing}" in caplog.text


def test_mode_options_given_in_yaml_count_as_given(tmp_path: Path):
    path = tmp_path / "job.yaml"
    path.write_text("input:\n  max_chunks: 16\n  chunk_aggregate: max\n  candidates_column: candidates\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, BASE)  # each equal to its default: given all the same
    text = "\n".join(err.value.problems)
    assert len(err.value.problems) == 3
    assert "--max-chunks needs --long-passages chunk" in text and "input.max_chunks" in text
    assert "--chunk-aggregate needs --long-passages chunk" in text
    assert "--candidates-column needs --layout nested" in text


def test_mode_options_with_their_mode_or_left_out_are_accepted(tmp_path: Path):
    load_config(None, BASE)  # the defaults of options not given never count
    chunk = {"long_passages": "chunk", "max_chunks": 4, "chunk_overlap": 8, "chunk_aggregate": "mean"}
    assert load_config(None, {**BASE, "input": {"uri": "in", **chunk}}).input.max_chunks == 4
    nested = {"layout": "nested", "candidates_column": "cands"}
    assert load_config(None, {**BASE, "input": {"uri": "in", **nested}}).input.candidates_column == "cands"
