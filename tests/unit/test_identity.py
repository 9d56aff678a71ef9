"""Model identity: what tells apart two models at the same path, URI or hub id."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import fsspec
import huggingface_hub
import pyarrow as pa
import pytest
import torch
from safetensors.torch import save_file

from pipeline.errors import OutputStateError
from pipeline.io import Storage, join
from pipeline.models.identity import UNKNOWN, model_identity, safetensors_header_digest
from pipeline.rerank import prepare as rerank_prepare
from pipeline.rerank.output import checkpoint
from pipeline.rerank.output.fingerprint import fingerprint, fingerprint_digest
from tests.helpers import MODELS, job

STORAGE = Storage()


def copy_of_tiny_bert(tmp_path: Path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(MODELS / "tiny-bert", target)
    return target


def test_a_directory_keeps_its_identity_until_its_files_change(tmp_path):
    model = copy_of_tiny_bert(tmp_path)
    first = model_identity(str(model), STORAGE)
    assert first == model_identity(str(model), STORAGE) == model_identity(f"file://{model}", STORAGE)

    (model / "README.md").write_text("notes")  # docs and hidden files do not make a model
    (model / ".cache").mkdir()
    (model / ".cache" / "x.lock").write_text("")
    assert model_identity(str(model), STORAGE) == first

    (model / "tokenizer_config.json").write_text((model / "tokenizer_config.json").read_text() + " ")
    changed = model_identity(str(model), STORAGE)
    assert changed["config"] != first["config"] and changed["weights"] == first["weights"]


def test_weights_written_again_change_the_identity(tmp_path):
    """A header hash alone cannot tell two trainings of one shape apart: size and mtime count too."""
    model = copy_of_tiny_bert(tmp_path)
    first = model_identity(str(model), STORAGE)
    weights = model / "model.safetensors"
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # rewritten: same layout, new mtime
    assert model_identity(str(model), STORAGE)["weights"] != first["weights"]


def test_safetensors_header_digest_tells_layouts_apart(tmp_path):
    save_file({"w": torch.zeros(2, 3)}, str(tmp_path / "a.safetensors"))
    save_file({"w": torch.ones(2, 3)}, str(tmp_path / "b.safetensors"))
    save_file({"w": torch.zeros(3, 3)}, str(tmp_path / "c.safetensors"))
    a, b, c = (safetensors_header_digest(tmp_path / f"{n}.safetensors") for n in "abc")
    assert a == b != c  # same names, dtypes and shapes: same header, whatever the values


def test_a_model_on_object_storage_is_identified_by_its_objects_versions():
    fs = fsspec.filesystem("memory")
    fs.pipe({"/models/m/config.json": b"{}", "/models/m/model.safetensors": b"12345"})
    first = model_identity("memory://models/m", STORAGE)
    fs.pipe({"/models/m/model.safetensors": b"123456"})  # new object (memory fs: its size is its tag)
    second = model_identity("memory://models/m", STORAGE)
    assert second["config"] == first["config"] and second["weights"] != first["weights"]
    fs.rm("/models", recursive=True)


def test_a_hub_id_is_identified_by_its_cached_revision(tmp_path, monkeypatch):
    repo = tmp_path / "models--org--reranker"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    (repo / "snapshots" / "0123abcd").mkdir(parents=True)
    (repo / "snapshots" / "0123abcd" / "config.json").write_text("{}")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    assert model_identity("org/reranker", STORAGE) == {"revision": "0123abcd"}
    assert model_identity("org/not-cached", STORAGE) == {"revision": UNKNOWN}


def test_the_fingerprint_carries_the_identity(tmp_path):
    cfg = job(tmp_path / "in", tmp_path / "out", str(MODELS / "tiny-bert"))
    a = fingerprint(cfg, "float32", {"config": "c", "weights": "w1"})
    b = fingerprint(cfg, "float32", {"config": "c", "weights": "w2"})
    assert a["model_identity"] == {"config": "c", "weights": "w1"}
    assert fingerprint_digest(a) != fingerprint_digest(b)
    assert "model_identity" not in fingerprint(cfg, "float32")


def prepared(cfg, monkeypatch):
    """Phase 1 of `rerank run` (pipeline.rerank.prepare) without Ray: a CPU node of 2 cores."""
    monkeypatch.setattr(rerank_prepare, "connect_ray", lambda *_: None)
    monkeypatch.setattr(rerank_prepare, "resolve_device", lambda _: "cpu")
    monkeypatch.setattr(rerank_prepare, "cpus_per_node", lambda: 2)
    monkeypatch.setattr(rerank_prepare, "node_resources", lambda: [{"CPU": 2.0}])
    return rerank_prepare.prepare(cfg)


def test_a_local_model_resumes_under_any_spelling_of_its_path(tmp_path, write_shards, monkeypatch):
    model = copy_of_tiny_bert(tmp_path)
    inp, out = write_shards(n_shards=1), tmp_path / "out"
    first = prepared(job(inp, out, str(model)), monkeypatch)  # a run made with --model /m
    checkpoint.claim_output(STORAGE, str(out), first.fingerprint, first.digest, False, first.output_files)
    (shard,) = first.shards
    STORAGE.write_parquet_atomic(join(str(out), shard.relpath), pa.table({"a": [1]}))
    checkpoint.write_marker(STORAGE, str(out), shard, first.digest, {"rows_in": 1})
    monkeypatch.chdir(tmp_path)
    for spelling in (str(model), f"{model}/", "./model", "model//", f"file://{model}"):
        again = prepared(job(inp, out, spelling), monkeypatch)
        assert set(again.done) == {shard.relpath} and again.digest == first.digest, spelling
        assert again.fingerprint["model"] == str(model)  # as OUTPUT recorded it
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "note": "retrained"}))
    with pytest.raises(OutputStateError, match="model_identity"):  # the same path, another model
        prepared(job(inp, out, f"{model}/"), monkeypatch)
