"""max_batch_tokens auto on CUDA is bounded by free memory: a candidate whose measured activations
would not fit is never tried (the gauge is faked here; tests/gpu measures a real one)."""

import logging

import numpy as np
import pytest

from pipeline.modeling import budget_probe
from pipeline.modeling.budget_probe import MEMORY_HEADROOM, memory_bound, probe_budget
from pipeline.modeling.reranker import Reranker
from pipeline.models.pair_tokenizer import PairTokenizer


def test_memory_bound_keeps_headroom():
    assert memory_bound(1000, 1.0) == int(MEMORY_HEADROOM * 1000)
    assert memory_bound(10_000, 4.0, headroom=0.5) == 1250
    assert memory_bound(10, 0.0) > 2**40  # nothing measured: no bound


class FakeGauge:
    """Each forward needs `per_token` bytes a token; `available` bytes are free."""

    def __init__(self, per_token: float, available: int) -> None:
        self.per_token, self.available, self.tokens = per_token, available, 0

    def start(self) -> None:
        pass

    def peak_bytes(self) -> int:
        return int(self.per_token * self.tokens)

    def available_bytes(self) -> int:
        return self.available


@pytest.fixture
def pairs(tiny_bert):
    return PairTokenizer.load(tiny_bert, 64, 48).encode(["what is kalo"] * 30, ["kalo ra " * 5] * 30)


def test_candidates_past_the_memory_bound_are_not_tried(tiny_bert, pairs, monkeypatch, caplog):
    reranker = Reranker.load(tiny_bert, "cpu", "float32", 4096)
    gauge = FakeGauge(per_token=1000.0, available=400_000)  # room for 320 tokens at 80%
    tried: list[int] = []
    length = int(np.diff(pairs["input_ids"].offsets.to_numpy())[0])

    def timed(reranker, ids, types, rows):
        gauge.tokens = len(rows) * length
        tried.append(gauge.tokens)
        return gauge.tokens / (1000.0 * len(tried))  # larger budgets faster: the bound decides

    monkeypatch.setattr(budget_probe, "_timed_forward", timed)
    with caplog.at_level(logging.INFO, logger="pipeline.modeling.budget_probe"):
        chosen = probe_budget(
            reranker, pairs["input_ids"], pairs["token_type_ids"], (128, 256, 512, 1024), gauge
        )
    assert chosen == 256 and len(tried) == 2  # 512 would need more than 80% of what is free
    assert "512 and up not tried" in caplog.text


def test_without_a_gauge_the_probe_is_unbounded(tiny_bert, pairs, monkeypatch):
    reranker = Reranker.load(tiny_bert, "cpu", "float32", 4096)
    calls: list[int] = []

    def timed(reranker, ids, types, rows):
        calls.append(len(rows))
        return 1.0 / len(calls)

    monkeypatch.setattr(budget_probe, "_timed_forward", timed)
    assert probe_budget(reranker, pairs["input_ids"], pairs["token_type_ids"], (128, 256, 512)) == 512
    assert len(calls) == 3
