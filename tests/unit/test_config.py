from pathlib import Path

import pytest
from pydantic import BaseModel

from jobs.cli import build_parser
from jobs.rerank import overrides_from_args
from pipeline.errors import ConfigError
from pipeline.finetune.config import FinetuneConfig
from pipeline.rerank.config import JobConfig, fingerprint, fingerprint_digest, load_config

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


@pytest.mark.parametrize("root", [JobConfig, FinetuneConfig])
def test_every_field_of_every_section_has_a_description(root):
    seen = []

    def walk(model):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
            seen.append(f"{model.__name__}.{name}")
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                walk(ann)

    walk(root)
    sections = {name for name, f in root.model_fields.items() if isinstance(f.annotation, type)}
    assert all(
        any(s.startswith(f"{root.model_fields[n].annotation.__name__}.") for s in seen) for n in sections
    )


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
