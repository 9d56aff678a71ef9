"""Qwen3-Reranker, mxbai-rerank-v2 and ModernBERT cross-encoders: token ids and raw scores equal the
model cards' own code and the publishers' packages, fp32, within 1e-5.

- the card reference (tests/assets/card_reference.py, this venv: transformers 5) follows the
  Qwen3-Reranker and gte-reranker-modernbert-base cards' code literally (full logits);
- the goldens (tests/assets/goldens/families.json, `make family-goldens`) come from the side venv
  (transformers 4.57.6): sentence-transformers 5.7.0's CrossEncoder (ModernBERT; Qwen3 through its
  LogitScore module) and mixedbread's mxbai-rerank 0.1.6, with the token ids they fed their models.

Scores are compared with the goldens' `scores_fp64`: the same package code with the model in
float64, each pair unpadded, i.e. its exact answer. The tiny models' large weights make fp32
rounding alone worth up to ~2e-5 between two fp32 runs (another transformers version, mxbai's
left padding: the goldens' `fp32_max_abs_diff_from_fp64`), so "within 1e-5 of the package" means
of its exact score; the job and the card reference run in float32.

The card reference agreeing with the goldens shows it is right; the job agreeing with both is the
parity bar. One deliberate deviation: where a Qwen3 query is so long that the card's right cut of
the body runs past the document into the "\n<Document>:" label and the query, the job keeps the
label and cuts the query's end instead (the document first, then the query; the template whole:
`truncation.cut_body`). Those pairs are compared for that rule, every other pair id for id. The
tiny models are the session fixtures (tests/family_fixtures.py), whose weights the goldens name by
digest.
"""

import json
from functools import cache

import numpy as np
import pytest

from pipeline.config import ModelConfig
from pipeline.modeling.reranker import Reranker
from pipeline.models.families.registry import family_named
from pipeline.models.families.template_tokenizer import TemplatePairTokenizer
from pipeline.models.kinds import load_pair_tokenizer
from pipeline.models.text_tokenizer import TextTokenizer
from tests.assets import card_reference, family_models
from tests.helpers import ASSETS

TOLERANCE = 1e-5
GOLDENS = json.loads((ASSETS / "goldens" / "families.json").read_text())
PAIRS = GOLDENS["pairs"]
QUERIES, PASSAGES = [p[0] for p in PAIRS], [p[1] for p in PAIRS]
# model name in the goldens -> (its session fixture, the digest its builder is pinned to)
MODELS = {
    "tiny-qwen3-reranker": ("tiny_qwen3_reranker", family_models.QWEN3_RERANKER_DIGEST),
    "tiny-mxbai-rerank-base-v2": ("tiny_mxbai_v2", family_models.MXBAI_V2_DIGEST),
    "tiny-modernbert-reranker": ("tiny_modernbert", family_models.MODERNBERT_DIGEST),
}
WITH_CARD_REFERENCE = ("qwen3", "modernbert")  # mxbai-rerank does not run on transformers 5


def _case_id(case: dict) -> str:
    return f"{case['family']}-{case['max_length']}" + ("-instruction" if case["instruction"] else "")


@pytest.fixture(params=GOLDENS["cases"], ids=_case_id)
def case(request: pytest.FixtureRequest) -> tuple[dict, str]:
    """A golden case and its model directory."""
    golden = request.param
    return golden, request.getfixturevalue(MODELS[golden["model"]][0])


@cache
def _card(family: str, model_dir: str, max_length: int, instruction: str | None) -> card_reference.CardScores:
    if family == "qwen3":
        return card_reference.qwen3_card_scores(model_dir, PAIRS, instruction, max_length)
    return card_reference.modernbert_card_scores(model_dir, PAIRS, max_length)


def card_scores(golden: dict, model_dir: str) -> card_reference.CardScores:
    """The card reference for a golden case (computed once per session)."""
    if golden["family"] not in WITH_CARD_REFERENCE:
        pytest.skip(f"no card reference for {golden['family']}: its golden is its package's own code")
    return _card(golden["family"], model_dir, golden["max_length"], golden["instruction"])


def _model_config(golden: dict, model_dir: str) -> ModelConfig:
    kind = "encoder" if golden["family"] == "modernbert" else "llm"
    return ModelConfig(
        name_or_path=model_dir,
        kind=kind,
        family=golden["family"],
        max_length=golden["max_length"],
        instruction=golden["instruction"],
    )


def card_cut_the_labels(golden: dict, model_dir: str) -> list[int]:
    """The Qwen3 pairs whose card ids lost the "\n<Document>:" label (the cut ran past the
    document): where the job deliberately differs."""
    if golden["family"] != "qwen3":
        return []
    tok = TextTokenizer.load(model_dir)
    return [i for i, ids in enumerate(golden["input_ids"]) if "\n<Document>:" not in tok.backend.decode(ids)]


def agreeing(golden: dict, model_dir: str) -> list[int]:
    """The pairs on which the job and the card build the same ids."""
    cut = set(card_cut_the_labels(golden, model_dir))
    return [i for i in range(len(PAIRS)) if i not in cut]


def our_ids(golden: dict, model_dir: str) -> list[list[int]]:
    """The job's token ids: the family's template tokenizer (qwen3, mxbai-v2), the encoder pair
    tokenizer (modernbert)."""
    if golden["family"] == "modernbert":
        model = _model_config(golden, model_dir)
        return load_pair_tokenizer(model_dir, model).encode(QUERIES, PASSAGES)["input_ids"].to_pylist()
    family = family_named(golden["family"])
    # qwen3's card has no query cap; mxbai caps the query at 3/4 of max_length, as ours by default
    query_max_length = None if family.query_cap == "given" else golden["max_length"] * 3 // 4
    tokenizer = TemplatePairTokenizer(
        family,
        TextTokenizer.load(model_dir),
        golden["max_length"],
        query_max_length,
        family.instruction(golden["instruction"]),
    )
    return tokenizer.encode_pairs(QUERIES, PASSAGES)


