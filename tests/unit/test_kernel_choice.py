"""The `auto` kernel settings of a scoring actor (issue 27): the attention probe keeps the path a
timer finds faster and scores every probe pair once; `--compile auto` weighs the compile against
the actor's share of the run; CPU `--dtype auto` follows the OS's bf16 features and a rerun keeps
OUTPUT's dtype; the summary line names what ran and why."""

import json

import numpy as np
import pyarrow as pa
import pytest

from pipeline.config import ModelConfig
from pipeline.errors import ModelLoadError
from pipeline.io import Storage
from pipeline.modeling import attention_probe
from pipeline.modeling.attention_probe import PROBE_BATCHES, deal_rows, probe_attention
from pipeline.modeling.kernel_choice import KernelChoices
from pipeline.modeling.kernels import compile as compile_module
from pipeline.modeling.kernels.compile import CompileCost, compile_pays_back
from pipeline.modeling.kernels.cpu_features import CpuFeatures
from pipeline.modeling.reranker import Reranker
from pipeline.models.pair_tokenizer import PairTokenizer
from pipeline.rerank.report.kernels import KernelChoices as ReportedChoices
from pipeline.rerank.report.kernels import kernel_line
from pipeline.rerank.settings import resolve_dtype
from pipeline.rerank.stages.score import ScorePairs
from tests.helpers import scoring_settings


def pairs(tiny_bert: str, n: int = 120) -> tuple[pa.ListArray, pa.ListArray | None]:
    rng = np.random.default_rng(0)
    queries = [f"what is kalo {i}" for i in range(n)]
    passages = [" ".join(["kalo ra sen"] * int(rng.integers(1, 30))) for _ in range(n)]
    enc = PairTokenizer.load(tiny_bert, 128, 96).encode(queries, passages)
    return enc["input_ids"], enc.get("token_type_ids")


class FakeClock:
    """A clock that each micro-batch advances by its tokens times its path's cost per token."""

    def __init__(self, reranker: Reranker, cost: dict[str, float]) -> None:
        self.now = 0.0
        real_run = reranker.run

        def run(ids, types, rows):
            self.now += float(np.diff(ids.offsets.to_numpy())[rows].sum()) * cost[reranker.attention]
            return real_run(ids, types, rows)

        reranker.run = run  # type: ignore[method-assign]

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("faster", ["padded", "unpadded"])
def test_the_probe_keeps_the_path_a_timer_finds_faster(tiny_bert, faster):
    ids, types = pairs(tiny_bert)
    reranker = Reranker.load(tiny_bert, "cpu", "float32", 256)
    want = reranker.score(ids, types).columns
    slower = "padded" if faster == "unpadded" else "unpadded"
    clock = FakeClock(reranker, {faster: 1e-4, slower: 3e-4})
    result, choice = probe_attention(reranker, ids, types, 256, clock)
    assert choice.chosen == faster == reranker.attention and choice.reason == "measured"
    assert choice.rates[faster] == pytest.approx(3 * choice.rates[slower])
    assert 0 < choice.probe_pairs < len(ids)
    np.testing.assert_allclose(result.columns, want, atol=1e-5)  # every row, either path


def test_every_probe_pair_is_scored_once(tiny_bert, monkeypatch):
    ids, types = pairs(tiny_bert)
    reranker = Reranker.load(tiny_bert, "cpu", "float32", 256)
    probed: list[int] = []
    rest: list[tuple[int, ...]] = []
    real_run, real_score = reranker.run, reranker.score

    def run(ids_, types_, rows):  # the probe's batches: rows of the call itself
        if ids_ is ids:
            probed.extend(int(r) for r in rows)
        return real_run(ids_, types_, rows)

    def score(ids_, types_, budget):  # the rest of the call, on the chosen path
        rest.extend(tuple(x) for x in ids_.to_pylist())
        return real_score(ids_, types_, budget)

    monkeypatch.setattr(reranker, "run", run)
    monkeypatch.setattr(reranker, "score", score)
    result, choice = probe_attention(reranker, ids, types, 256)
    assert len(set(probed)) == len(probed) == choice.probe_pairs  # each probe pair once
    rows = [tuple(x) for x in ids.to_pylist()]
    assert len(set(rows)) == len(rows)  # distinct pairs: the rest can be told by their tokens
    assert sorted(rest) == sorted(rows[i] for i in set(range(len(rows))) - set(probed))
    assert len(result.columns) == len(ids)


def test_the_probe_is_bounded_and_deals_alike_lengths(tiny_bert):
    lengths = np.arange(1, 1001)
    (a, b), budget = deal_rows(lengths, 2048, 2, PROBE_BATCHES)
    assert budget == 2048
    for rows in (a, b):
        assert lengths[rows].sum() <= (PROBE_BATCHES + 1) * 2048
    assert abs(int(lengths[a].mean()) - int(lengths[b].mean())) <= 2  # same mix of lengths
    (a, b), budget = deal_rows(np.full(20, 10), 2048, 2, PROBE_BATCHES)  # a short call
    assert budget == 20 and len(a) == len(b) == 10


def test_a_path_the_model_cannot_run_drops_out(tiny_bert, monkeypatch):
    ids, types = pairs(tiny_bert, 60)
    reranker = Reranker.load(tiny_bert, "cpu", "float32", 256)
    want = reranker.score(ids, types).columns

    def unsupported(module):
        raise ModelLoadError("--attention unpadded supports BERT- and RoBERTa-style cross-encoders")

    monkeypatch.setattr("pipeline.modeling.reranker.packed_scorer", unsupported)
    result, choice = probe_attention(reranker, ids, types, 256)
    assert choice.chosen == "padded" and "not supported" in choice.reason
    np.testing.assert_allclose(result.columns, want, atol=1e-6)


