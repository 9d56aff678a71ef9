"""Stopping a run early: signals are noticed and raised at a safe point, a lost lease comes first,
the publisher refuses to go on, and the exit codes are 128 + the signal number / 3."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import types

import numpy as np
import pytest

from jobs.entry import execute, exit_code_for
from pipeline.errors import LeaseLostError, RunInterrupted, RunStopped
from pipeline.io import ShardFile, Storage
from pipeline.rerank.config import InputConfig, RankingConfig
from pipeline.rerank.stages.shard_scores import ShardScores
from pipeline.rerank.stages.write import WriteSettings
from pipeline.rerank.stop import (
    counting_shards,
    handling_signals,
    keeping_signal_handlers,
    raise_if_stopped,
    stop_reason,
    stop_when,
)
from pipeline.rerank.stream import publisher as publisher_module
from pipeline.rerank.stream.publisher import ShardPublisher


def publisher(tmp_path, should_stop, writers: list | None = None) -> ShardPublisher:
    return ShardPublisher(
        settings=WriteSettings(
            Storage(), str(tmp_path), InputConfig(uri=str(tmp_path / "in")), RankingConfig(), "d", ["score"]
        ),
        query_id_hashes={"a.parquet": np.zeros(1, np.uint64)},
        should_stop=should_stop,
        writers=writers or [],  # no Ray actors
    )


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_is_noticed_then_raised_at_the_safe_point(signum, code):
    before = signal.getsignal(signum)  # whatever this process had (Ray installs its own handlers)
    with handling_signals():
        os.kill(os.getpid(), signum)  # noticed only: nothing raised here
        reason = stop_reason()
        assert isinstance(reason, RunInterrupted) and reason.signal_number == signum
        with pytest.raises(RunInterrupted) as err:
            raise_if_stopped()
    assert exit_code_for(err.value) == code
    assert signal.getsignal(signum) is before  # restored
    assert stop_reason() is None


def test_a_second_signal_stops_at_once():
    with handling_signals(), pytest.raises(RunInterrupted, match="twice"):
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)  # raised from the handler itself


def test_a_lost_lease_comes_before_a_signal():
    lost = LeaseLostError("/out/_rerank/lease.json", "host:1:abc", "stalled")
    with handling_signals(), stop_when(lambda: lost):
        os.kill(os.getpid(), signal.SIGINT)
        assert stop_reason() is lost
    assert exit_code_for(lost) == 3


def test_the_stop_message_counts_shards():
    stop = RunInterrupted(signal.SIGTERM)
    with pytest.raises(RunInterrupted), counting_shards(total=8, done_before=2, published_now=lambda: 3):
        raise stop
    assert str(stop) == (
        "interrupted by SIGTERM: 5 of 8 shards published (3 by this run), 3 pending; "
        "rerun the same command to resume"
    )


@pytest.mark.parametrize("how", ["signal twice", "lease lost"])
def test_a_stop_at_once_counts_the_shards_published_before_it(how):
    published = [0]
    lost = LeaseLostError("/out/_rerank/lease.json", "host:1:abc", "stalled")
    with (
        pytest.raises(RunStopped) as err,
        handling_signals(),
        stop_when(lambda: lost if how == "lease lost" and published[0] == 2 else None),
        counting_shards(total=8, done_before=1, published_now=lambda: published[0]),
    ):
        published[0] = 2  # the run's collector was told of two published shards
        if how == "signal twice":
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)  # raised from the handler, wherever the run is
        raise_if_stopped()
    assert "3 of 8 shards published (2 by this run), 5 pending" in str(err.value)


def test_a_library_starting_inside_keeps_the_run_s_sigterm_handler():
    """What `ray.init` does first: sets a SIGTERM handler of its own (`sys.exit(15)`); the
    integration test is tests/integration/test_run_safety.py's SIGTERM while Ray starts."""
    original = signal.signal
    with handling_signals() as watch:
        with keeping_signal_handlers():
            signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))
            signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # other signals: the library's to set
            signal.raise_signal(signal.SIGTERM)  # noticed by the run: no exit
        interrupted = watch.interrupted
        assert isinstance(interrupted, RunInterrupted) and interrupted.signal_number == signal.SIGTERM
        assert signal.getsignal(signal.SIGTERM) == watch._handle
        assert signal.getsignal(signal.SIGUSR1) == signal.SIG_IGN
    assert signal.signal is original
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)


def test_the_publisher_refuses_to_submit_once_the_lease_is_lost(tmp_path):
    lost = LeaseLostError("/out/_rerank/lease.json", "host:1:abc", "stalled")
    p = publisher(tmp_path, lambda: lost)
    with pytest.raises(LeaseLostError):
        p.submit([])  # nothing handed to Ray
    assert not p._inflight


def test_the_publisher_stops_on_a_signal_after_its_publishes_in_flight(tmp_path):
    reason: list[RunStopped] = []
    p = publisher(tmp_path, lambda: reason[0] if reason else None)
    p.reap()  # no reason yet: nothing happens
    reason.append(RunInterrupted(signal.SIGINT))
    with pytest.raises(RunInterrupted):
        p.reap()


def test_a_second_signal_stops_the_wait_for_the_first_one_s_publishes(tmp_path, monkeypatch):
    """`ray.wait` runs signal handlers but drops what they raise: the publisher finds the second
    signal itself, and stops waiting for a publish that does not end (a hung writer)."""
    waits = []

    def wait(refs, **_):  # a publish that never ends, and a second Ctrl-C while it is waited for
        waits.append(len(refs))
        assert len(waits) < 5, "the publisher kept waiting after the second signal"
        with contextlib.suppress(BaseException):  # as Ray does with all but KeyboardInterrupt
            signal.raise_signal(signal.SIGINT)
        return [], list(refs)

    monkeypatch.setattr(publisher_module.ray, "wait", wait)
    hung = types.SimpleNamespace(remote=lambda batch: "ref")
    p = publisher(tmp_path, stop_reason, writers=[types.SimpleNamespace(publish=hung)])
    with handling_signals():
        with pytest.raises(RunInterrupted, match="twice"):
            p.submit([(ShardFile("/in/a.parquet", "a.parquet", 1, "v"), ShardScores.empty(1))])
            signal.raise_signal(signal.SIGINT)  # the first: finish the publishes in flight
            p.reap()
        assert len(waits) == 1  # the wait in which the second signal came, and no other
        # the runner then takes in the batches that did finish; the stop is not raised again
        monkeypatch.setattr(publisher_module.ray, "wait", lambda refs, **_: (list(refs), []))
        monkeypatch.setattr(
            publisher_module.ray, "get", lambda ref: [("a.parquet", {"shard": "a.parquet"}, None)]
        )
        p.collect_finished()
    assert p.markers == [{"shard": "a.parquet"}]


def test_execute_maps_a_stop_to_its_exit_code_and_logs_it(caplog):
    def stopped(_args):
        raise RunInterrupted(signal.SIGTERM)

    assert execute(stopped, argparse.Namespace()) == 143
    assert "interrupted by SIGTERM" in caplog.text and "Traceback" not in caplog.text
