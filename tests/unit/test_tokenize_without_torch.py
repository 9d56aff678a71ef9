"""The tokenize stage runs on tokenizer.json alone: no torch or transformers import, the same ids.

The pair tokenizers' ids against FlagEmbedding are test_parity.py's and test_decoder_parity.py's;
here: the stage stays light, and tokenizer_config.json settings apply as transformers applies them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tokenizers import Tokenizer

from pipeline.config import ModelConfig
from pipeline.errors import ModelLoadError
from pipeline.models.hf_config import read_model_config
from pipeline.models.kinds import load_pair_tokenizer
from pipeline.models.pair_tokenizer import PairTokenizer
from pipeline.models.text_tokenizer import TextTokenizer

ROOT = Path(__file__).resolve().parents[2]
QUERIES = ["what is kalo", "Café NAÏVE", "mi", "zo pe dre " * 30]
PASSAGES = ["kalo is a sunra of the velon.", "Ünïcödé — 🙂", "a short one", "ra vel " * 200]

STAGE_SCRIPT = """
import json, sys
import pyarrow as pa
from pipeline.config import ModelConfig
from pipeline.io import Storage
from pipeline.rerank.config import InputConfig
from pipeline.rerank.stages.tokenize import TokenizeShard

shard, models = sys.argv[1], sys.argv[2:]
ids = {}
for model in models:
    config = ModelConfig(name_or_path=model, max_length=64)  # kind auto: read from config.json
    stage = TokenizeShard(config, InputConfig(uri="unused"), Storage())
    rows = pa.concat_tables(stage.tokenize(0, shard)).sort_by("row")
    assert rows.column("error").null_count == rows.num_rows, rows.column("error")
    ids[model] = rows.column("input_ids").to_pylist()