def test_a_family_without_a_packed_path_is_not_probed(tiny_bert, monkeypatch):
    ids, types = pairs(tiny_bert, 40)
    monkeypatch.setattr(attention_probe, "probe_attention", None)  # would fail if called
    kernels = KernelChoices(
        Reranker.load(tiny_bert, "cpu", "float32", 256),
        attention="auto",
        compile_setting="off",
        budget=256,
        probe_budget=False,
        pairs_expected=40,
        packs=False,
    )
    kernels.score(ids, types)
    assert kernels.info["attention"] == "padded" and "no packed path" in kernels.info["attention_reason"]


def test_compile_pays_back_only_on_enough_work(monkeypatch):
    monkeypatch.setitem(compile_module.COMPILE_COST, "cpu", CompileCost(seconds=30, speedup=1.5))
    small, why = compile_pays_back("cpu", tokens_left=300_000, tokens_per_s=10_000)  # 10 s saved
    assert not small and "eager" in why
    big, why = compile_pays_back("cpu", tokens_left=30_000_000, tokens_per_s=10_000)  # 1,000 s saved
    assert big and "compiled" in why
    assert not compile_pays_back("cuda-unmeasured", 1e12, 1.0)[0]
    monkeypatch.setitem(compile_module.COMPILE_COST, "cpu", CompileCost(seconds=30, speedup=0.9))
    assert not compile_pays_back("cpu", 1e12, 1.0)[0]


def test_compile_auto_compiles_then_goes_back_when_slower(tiny_bert, monkeypatch):
    ids, types = pairs(tiny_bert, 40)
    monkeypatch.setitem(compile_module.COMPILE_COST, "cpu", CompileCost(seconds=0.0, speedup=2.0))
    loaded = Reranker.load(tiny_bert, "cpu", "float32", 256)
    reranker = Reranker(loaded.scorer, "cpu", loaded.pad_token_id, 256, compile_backend="eager")
    kernels = KernelChoices(
        reranker,
        attention="padded",
        compile_setting="auto",
        budget=256,
        probe_budget=False,
        pairs_expected=400,
    )
    kernels.score(ids, types)
    assert kernels.info["compile"] and reranker.compiled
    kernels._eager_rate = 1e12  # the eager path "was" far faster: the compiled one goes back
    kernels.score(ids, types)
    kernels.score(ids, types)
    assert not reranker.compiled and "slower" in kernels.info["compile_reason"]


@pytest.mark.parametrize(
    ("flags", "device", "want"),
    [
        ({"amx_tile", "amx_bf16", "avx512f"}, "cpu", "bfloat16"),
        ({"avx512_bf16", "avx512f"}, "cpu", "bfloat16"),
        ({"avx512f", "avx2"}, "cpu", "float32"),
        (set(), "cpu", "float32"),
        (set(), "cuda", "float16"),
    ],
)
def test_auto_dtype_follows_the_cpu_features(flags, device, want):
    dtype, why = resolve_dtype("auto", device, CpuFeatures(frozenset(flags)))
    assert dtype == want and why.startswith("auto")
    assert resolve_dtype("float32", device, CpuFeatures(frozenset(flags))) == ("float32", "given (--dtype)")


def test_the_scoring_stage_reports_its_choices(tiny_bert):
    ids, types = pairs(tiny_bert, 200)
    n = len(ids)
    batch = pa.table(
        {
            "shard": pa.array([0] * n, pa.int32()),
            "row": pa.array(range(n), pa.int64()),
            "input_ids": ids,
            "token_type_ids": types,
            "error": pa.nulls(n, pa.string()),
            "reject": pa.nulls(n, pa.string()),
        }
    )
    stage = ScorePairs(ModelConfig(name_or_path=tiny_bert, max_length=128), Storage(), scoring_settings(256))
    out = stage(batch)
    reported = out.column("kernel").drop_null().to_pylist()
    assert len(reported) == 1
    info = json.loads(reported[0])
    assert info["dtype"] == "float32" and info["attention"] in ("padded", "unpadded")
    assert info["attention_probe"]["reason"] == "measured" and info["compile"] is False
    collected = ReportedChoices()
    collected.add("node:1", out)
    summary = collected.summary()
    assert summary is not None and summary["attention"] == {info["attention"]: 1}
    line = kernel_line(summary)
    assert line is not None and "precision float32" in line and "probe:" in line
    # on CPU: which attention kernel packed batches ran on (ours, or torch's SDPA and why)
    assert summary["attention_kernel"] == {info["attention_kernel"]: 1}
    assert "CPU attention kernel" in line
    # a packed BERT runs its last layer at the first tokens only; padded says nothing of it
    if info["attention"] == "unpadded":
        assert summary["last_layer"] == {"first tokens only": 1} and "last layer at first tokens only" in line
    else:
        assert "last_layer" not in summary


def test_unpadded_must_win_by_a_margin(tiny_bert):
    """A race within the noise of a few batches keeps padded, the reference path."""
    ids, types = pairs(tiny_bert)
    reranker = Reranker.load(tiny_bert, "cpu", "float32", 256)
    clock = FakeClock(reranker, {"padded": 1.03e-4, "unpadded": 1e-4})  # unpadded 3% faster
    _, choice = probe_attention(reranker, ids, types, 256, clock)
    assert choice.chosen == "padded" and choice.rates["unpadded"] > choice.rates["padded"]
