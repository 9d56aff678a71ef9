"""The run's actors against the Ray's nodes (pipeline/rerank/capacity.py): what can never fit is
an error on the Ray the job starts and a warning on a cluster, before any work."""

from __future__ import annotations

import logging

import pytest

from pipeline.errors import ConfigError
from pipeline.rerank import prepare as rerank_prepare
from pipeline.rerank.capacity import run_reservations, shortfalls
from pipeline.rerank.config import JobConfig, ScoringConfig
from pipeline.rerank.settings import resolve_settings

TWO_CPUS = [{"CPU": 2.0, "memory": 1e9}]


def test_the_default_run_fits_two_cpus():
    assert shortfalls(run_reservations(ScoringConfig(), 0), TWO_CPUS) == []


def test_two_scoring_actors_on_two_cpus_never_fit():
    (problem,) = shortfalls(run_reservations(ScoringConfig(min_actors=2, max_actors=2), 0), TWO_CPUS)
    assert "2.75 CPU" in problem and "2 CPU in all" in problem
    assert "2 scoring actor(s) x 1 CPU" in problem and "1 tokenizing actor(s) x 0.5 CPU" in problem


def test_growing_to_max_needs_no_room_at_the_start():
    assert shortfalls(run_reservations(ScoringConfig(min_actors=1, max_actors=8), 0), TWO_CPUS) == []


def test_an_actor_bigger_than_every_node():
    nodes = [{"CPU": 4.0}, {"CPU": 4.0}]
    problems = shortfalls(run_reservations(ScoringConfig(cpus_per_actor=6), 0), nodes)
    assert problems == [
        "each scoring actor reserves 6 CPU (--actors MIN; scoring.cpus_per_actor in --config), "
        "but the largest node has 4"
    ]


def test_gpus_counted_over_the_nodes():
    nodes = [{"CPU": 16.0, "GPU": 1.0}, {"CPU": 16.0, "GPU": 1.0}]
    assert shortfalls(run_reservations(ScoringConfig(min_actors=2, max_actors=4), 1), nodes) == []
    (problem,) = shortfalls(run_reservations(ScoringConfig(min_actors=3, max_actors=4), 1), nodes)
    assert "reserve 3 GPU" in problem and "2 node(s) have 2 GPU in all" in problem


def job(tmp_path, actors: int, address: str | None) -> tuple[JobConfig, object]:
    cfg = JobConfig.model_validate(
        {
            "input": {"uri": str(tmp_path / "in")},
            "output": {"uri": str(tmp_path / "out")},
            "model": {"name_or_path": "m"},
            "scoring": {"min_actors": actors, "max_actors": actors},
            "ray": {"address": address},
        }
    )
    settings = resolve_settings(cfg.scoring, device="cpu", dtype="float32", kind="encoder", cpus_per_node=2)
    return cfg, settings


def test_the_ray_the_job_starts_refuses_what_never_fits(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(rerank_prepare, "node_resources", lambda: TWO_CPUS)
    rerank_prepare.check_capacity(*job(tmp_path, 1, None))
    with pytest.raises(ConfigError) as err:
        rerank_prepare.check_capacity(*job(tmp_path, 2, None))
    text = str(err.value)
    assert "the Ray this job started cannot hold the run's actors" in text
    assert "2.75 CPU" in text and "fix: fewer scoring actors at the start (--actors 1" in text


def test_a_cluster_only_warns(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(rerank_prepare, "node_resources", lambda: TWO_CPUS)
    with caplog.at_level(logging.WARNING):
        rerank_prepare.check_capacity(*job(tmp_path, 2, "10.0.0.1:6379"))
    assert "the run waits until the cluster grows" in caplog.text and "2.75 CPU" in caplog.text
