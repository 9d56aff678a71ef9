"""What the console shows: our lines at INFO (DEBUG with --verbose), the libraries' errors only
(everything with --verbose), the worker processes' runtime_env, and the run's progress: a live bar
on a terminal, a line at most every N seconds in a log. No Ray."""

from __future__ import annotations

import io
import json
import logging

import numpy as np
import pyarrow as pa
import pytest

from jobs.entry import configure_logging
from pipeline import cluster, logs
from pipeline.rerank.report.collector import RunCollector
from pipeline.rerank.report.console import IntervalLog, LiveBar, Snapshot, open_console, progress_line
from pipeline.rerank.stages.score import scored_schema


@pytest.fixture
def console(monkeypatch):
    """configure_logging(verbose) with the process's logging and environment restored afterwards."""
    for name in (logs.VERBOSE_ENV, *logs.QUIET_ENV):
        monkeypatch.delenv(name, raising=False)
    root = logging.getLogger()
    names = ["", *logs.OUR_LOGGERS, *logs.LIBRARY_LOGGERS]
    levels = {name: logging.getLogger(name).level for name in names}
    yield configure_logging
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    assert root is logging.getLogger()


def test_by_default_ours_show_from_info_and_the_libraries_only_errors(console):
    console(verbose=False)
    ours, library = logging.getLogger("pipeline.rerank.runner"), logging.getLogger("botocore.hooks")
    assert ours.isEnabledFor(logging.INFO) and not ours.isEnabledFor(logging.DEBUG)
    assert not library.isEnabledFor(logging.WARNING) and library.isEnabledFor(logging.ERROR)
    for name in ("ray", "transformers", "py.warnings", "some.other.library"):
        assert not logging.getLogger(name).isEnabledFor(logging.WARNING), name
        assert logging.getLogger(name).isEnabledFor(logging.ERROR), name
    assert logs.is_verbose() is False


def test_verbose_shows_our_debug_lines_and_the_libraries_info(console, caplog):
    console(verbose=True)
    assert logs.is_verbose()
    with caplog.at_level(logging.DEBUG, logger="pipeline"):
        logging.getLogger("pipeline.rerank.report.collector").debug("shard a.parquet (3 rows) published")
    assert "shard a.parquet (3 rows) published" in caplog.text
    assert logging.getLogger("ray").isEnabledFor(logging.INFO)
    assert logging.getLogger("botocore").isEnabledFor(logging.INFO)
    assert not logging.getLogger("botocore").isEnabledFor(logging.DEBUG)  # the libraries' debug: never


def test_ray_data_keeps_its_log_file_and_quiets_its_console(console):
    console_handler, file_handler = logging.StreamHandler(io.StringIO()), logging.NullHandler()
    console_handler.name, file_handler.name = "console", "file"
    ray_data = logging.getLogger("ray.data")
    ray_data.addHandler(console_handler)
    ray_data.addHandler(file_handler)
    try:
        console(verbose=False)
        assert console_handler.level == logging.ERROR and file_handler.level == logging.NOTSET
    finally:
        ray_data.removeHandler(console_handler)
        ray_data.removeHandler(file_handler)


