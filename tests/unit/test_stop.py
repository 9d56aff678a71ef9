"""Stopping a run early: signals are noticed and raised at a safe point, a lost lease comes first,
the publisher refuses to go on, and the exit codes are 128 + the signal number / 3."""

from __future__ import annotations

import argparse
import os
import signal

import pytest

from jobs.entry import execute, exit_code_for
from pipeline.errors import LeaseLostError, RunInterrupted, RunStopped
from pipeline.io import Storage
from pipeline.rerank.config import InputConfig, RankingConfig
from pipeline.rerank.stages.write import WriteSettings
from pipeline.rerank.stop import counting_shards, handling_signals, raise_if_stopped, stop_reason, stop_when
from pipeline.rerank.stream.publisher import ShardPublisher


def publisher(tmp_path, should_stop) -> ShardPublisher:
    return ShardPublisher(
        settings=WriteSettings(
            Storage(), str(tmp_path), InputConfig(uri=str(tmp_path / "in")), RankingConfig(), "d", ["score"]
        ),
        query_id_hashes={},
        should_stop=should_stop,
        writers=[],  # nothing is submitted: no Ray actors
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
    with pytest.raises(RunInterrupted), counting_shards(total=8, done_before=2):
        stop.published_now = 3
        raise stop
    assert str(stop) == (
        "interrupted by SIGTERM: 5 of 8 shards published (3 by this run), 3 pending; "
        "rerun the same command to resume"
    )


def test_the_publisher_refuses_to_submit_once_the_lease_is_lost(tmp_path):
    lost = LeaseLostError("/out/_rerank/lease.json", "host:1:abc", "stalled")
    p = publisher(tmp_path, lambda: lost)
    with pytest.raises(LeaseLostError):
        p.submit([])  # nothing handed to Ray
    assert not p._inflight and lost.published_now == 0


def test_the_publisher_stops_on_a_signal_after_its_publishes_in_flight(tmp_path):
    reason: list[RunStopped] = []
    p = publisher(tmp_path, lambda: reason[0] if reason else None)
    p.reap()  # no reason yet: nothing happens
    reason.append(RunInterrupted(signal.SIGINT))
    with pytest.raises(RunInterrupted):
        p.reap()


def test_execute_maps_a_stop_to_its_exit_code_and_logs_it(caplog):
    def stopped(_args):
        raise RunInterrupted(signal.SIGTERM)

    assert execute(stopped, argparse.Namespace()) == 143
    assert "interrupted by SIGTERM" in caplog.text and "Traceback" not in caplog.text
