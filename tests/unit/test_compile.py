"""`--compile`: the compiled scoring module gives the eager scores, compiles a bounded number of
graphs over many micro-batch shapes, and falls back to eager when compiling fails. The graphs are
counted with a backend that runs them as traced (no C++ compile in the unit tier; tests/gpu runs
inductor on CUDA)."""

import numpy as np
import pytest
import torch

from pipeline.config import ModelConfig
from pipeline.io import Storage
from pipeline.modeling.kernels.compile import (
    WIDTH_MULTIPLE,
    CompiledScorer,
    bucket_length,
    bucket_width,
)
from pipeline.modeling.reranker import Reranker
from pipeline.models.pair_tokenizer import PairTokenizer
from pipeline.rerank.stages.score import ScorePairs
from tests.helpers import scoring_settings


def test_widths_and_packed_length_bounds_are_bucketed():
    assert [bucket_width(w) for w in (1, 8, 9, 63, 64, 65)] == [8, 8, 16, 64, 64, 72]
    assert [bucket_length(n) for n in (1, 16, 17, 300, 512, 513)] == [16, 16, 32, 512, 512, 1024]


class GraphCounter:
    """A torch.compile backend that counts the graphs it is handed and runs them as traced."""

    def __init__(self) -> None:
        self.graphs = 0

    def __call__(self, gm: torch.fx.GraphModule, example_inputs) -> object:
        self.graphs += 1
        return gm.forward


@pytest.mark.timeout(600)
def test_compiled_scores_equal_eager_without_a_recompile_per_micro_batch(tiny_bert):
    tok = PairTokenizer.load(tiny_bert, 64, 48)
    enc = tok.encode(["what is kalo"] * 24, ["kalo sun ra " * (i % 12 + 1) for i in range(24)])
    ids, types = enc["input_ids"], enc["token_type_ids"]
    eager = Reranker.load(tiny_bert, "cpu", "float32", 256)
    counter = GraphCounter()
    compiled = Reranker(eager.scorer, "cpu", eager.pad_token_id, 256, compiled=True, compile_backend=counter)
    lengths = np.diff(ids.offsets.to_numpy())
    shapes = {(len(b), bucket_width(int(lengths[b].max()))) for b in compiled.plan(lengths, 256)}
    assert len(shapes) >= 4  # the run below meets several (rows, width) shapes

    got = compiled.score(ids, types)
    np.testing.assert_allclose(got.columns, eager.score(ids, types).columns, atol=1e-5)
    assert counter.graphs <= 2  # dynamic shapes: one graph (a second for a 1-row batch at most)
    assert compiled.model.is_compiled
    assert (got.padded_lengths % WIDTH_MULTIPLE == 0).all()  # run at bucketed widths
    inputs = compiled.inputs(ids, types, np.arange(3))
    assert inputs["input_ids"].shape[1] % WIDTH_MULTIPLE == 0
    assert inputs["attention_mask"].sum() == lengths[:3].sum()  # the widening is all padding
    graphs = counter.graphs
    one = compiled.forward(ids, types, np.array([5]))  # a one-row batch runs as two rows
    np.testing.assert_allclose(one, eager.forward(ids, types, np.array([5])), atol=1e-5)
    assert one.shape == (1, 1) and counter.graphs == graphs  # no size-1 specialisation


def test_the_scoring_stage_compiles_as_the_model_config_says(tiny_bert):
    on = ScorePairs(ModelConfig(name_or_path=tiny_bert, compile="on"), Storage(), scoring_settings(256))
    assert on.reranker.compiled and isinstance(on.reranker.model, CompiledScorer)
    auto = ScorePairs(ModelConfig(name_or_path=tiny_bert), Storage(), scoring_settings(256))
    assert not auto.reranker.compiled  # auto: off on CPU


def test_a_failed_compile_falls_back_to_eager(caplog):
    def broken(gm, example_inputs):
        raise RuntimeError("no compiler here")

    class Double(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2

    scorer = CompiledScorer(Double(), backend=broken)
    out = scorer(x=torch.ones(3))
    assert out.tolist() == [2.0, 2.0, 2.0] and not scorer.is_compiled
    assert "running it eagerly" in caplog.text


def test_out_of_memory_passes_through_to_the_callers_split():
    scorer = CompiledScorer(torch.nn.Identity())

    def oom(**inputs):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    scorer.__dict__["_compiled"] = oom
    with pytest.raises(torch.OutOfMemoryError):
        scorer(x=torch.ones(1))
    assert scorer.is_compiled  # still compiled: the Reranker splits the batch and retries
