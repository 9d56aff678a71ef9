"""max_batch_tokens auto: the scoring actor times candidate budgets on its first call's pairs."""

import logging
import re

import numpy as np
import pyarrow as pa
import pytest
import torch

from pipeline.config import ModelConfig
from pipeline.io import Storage
from pipeline.modeling import budget_probe, kernel_choice
from pipeline.modeling.budget_probe import CANDIDATES, NEAR_BEST, probe_budget
from pipeline.modeling.reranker import Reranker
from pipeline.models.pair_tokenizer import PairTokenizer
from pipeline.rerank.stages.score import ScorePairs
from tests.helpers import scoring_settings

FALLBACK = 4096  # the reranker's own budget, which no candidate below equals
LOGGER = "pipeline.modeling.budget_probe"


def _pairs(tiny_bert, n=40):
    tok = PairTokenizer.load(tiny_bert, 64, 48)
    return tok.encode(["what is kalo"] * n, ["kalo sun ra " * (i % 15 + 1) for i in range(n)])


@pytest.fixture(scope="module")
def reranker(tiny_bert):
    return Reranker.load(tiny_bert, "cpu", "float32", FALLBACK)


def logged_rates(caplog: pytest.LogCaptureFixture) -> tuple[dict[int, str], int]:
    """The probe's one log line, parsed: ({budget: tokens/s as logged}, chosen budget)."""
    (message,) = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    match = re.fullmatch(r"max_batch_tokens auto: tokens/s at median length \d+: (.*) -> (\d+)", message)
    assert match, message
    return {int(b): rate for b, rate in re.findall(r"(\d+): (\d{1,3}(?:,\d{3})*)", match[1])}, int(match[2])


def test_probe_picks_the_smallest_budget_near_the_best_rate(tiny_bert, reranker, caplog, monkeypatch):
    enc = _pairs(tiny_bert)
    lengths = np.diff(enc["input_ids"].offsets.to_numpy())
    measured: list[float] = []  # tokens/s of each timed candidate, in order
    real = budget_probe._timed_forward

    def timed(reranker, ids, types, rows):
        seconds = real(reranker, ids, types, rows)
        measured.append(len(rows) * int(lengths[rows[0]]) / seconds)
        return seconds

    monkeypatch.setattr(budget_probe, "_timed_forward", timed)
    candidates = (128, 256, 512)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        chosen = probe_budget(reranker, enc["input_ids"], enc["token_type_ids"], candidates)

    assert len(measured) == len(candidates)  # every candidate timed once
    best = max(measured)
    assert chosen == min(b for b, rate in zip(candidates, measured) if rate >= NEAR_BEST * best)
    rates, logged_choice = logged_rates(caplog)
    assert rates == {b: f"{rate:,.0f}" for b, rate in zip(candidates, measured)}
    assert logged_choice == chosen


def fake_timings(monkeypatch, rates: list[float | None]) -> list[int]:
    """Makes the candidates' timed forwards yield these tokens/s in turn (None: out of memory);
    returns the list that collects how many rows each timed batch had."""
    rows_seen: list[int] = []
    queue = list(rates)

    def timed(reranker, ids, types, rows):
        rows_seen.append(len(rows))
        rate = queue.pop(0)
        if rate is None:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        length = int(np.diff(ids.offsets.to_numpy())[rows[0]])
        return len(rows) * length / rate

    monkeypatch.setattr(budget_probe, "_timed_forward", timed)
    return rows_seen


def test_a_budget_within_3_percent_of_the_fastest_wins_when_smaller(tiny_bert, reranker, monkeypatch):
    enc = _pairs(tiny_bert)
    # 512 is fastest; 256 is 2% slower (kept: smaller, same speed); 128 is far slower
    fake_timings(monkeypatch, [5_000.0, 9_800.0, 10_000.0])
    assert probe_budget(reranker, enc["input_ids"], enc["token_type_ids"], (128, 256, 512)) == 256
    # 256 now 4% slower: the fastest wins
    fake_timings(monkeypatch, [5_000.0, 9_600.0, 10_000.0])
    assert probe_budget(reranker, enc["input_ids"], enc["token_type_ids"], (128, 256, 512)) == 512


def test_out_of_memory_stops_the_probe_at_the_last_budget_that_fit(tiny_bert, reranker, monkeypatch, caplog):
    enc = _pairs(tiny_bert)
    rows_seen = fake_timings(monkeypatch, [5_000.0, 9_000.0, None, 99_000.0])
    with caplog.at_level(logging.INFO, logger=LOGGER):
        chosen = probe_budget(reranker, enc["input_ids"], enc["token_type_ids"], (128, 256, 512, 1024))
    assert chosen == 256
    assert len(rows_seen) == 3  # 1024 never tried once 512 ran out of memory
    assert logged_rates(caplog)[0].keys() == {128, 256}


def test_probe_falls_back_to_the_rerankers_budget(tiny_bert, reranker, monkeypatch):
    enc = _pairs(tiny_bert)
    # no pairs to time: nothing measured
    fake_timings(monkeypatch, [])
    empty = enc["input_ids"].slice(0, 0)
    assert probe_budget(reranker, empty, None, (128, 256)) == FALLBACK
    # even the smallest candidate ran out of memory
    rows_seen = fake_timings(monkeypatch, [None, 10_000.0])
    assert probe_budget(reranker, enc["input_ids"], enc["token_type_ids"], (128, 256)) == FALLBACK
    assert len(rows_seen) == 1


def test_score_stage_with_auto_budget_scores_every_row(tiny_bert, monkeypatch, caplog):
    enc = _pairs(tiny_bert, 30)
    batch = pa.table(
        {
            "shard": pa.array([0] * 30, pa.int32()),
            "row": pa.array(range(30), pa.int64()),
            **enc,
            "error": pa.nulls(30, pa.string()),
            "reject": pa.nulls(30, pa.string()),
        }
    )
    probed: list[int] = []

    def probe(*args, **kwargs):
        probed.append(probe_budget(*args, **kwargs))
        return probed[-1]

    monkeypatch.setattr(kernel_choice, "probe_budget", probe)
    stage = ScorePairs(
        ModelConfig(name_or_path=tiny_bert, max_length=64, attention="padded"),
        Storage(),
        scoring_settings("auto", device="cpu", dtype="float32"),
    )
    with caplog.at_level(logging.INFO, logger=LOGGER):
        out = stage(batch)
    fixed = ScorePairs(
        ModelConfig(name_or_path=tiny_bert, max_length=64),
        Storage(),
        scoring_settings(512, device="cpu", dtype="float32"),
    )(batch)
    np.testing.assert_allclose(out.column("score").to_numpy(), fixed.column("score").to_numpy(), atol=1e-5)
    assert len(probed) == 1 and stage._kernels.budget == probed[0]  # the probe's choice is the stage's budget
    rates, chosen = logged_rates(caplog)  # measured on the CPU candidates: not the fallback path
    assert set(rates) == set(CANDIDATES["cpu"]) and chosen == stage._kernels.budget
    stage(batch)
    assert len(probed) == 1  # probed on the first call only (and never by the fixed-budget stage)