def test_workers_get_the_quiet_environment_and_the_setup_hook(monkeypatch):
    monkeypatch.setenv(logs.VERBOSE_ENV, "0")
    monkeypatch.setenv("TRANSFORMERS_VERBOSITY", "info")  # the user's own setting wins
    monkeypatch.delenv(logs.SUBMITTED_JOB_ENV, raising=False)
    env = logs.quiet_environment()
    assert env["TRANSFORMERS_VERBOSITY"] == "info" and env["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
    runtime_env = logs.worker_runtime_env(env)
    assert runtime_env["worker_process_setup_hook"] == "pipeline.logs.quiet_worker"
    assert runtime_env["env_vars"] == env

    monkeypatch.setenv(logs.VERBOSE_ENV, "1")
    assert logs.quiet_environment() == {logs.VERBOSE_ENV: "1"}


def test_a_submitted_jobs_own_runtime_env_is_left_to_it(monkeypatch):
    """`ray job submit` hands its driver the job's runtime_env; Ray refuses to merge overlaps."""
    submitted = {
        "runtime_env": {"env_vars": {"HF_HUB_DISABLE_PROGRESS_BARS": "0"}, "worker_process_setup_hook": "x.y"}
    }
    monkeypatch.setenv(logs.SUBMITTED_JOB_ENV, json.dumps(submitted))
    runtime_env = logs.worker_runtime_env({"HF_HUB_DISABLE_PROGRESS_BARS": "1", logs.VERBOSE_ENV: "0"})
    assert runtime_env == {"env_vars": {logs.VERBOSE_ENV: "0"}}


def test_the_dashboard_url_is_a_link():
    class Context:
        dashboard_url = "127.0.0.1:8265"

    assert cluster.dashboard_url(Context()) == "http://127.0.0.1:8265"
    assert cluster.dashboard_url(object()) is None


def test_a_progress_line_has_shards_pairs_rate_and_eta():
    s = Snapshot(shards_done=3, shards_total=8, pairs_done=1200, pairs_total=3000, elapsed_s=20.0)
    assert progress_line(s) == "shards 3/8 | 1,200/3,000 pairs | 60.0 pairs/s | ETA 30s"
    assert "ETA ?" in progress_line(Snapshot(0, 8, 0, 3000, 0.0))


def test_in_a_log_a_progress_line_comes_at_most_every_interval(caplog):
    now = [100.0]
    log = IntervalLog(30.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="pipeline"):
        for t, pairs in [(105, 100), (129, 200), (131, 300), (140, 400), (161, 500), (162, 600)]:
            now[0] = t
            log.update(Snapshot(0, 2, pairs, 1000, t - 100.0))
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split(" | ")[1] for line in lines] == ["300/1,000 pairs", "500/1,000 pairs"]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_one_live_bar_follows_the_run():
    stream = Terminal()
    bar = open_console(30.0, shards_total=2, pairs_total=100, stream=stream)
    assert isinstance(bar, LiveBar)
    progress = RunCollector(started_at=0.0, max_length=64, score_columns=["score"])
    progress.show_progress(bar, shards_total=2, pairs_total=100)
    scored(progress, 60)
    progress.published({"shard": "a.parquet", "rows_out": 60})
    scored(progress, 40)
    progress.published({"shard": "b.parquet", "rows_out": 40})
    progress.close()
    shown = stream.getvalue()
    assert "shards 2/2" in shown and "100/100" in shown and "\r" in shown  # redrawn in place
    assert progress.console is None
    assert isinstance(open_console(30.0, 2, 100, stream=io.StringIO()), IntervalLog)  # not a terminal


def test_each_published_shard_is_a_debug_line(caplog):
    progress = RunCollector(started_at=0.0, max_length=64, score_columns=["score"])
    progress.show_progress(None, shards_total=1, pairs_total=5)
    with caplog.at_level(logging.DEBUG, logger="pipeline"):
        progress.published({"shard": "a.parquet", "rows_out": 5})
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]
    assert "a.parquet (5 rows) published: 1/1 shards" in caplog.text


def scored(collector: RunCollector, pairs: int) -> None:
    """One scoring call's block of `pairs` rows, each a pair scored for the first time."""
    block = pa.Table.from_pydict(
        {
            "shard": np.zeros(pairs, np.int32),
            "row": np.arange(pairs),
            "score": np.zeros(pairs, np.float32),
            "tokens": np.full(pairs, 10, np.int32),
            "padded_tokens": np.full(pairs, 11, np.int32),
            "error": [None] * pairs,
            "reject": [None] * pairs,
            "node": ["n"] * pairs,
            "actor": np.ones(pairs, np.int32),
            "call_start": np.full(pairs, 1.0),
            "call_end": np.full(pairs, 2.0),
        },
        schema=scored_schema(["score"]),
    )
    collector.add(block, scored=np.ones(pairs, bool), fresh=np.ones(pairs, bool))
