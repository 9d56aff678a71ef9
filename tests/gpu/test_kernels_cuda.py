"""CUDA checks of the faster paths (pipeline.modeling.kernels): unpadded batches through torch's
varlen flash kernel, torch.compile through inductor, which SDPA kernels the padded path can use,
and the budget probe's memory bound. Skipped without CUDA."""

import numpy as np
import pytest
import torch

from pipeline.config import DEFAULT_PROMPT
from pipeline.modeling.budget_probe import CudaMemoryGauge, memory_bound, probe_budget
from pipeline.modeling.kernels import attention
from pipeline.modeling.reranker import Reranker
from pipeline.models.families.registry import FLAG_LAYERWISE, FLAG_LLM
from pipeline.models.families.template_tokenizer import TemplatePairTokenizer
from pipeline.models.pair_tokenizer import PairTokenizer
from tests.helpers import MODELS

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

CASES = [
    ("tiny-bert", "encoder", None),
    ("tiny-xlmr", "encoder", None),
    ("tiny-gemma", "llm", None),
    ("tiny-minicpm-layerwise", "layerwise", [2, 4, 6]),
]
# half precision on the tiny models amplifies rounding (as in test_cuda.py): loose there
ATOL = {"float32": 1e-4, "float16": {"encoder": 2e-2, "llm": 0.25, "layerwise": 0.25}}


def encoded(goldens: dict, model: str, kind: str):
    path = str(MODELS / model)
    queries, passages = [p[0] for p in goldens["pairs"]], [p[1] for p in goldens["pairs"]]
    if kind == "encoder":
        enc = PairTokenizer.load(path, 512, 384).encode(queries, passages)
    else:
        family = FLAG_LAYERWISE if kind == "layerwise" else FLAG_LLM
        tok = TemplatePairTokenizer.load(path, family, 512, 384, DEFAULT_PROMPT)
        enc = tok.encode(queries, passages)
    return enc["input_ids"], enc.get("token_type_ids")


def atol(dtype: str, kind: str) -> float:
    value = ATOL[dtype]
    return value if isinstance(value, float) else value[kind]


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize(("model", "kind", "cutoffs"), CASES)
def test_unpadded_on_cuda_matches_padded(goldens, model, kind, cutoffs, dtype):
    ids, types = encoded(goldens, model, kind)
    path = str(MODELS / model)
    padded = Reranker.load(path, "cuda", dtype, 4096, kind=kind, cutoff_layers=cutoffs)
    unpadded = Reranker.load(
        path, "cuda", dtype, 4096, kind=kind, cutoff_layers=cutoffs, attention="unpadded"
    )
    want, got = padded.score(ids, types).columns, unpadded.score(ids, types).columns
    np.testing.assert_allclose(got, want, atol=atol(dtype, kind), rtol=1e-5 if dtype == "float32" else 1e-2)


@pytest.mark.parametrize("kv_heads", [4, 1])
def test_the_varlen_flash_kernel_runs_half_precision(kv_heads):
    kernel, _ = attention.flash_varlen()
    assert kernel is not None, f"torch {torch.__version__} has no torch.nn.attention.varlen"
    torch.manual_seed(0)
    lengths = [37, 1, 300, 64]
    cu = torch.tensor([0, *np.cumsum(lengths)], dtype=torch.int32, device="cuda")
    total = int(cu[-1])
    q = torch.randn(total, 4, 64, device="cuda", dtype=torch.float16)
    k = torch.randn(total, kv_heads, 64, device="cuda", dtype=torch.float16)
    v = torch.randn(total, kv_heads, 64, device="cuda", dtype=torch.float16)
    for causal in (False, True):
        flash = attention._flash(q, k, v, cu, max(lengths), causal, None)
        assert flash is not None  # the fused kernel, not the padded-block fallback
        block = attention._padded_block(q.float(), k.float(), v.float(), cu, max(lengths), causal, None)
        torch.testing.assert_close(flash.float(), block, atol=2e-3, rtol=2e-3)


@pytest.mark.parametrize(
    ("model", "kind", "atten"), [("tiny-bert", "encoder", "padded"), ("tiny-gemma", "llm", "unpadded")]
)
def test_compiled_on_cuda_matches_eager_with_bounded_recompiles(goldens, model, kind, atten):
    from torch._inductor.compile_fx import compile_fx

    graphs = []

    def counting_inductor(gm, example_inputs):
        graphs.append(gm)
        return compile_fx(gm, example_inputs)

    ids, types = encoded(goldens, model, kind)
    path = str(MODELS / model)
    eager = Reranker.load(path, "cuda", "float16", 4096, kind=kind)
    compiled = Reranker(
        eager.scorer,
        "cuda",
        eager.pad_token_id,
        4096,
        attention=atten,  # type: ignore[arg-type]
        compiled=True,
        compile_backend=counting_inductor,
    )
    reference = Reranker(eager.scorer, "cuda", eager.pad_token_id, 4096, attention=atten)  # type: ignore[arg-type]
    want = reference.score(ids, types).columns
    for budget in (4096, 1024, 300):  # different micro-batch shapes on each run
        got = compiled.score(ids, types, budget).columns
        np.testing.assert_allclose(got, want, atol=atol("float16", kind), rtol=1e-2)
    assert compiled.model.is_compiled
    assert len(graphs) <= 3


def test_the_padding_mask_keeps_a_fused_kernel(goldens):
    """Padded encoder batches carry a mask: flash is out, but the run must not need the math kernel."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    ids, types = encoded(goldens, "tiny-xlmr", "encoder")
    reranker = Reranker.load(str(MODELS / "tiny-xlmr"), "cuda", "float16", 4096)
    fused = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION]
    with sdpa_kernel(fused):
        reranker.score(ids, types)
    ids, _ = encoded(goldens, "tiny-minicpm-layerwise", "layerwise")
    layerwise = Reranker.load(
        str(MODELS / "tiny-minicpm-layerwise"), "cuda", "float16", 4096, kind="layerwise"
    )
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):  # decoders: no mask, causal: flash itself
        layerwise.score(ids)


def test_budget_probe_is_bounded_by_free_memory(goldens):
    ids, types = encoded(goldens, "tiny-bert", "encoder")
    reranker = Reranker.load(str(MODELS / "tiny-bert"), "cuda", "float16", 4096)
    gauge = CudaMemoryGauge()
    gauge.start()
    reranker.forward(ids, types, np.arange(len(ids)))
    per_token = gauge.peak_bytes() / int(np.diff(ids.offsets.to_numpy()).sum())
    assert per_token > 0 and gauge.available_bytes() > 0
    chosen = probe_budget(reranker, ids, types)
    assert chosen <= max(16384, memory_bound(gauge.available_bytes(), per_token))
