"""The family registry: its entries as data (coherent, templates verbatim, digests pinned), and what
must not move when families arrive: the fingerprints and reuse identities of runs of the models
the job already scored (encoder, llm, layerwise), pinned as literal values computed before the
registry existed. A change here means existing OUTPUTs stop resuming and stored scores stop being
reused: make it only on purpose."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest

from pipeline.config import DEFAULT_PROMPT, FamilyName, ResolvedFamilyName, ResolvedKind
from pipeline.finetune.config import load_finetune_config
from pipeline.io import Storage
from pipeline.models.families.family import JoinedLayout, SegmentLayout
from pipeline.models.families.registry import FAMILIES, fallback_family, family_named
from pipeline.models.identity import model_identity
from pipeline.rerank.config import load_config
from pipeline.rerank.output.fingerprint import fingerprint, fingerprint_digest
from pipeline.rerank.preflight import load_model_locally
from pipeline.rerank.reuse.identity import identity_digest, store_identity

ROOT = Path(__file__).resolve().parents[2]
IDENTITY = {"config": "c0c0c0c0c0c0c0c0", "weights": "0e0e0e0e0e0e0e0e"}  # weights' mtimes vary by clone
COLUMNS = {"doc_id": "doc_id", "passage": "passage", "query": "query", "query_id": "query_id"}


def test_the_registry_is_the_config_s_family_names():
    assert tuple(FAMILIES) == typing.get_args(ResolvedFamilyName)
    assert typing.get_args(FamilyName) == ("auto", *FAMILIES)
    assert all(family_named(name).name == name for name in FAMILIES)


def test_each_kind_has_one_fallback_family_which_is_what_the_job_always_did():
    for kind in typing.get_args(ResolvedKind):
        assert [f.name for f in FAMILIES.values() if f.kind == kind and f.recognition.is_fallback] == [
            fallback_family(kind).name
        ]
    assert [fallback_family(k).name for k in ("encoder", "llm", "layerwise")] == [
        "cross-encoder",
        "flag-llm",
        "flag-layerwise",
    ]
    assert {f.name for f in FAMILIES.values() if f.legacy_fingerprint} == {
        "cross-encoder",
        "flag-llm",
        "flag-layerwise",
    }


@pytest.mark.parametrize("name", list(FAMILIES))
def test_each_entry_is_coherent(name):
    f = FAMILIES[name]
    assert (f.layout is None) == (f.kind == "encoder") == (f.score.kind == "classification")
    assert bool(f.score.tokens) == f.score.kind.startswith("token")
    assert len(f.score.tokens) == {"token": 1, "token-difference": 2}.get(f.score.kind, 0)
    assert f.takes_instruction or f.default_instruction is None
    if isinstance(f.layout, SegmentLayout):
        assert "{query}" in f.layout.query and "{document}" in f.layout.document
    if isinstance(f.layout, JoinedLayout):
        assert all(f"{{{k}}}" in f.layout.body for k in ("instruction", "query", "document"))
    text = "" if f.layout is None else "".join(str(v) for v in vars(f.layout).values())
    assert all(token in text for token in f.recognition.required_tokens)
    for pattern in f.recognition.name_patterns:
        assert f.recognition.architectures and "*" not in "".join(f.recognition.architectures), pattern


def test_template_digests_are_pinned():
    """A changed template, score or truncation rule changes its digest: update it here on purpose."""
    assert {n: f.template_digest() for n, f in FAMILIES.items()} == {
        "cross-encoder": "5bc34c38cf75ef1a",
        "modernbert": "595d8b9e15b93282",
        "flag-llm": "e13efdd3178fc6d3",
        "flag-layerwise": "f5116f5ead047fa6",
        "qwen3": "18d9f41c4048e2e6",
        "mxbai-v2": "864df9f8efa8c804",
    }


@pytest.mark.parametrize("name,bos", [("flag-llm", "if-distinct-from-pad"), ("flag-layerwise", "always")])
def test_the_flag_layout_is_flagembedding_s(name, bos):
    layout = FAMILIES[name].layout
    assert isinstance(layout, SegmentLayout) and layout.bos == bos
    assert (layout.prefix, layout.instruction_line, layout.suffix) == ("", "", "")
    # FlagEmbedding 1.4.2's BaseLLMReranker: "A: " query, "\n", "B: " passage, "\n", prompt
    assert layout.query.format(query="") == "A: "
    assert layout.document.format(document="") == "B: "
    assert layout.separator == "\n" and layout.tail.format(instruction="P") == "P"


def test_the_qwen3_template_is_the_model_card_s():
    layout = FAMILIES["qwen3"].layout
    assert isinstance(layout, JoinedLayout)
    text = layout.prefix + layout.body.format(instruction="I", query="Q", document="D") + layout.suffix
    assert text == (
        "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and "
        'the Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n'
        "<|im_start|>user\n<Instruct>: I\n<Query>: Q\n<Document>: D"
        "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )
    assert FAMILIES["qwen3"].instruction(None) == (
        "Given a web search query, retrieve relevant passages that answer the query"
    )
    assert FAMILIES["qwen3"].score.tokens == ("yes", "no")


def test_the_mxbai_template_is_the_package_s():
    f = FAMILIES["mxbai-v2"]
    layout = f.layout
    assert isinstance(layout, SegmentLayout)
    line = layout.instruction_line.format(instruction="I")
    pieces = [
        layout.prefix,
        layout.query.format(instruction_line=line, query="Q"),
        layout.separator,
        layout.document.format(document="D"),
        layout.separator,
        layout.tail,
        layout.suffix,
    ]
    assert "".join(pieces) == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
        "<|im_end|>\n<|im_start|>user\ninstruction: I\nquery: Q\ndocument: D\nYou are a search "
        "relevance expert who evaluates how well documents match search queries. For each "
        "query-document pair, carefully analyze the semantic relationship between them, then provide "
        "your binary relevance judgment (0 for not relevant, 1 for relevant).\nRelevance:"
        "<|im_end|>\n<|im_start|>assistant\n"
    )
    assert f.score.tokens == ("1", "0") and f.instruction(None) is None


def test_the_instruction_is_the_given_one_or_the_family_s_default():
    assert FAMILIES["flag-llm"].instruction(None) == DEFAULT_PROMPT
    assert FAMILIES["flag-layerwise"].instruction("Relevant?") == "Relevant?"
    assert FAMILIES["cross-encoder"].instruction("ignored") is None
    assert FAMILIES["mxbai-v2"].instruction("I") == "I"


# --- what must not move: literal values, computed with the code before the registry existed ---

RUNS = {
    "encoder": {"model": {"name_or_path": "tests/assets/models/tiny-bert", "max_length": 64}},
    "llm": {
        "model": {
            "name_or_path": "tests/assets/models/tiny-gemma",
            "max_length": 96,
            "query_max_length": 32,
            "prompt": "Relevant?",
        },
        "input": {"uri": "in", "long_passages": "chunk", "chunk_overlap": 8},
    },
    "layerwise": {
        "model": {
            "name_or_path": "tests/assets/models/tiny-minicpm-layerwise",
            "cutoff_layers": [4, 6],
            "max_length": 128,
        },
        "ranking": {"normalize": True, "top_k": 3},
    },
}

PINNED = {
    "encoder": {
        "family": "cross-encoder",
        "config_digest": "98561fddf6b8a29f",
        "fingerprint": {
            "columns": COLUMNS,
            "dtype": "float32",
            "max_length": 64,
            "model": "tests/assets/models/tiny-bert",
            "model_identity": IDENTITY,
            "normalize": False,
            "query_max_length": 48,
            "top_k": None,
        },
        "fingerprint_digest": "ecf769c7fd13125f",
        "store_identity": {
            "dtype": "float32",
            "format": 1,
            "kind": "encoder",
            "long_passages": "truncate",
            "max_length": 64,
            "model": IDENTITY,
            "query_max_length": 48,
            "score_columns": ["score"],
        },
        "store_digest": "9df48c8a6517a82e",
    },
    "llm": {
        "family": "flag-llm",
        "config_digest": "1782b00b7544e63d",
        "fingerprint": {
            "columns": COLUMNS,
            "cutoff_layers": None,
            "dtype": "float32",
            "kind": "llm",
            "long_passages": {
                "chunk_aggregate": "max",
                "chunk_overlap": 8,
                "max_chunks": 16,
                "mode": "chunk",
            },
            "max_length": 96,
            "model": "tests/assets/models/tiny-gemma",
            "model_identity": IDENTITY,
            "normalize": False,
            "prompt": "Relevant?",
            "query_max_length": 32,
            "top_k": None,
        },
        "fingerprint_digest": "aab0e25e8d632416",
        "store_identity": {
            "chunks": {"aggregate": "max", "max_chunks": 16, "overlap": 8},
            "cutoff_layers": None,
            "dtype": "float32",
            "format": 1,
            "kind": "llm",
            "long_passages": "chunk",
            "max_length": 96,
            "model": IDENTITY,
            "prompt": "Relevant?",
            "query_max_length": 32,
            "score_columns": ["score"],
        },
        "store_digest": "a1f631c0453ceadf",
    },
    "layerwise": {
        "family": "flag-layerwise",
        "config_digest": "78a9b809007c3d7d",
        "fingerprint": {
            "columns": COLUMNS,
            "cutoff_layers": [4, 6],
            "dtype": "float32",
            "kind": "layerwise",
            "max_length": 128,
            "model": "tests/assets/models/tiny-minicpm-layerwise",
            "model_identity": IDENTITY,
            "normalize": True,
            "prompt": DEFAULT_PROMPT,
            "query_max_length": 96,
            "top_k": 3,
        },
        "fingerprint_digest": "5e92dd3dfbb78daa",
        "store_identity": {
            "cutoff_layers": [4, 6],
            "dtype": "float32",
            "format": 1,
            "kind": "layerwise",
            "long_passages": "truncate",
            "max_length": 128,
            "model": IDENTITY,
            "prompt": DEFAULT_PROMPT,
            "query_max_length": 96,
            "score_columns": ["score_l4", "score_l6"],
        },
        "store_digest": "ba360938e8c0e4fb",
    },
}


@pytest.mark.parametrize("run", list(RUNS))
def test_the_fingerprint_and_reuse_identity_of_existing_models_do_not_move(run, monkeypatch):
    """The committed tiny models through the driver's model checks (kind and family resolved from
    the model, as a run does), then the run fingerprint and the reuse store identity."""
    monkeypatch.chdir(ROOT)  # the model's name as given is part of the fingerprint: a relative path
    data = {"input": {"uri": "in"}, "output": {"uri": "out"}}
    for section, values in RUNS[run].items():
        data[section] = {**data.get(section, {}), **values}
    cfg, kind = load_model_locally(load_config(None, data), Storage())
    pinned = PINNED[run]
    assert (kind, cfg.model.kind, cfg.model.family) == (run, run, pinned["family"])
    assert model_identity(cfg.model.name_or_path, Storage())["config"] == pinned["config_digest"]
    fp = fingerprint(cfg, "float32", IDENTITY)
    assert fp == pinned["fingerprint"]
    assert fingerprint_digest(fp) == pinned["fingerprint_digest"]
    scoring = store_identity(cfg, "float32", IDENTITY)
    assert scoring == pinned["store_identity"]
    assert identity_digest(scoring) == pinned["store_digest"]


def test_the_finetune_checkpoints_fingerprint_does_not_move():
    """Checkpoints from before --family resume: the family is recorded only when one is given."""
    cfg = load_finetune_config(
        None,
        {
            "data": {"train_uri": "t.jsonl"},
            "output": {"uri": "o"},
            "model": {"name_or_path": "m", "kind": "llm", "prompt": "p"},
        },
    )
    assert cfg.fingerprint()["model"] == {
        "base": "m",
        "kind": "llm",
        "lora_alpha": 32,
        "lora_dropout": 0.05,
        "lora_rank": 16,
        "lora_target_modules": None,
        "max_length": 512,
        "prompt": "p",
        "query_max_length": None,
        "trust_remote_code": False,
    }
    forced = cfg.model_copy(update={"model": cfg.model.model_copy(update={"family": "flag-llm"})})
    assert forced.fingerprint()["model"]["family"] == "flag-llm"


@pytest.mark.parametrize(
    ("fixture", "name"),
    [("tiny_qwen3_reranker", "qwen3"), ("tiny_mxbai_v2", "mxbai-v2"), ("tiny_modernbert", "modernbert")],
)
def test_the_new_families_fingerprint_and_reuse_identity_name_family_template_and_instruction(
    fixture, name, request
):
    path = request.getfixturevalue(fixture)

    def resolved(**model: str):
        data = {"input": {"uri": "in"}, "output": {"uri": "out"}, "model": {"name_or_path": path, **model}}
        return load_model_locally(load_config(None, data), Storage())[0]

    cfg = resolved()
    fp, store = fingerprint(cfg, "float32", IDENTITY), store_identity(cfg, "float32", IDENTITY)
    assert fp["family"] == store["family"] == family_named(name).identity(None)
    assert "prompt" not in fp and "prompt" not in store
    if name == "modernbert":  # no instruction to change
        return
    other = resolved(instruction="Find the tower.")
    other_fp, other_store = (
        fingerprint(other, "float32", IDENTITY),
        store_identity(other, "float32", IDENTITY),
    )
    assert other_fp["family"]["instruction"] == other_store["family"]["instruction"] == "Find the tower."
    assert fingerprint_digest(other_fp) != fingerprint_digest(fp)
    assert identity_digest(other_store) != identity_digest(store)