print(json.dumps({"ids": ids, "loaded": sorted({"torch", "transformers"} & set(sys.modules))}))
"""


def test_tokenize_stage_imports_neither_torch_nor_transformers(tmp_path, tiny_bert, tiny_gemma):
    shard = tmp_path / "part-0.parquet"
    pq.write_table(
        pa.table({"query_id": [f"q{i}" for i in range(len(QUERIES))], "query": QUERIES, "passage": PASSAGES}),
        shard,
    )
    run = subprocess.run(
        [sys.executable, "-c", STAGE_SCRIPT, str(shard), tiny_bert, tiny_gemma],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.splitlines()[-1])
    assert result["loaded"] == []
    for model in (tiny_bert, tiny_gemma):  # the same ids as the pair tokenizers give in this process
        tokenizer = load_pair_tokenizer(model, ModelConfig(name_or_path=model, max_length=64))
        assert result["ids"][model] == tokenizer.encode(QUERIES, PASSAGES)["input_ids"].to_pylist()
    assert {len(x) for x in result["ids"][tiny_bert]} >= {64}  # long pairs were cut to max_length


HUB_SCRIPT = """
import json, sys
from pipeline.models.pair_tokenizer import PairTokenizer
encoded = PairTokenizer.load(sys.argv[1], 64, 48).encode(json.loads(sys.argv[2]), json.loads(sys.argv[3]))
loaded = sorted({"torch", "transformers"} & set(sys.modules))
print(json.dumps({"ids": encoded["input_ids"].to_pylist(), "loaded": loaded}))
"""


def test_a_hub_id_loads_from_the_hub_cache_like_its_directory(tmp_path, tiny_bert):
    """A hub id goes through huggingface_hub (here: its offline cache), still without transformers."""
    snapshot = tmp_path / "hub" / "models--org--tiny-bert" / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    (tmp_path / "hub" / "models--org--tiny-bert" / "refs").mkdir()
    (tmp_path / "hub" / "models--org--tiny-bert" / "refs" / "main").write_text("0123abc")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(Path(tiny_bert) / name, snapshot / name)
    run = subprocess.run(
        [sys.executable, "-c", HUB_SCRIPT, "org/tiny-bert", json.dumps(QUERIES), json.dumps(PASSAGES)],
        cwd=ROOT,
        env=os.environ | {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.splitlines()[-1])
    assert result["loaded"] == []
    local = PairTokenizer.load(tiny_bert, 64, 48).encode(QUERIES, PASSAGES)
    assert result["ids"] == local["input_ids"].to_pylist()


def _copy(model: str, tmp_path: Path) -> Path:
    target = tmp_path / Path(model).name
    shutil.copytree(model, target)
    return target


def _edit_json(path: Path, **changes: object) -> None:
    path.write_text(json.dumps(json.loads(path.read_text()) | changes))


def test_a_model_without_tokenizer_json_names_the_fix(tmp_path, tiny_bert):
    model = _copy(tiny_bert, tmp_path)
    (model / "tokenizer.json").unlink()
    with pytest.raises(ModelLoadError, match=r"has no tokenizer.json; offline-rerank needs a tokenizer.json"):
        PairTokenizer.load(str(model), 64, 48)


def test_a_path_that_is_not_a_directory_is_a_clear_error(tmp_path):
    missing = str(tmp_path / "no-such-model")
    with pytest.raises(ModelLoadError, match="is not a directory; pass a local model directory"):
        PairTokenizer.load(missing, 64, 48)
    with pytest.raises(ModelLoadError, match="is not a directory"):
        read_model_config(missing)
    with pytest.raises(ModelLoadError, match="is not a directory"):  # not an "org/name" hub id
        PairTokenizer.load("models/rerankers/nope", 64, 48)
    with pytest.raises(ModelLoadError, match="has no config.json"):
        read_model_config(str(tmp_path))


def test_truncation_and_padding_saved_in_tokenizer_json_are_ignored(tmp_path, tiny_bert):
    model = _copy(tiny_bert, tmp_path)
    saved = Tokenizer.from_file(str(model / "tokenizer.json"))
    saved.enable_truncation(8)
    saved.enable_padding(length=300)
    saved.save(str(model / "tokenizer.json"))
    expected = PairTokenizer.load(tiny_bert, 128, 96).encode(QUERIES, PASSAGES)
    got = PairTokenizer.load(str(model), 128, 96).encode(QUERIES, PASSAGES)
    assert got["input_ids"].to_pylist() == expected["input_ids"].to_pylist()
    assert got["token_type_ids"].to_pylist() == expected["token_type_ids"].to_pylist()


@pytest.mark.parametrize(
    "changes",
    [
        {"truncation_side": "left"},
        {"do_lower_case": False},  # BERT's class writes it over the saved normalizer
        {"do_lower_case": False, "strip_accents": False},
    ],
)
def test_tokenizer_config_settings_apply_as_in_transformers(tmp_path, tiny_bert, changes):
    from transformers import AutoTokenizer

    model = _copy(tiny_bert, tmp_path)
    _edit_json(model / "tokenizer_config.json", **changes)
    texts = [*QUERIES, *PASSAGES]
    hf = AutoTokenizer.from_pretrained(model)(texts, add_special_tokens=False, truncation=True, max_length=6)
    assert TextTokenizer.load(str(model)).ids(texts, 6) == hf["input_ids"]
    assert TextTokenizer.load(str(model)).ids(texts, 6) != TextTokenizer.load(tiny_bert).ids(texts, 6)


def test_model_input_names_in_tokenizer_config_turn_token_types_off(tmp_path, tiny_bert):
    model = _copy(tiny_bert, tmp_path)
    assert PairTokenizer.load(str(model), 64, 48).uses_token_types
    _edit_json(model / "tokenizer_config.json", model_input_names=["input_ids", "attention_mask"])
    assert "token_type_ids" not in PairTokenizer.load(str(model), 64, 48).encode(QUERIES, PASSAGES)


def test_save_pretrained_copies_the_tokenizer_as_saved(tmp_path, tiny_xlmr):
    """The fine-tuned model is published with its base's tokenizer files, byte for byte."""
    tokenizer = TextTokenizer.load(tiny_xlmr)
    tokenizer.save_pretrained(str(tmp_path / "published"))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert (tmp_path / "published" / name).read_bytes() == (Path(tiny_xlmr) / name).read_bytes()
    published = TextTokenizer.load(str(tmp_path / "published"))
    published.save_pretrained(str(tmp_path / "published"))  # over its own files: no error
    assert published.ids(QUERIES) == tokenizer.ids(QUERIES)


DRIVER_SCRIPT = """
import json, sys
from jobs.cli import build_parser
from pipeline.models.kinds import check_model, load_pair_tokenizer, with_family
from pipeline.config import ModelConfig
from pipeline.rerank.build import build  # the plan names the scoring stage's class

build_parser().format_help()
model = with_family(sys.argv[1], ModelConfig(name_or_path=sys.argv[1], max_length=64))
check_model(sys.argv[1], model)  # the driver's model checks, before Ray
load_pair_tokenizer(sys.argv[1], model)
print(json.dumps({"loaded": sorted({"torch", "transformers"} & set(sys.modules))}))
"""


def test_the_driver_and_the_cli_need_neither_torch_nor_transformers():
    """`rerank --help`, `rerank status` and a run's driver (its checks and the plan) start in a
    second or two; torch and transformers (seconds to import) load only in the scoring actors."""
    tiny_bert = str(ROOT / "tests" / "assets" / "models" / "tiny-bert")
    done = subprocess.run(
        [sys.executable, "-c", DRIVER_SCRIPT, tiny_bert],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.splitlines()[-1])["loaded"] == []