def test_goldens_describe_the_fixture_models(case):
    golden, model_dir = case
    assert (
        golden["weights_digest"] == MODELS[golden["model"]][1] == family_models.weights_digest(model_dir)
    ), (
        f"families.json was made from other {golden['model']} weights than the fixture builds: rerun "
        "`make family-goldens` (tests/assets/make_family_goldens.py)"
    )


def test_goldens_cover_truncation_instructions_and_discriminate():
    by_family: dict[str, list[dict]] = {}
    for golden in GOLDENS["cases"]:
        by_family.setdefault(golden["family"], []).append(golden)
    assert set(by_family) == {"qwen3", "mxbai-v2", "modernbert"}
    for family, cases in by_family.items():
        assert len({c["max_length"] for c in cases}) >= 2, family
        assert all(np.std(c["scores"]) > 0.5 for c in cases), family  # a wrong token or row would show
        assert all(len(c["input_ids"]) == len(PAIRS) == len(c["scores"]) for c in cases), family
        for c in cases:  # the package's fp32 run is its fp64 one, up to rounding
            np.testing.assert_allclose(c["scores"], c["scores_fp64"], atol=5e-5, rtol=0)
    for family in ("qwen3", "mxbai-v2"):
        assert any(c["instruction"] for c in by_family[family]), family
    for family in ("qwen3", "modernbert"):  # pairs cut to exactly max_length
        assert all(any(len(ids) == c["max_length"] for ids in c["input_ids"]) for c in by_family[family])
    # mxbai's template comes on top of max_length: its pairs cut to max_length share one length
    short = min(by_family["mxbai-v2"], key=lambda c: c["max_length"])
    longest = max(len(ids) for ids in short["input_ids"])
    assert longest > short["max_length"] and sum(len(ids) == longest for ids in short["input_ids"]) > 3


def test_token_ids_match_goldens(case):
    golden, model_dir = case
    ids = our_ids(golden, model_dir)
    mismatched = [i for i in agreeing(golden, model_dir) if ids[i] != golden["input_ids"][i]]
    assert not mismatched, f"pairs {mismatched} differ from {golden['scorer']}'s ids"


def test_token_ids_match_card_reference(case):
    golden, model_dir = case
    reference, ids = card_scores(golden, model_dir), our_ids(golden, model_dir)
    assert [ids[i] for i in agreeing(golden, model_dir)] == [
        reference.input_ids[i] for i in agreeing(golden, model_dir)
    ]


def test_where_the_card_cuts_the_qwen3_labels_ours_keeps_them_and_cuts_the_query(case):
    golden, model_dir = case
    cut = card_cut_the_labels(golden, model_dir)
    if golden["family"] != "qwen3":
        pytest.skip("only the Qwen3 card cuts its body's labels")
    if golden["max_length"] == 96:
        assert cut, "the short case must reach the deviation, or it tests nothing"
    tok, ids = TextTokenizer.load(model_dir), our_ids(golden, model_dir)
    suffix = tok.ids([family_named("qwen3").layout.suffix])[0]  # type: ignore[union-attr]
    for i in cut:
        text = tok.backend.decode(ids[i])
        assert len(ids[i]) == golden["max_length"] and ids[i][-len(suffix) :] == suffix
        assert "\n<Document>:" in text and "<Query>: " in text and text.count("<Instruct>: ") == 1
        # what the query kept is the start of the query: only its end was cut
        kept = text.split("<Query>: ", 1)[1].split("\n<Document>:", 1)[0]
        assert QUERIES[i].startswith(kept.rstrip()) and len(kept) < len(QUERIES[i])


def test_card_reference_matches_goldens(case):
    """The reference, written from the card, equals the publishers' packages: ids and scores."""
    golden, model_dir = case
    reference = card_scores(golden, model_dir)
    assert reference.input_ids == golden["input_ids"]
    np.testing.assert_allclose(reference.scores, golden["scores_fp64"], atol=TOLERANCE, rtol=0)
    if reference.probabilities is not None:  # the card's P(yes) is sigmoid(yes - no)
        sigmoid = 1 / (1 + np.exp(-np.array(reference.scores)))
        np.testing.assert_allclose(reference.probabilities, sigmoid, atol=1e-6, rtol=0)


@pytest.mark.parametrize("max_batch_tokens", [1024])  # several length-sorted micro-batches a case
def test_scores_match_card_reference_and_goldens(case, max_batch_tokens):
    golden, model_dir = case
    model = _model_config(golden, model_dir)
    encoded = load_pair_tokenizer(model_dir, model).encode(QUERIES, PASSAGES)
    reranker = Reranker.load(
        model_dir, "cpu", "float32", max_batch_tokens, kind=model.kind, family=golden["family"]
    )
    scores = reranker.score(encoded["input_ids"], encoded.get("token_type_ids")).scores
    assert scores.dtype == np.float32
    same = agreeing(golden, model_dir)
    np.testing.assert_allclose(scores[same], np.array(golden["scores_fp64"])[same], atol=TOLERANCE, rtol=0)
    if golden["family"] in WITH_CARD_REFERENCE:
        reference = card_scores(golden, model_dir)
        np.testing.assert_allclose(scores[same], np.array(reference.scores)[same], atol=TOLERANCE, rtol=0)
