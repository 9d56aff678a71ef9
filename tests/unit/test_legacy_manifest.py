"""An OUTPUT whose fingerprint predates `model_identity` is recognised, resumed, then upgraded."""

from __future__ import annotations

from pathlib import Path

from pipeline.io import ShardFile, Storage, join
from pipeline.rerank.output import checkpoint, legacy_manifest, paths
from pipeline.rerank.output.fingerprint import fingerprint_digest

STORAGE = Storage()
LEGACY = {"model": "/models/m", "max_length": 512}
FP = {**LEGACY, "model_identity": {"config": "c", "weights": "w"}}
SHARD = ShardFile("in/a.parquet", "a.parquet", 10, "mtime=1")


def legacy_output(tmp_path: Path) -> str:
    """What an earlier version left: manifest and one marker with the digest of LEGACY."""
    out = str(tmp_path / "out")
    checkpoint.prepare_output(STORAGE, out, LEGACY, fingerprint_digest(LEGACY), fresh=False)
    checkpoint.write_marker(STORAGE, out, SHARD, fingerprint_digest(LEGACY), {"rows_in": 1, "rows_out": 1})
    (tmp_path / "out" / "a.parquet").write_bytes(b"published")
    return out


def test_a_manifest_without_model_identity_of_the_same_config_is_legacy(tmp_path):
    out = legacy_output(tmp_path)
    assert legacy_manifest.legacy_fingerprint(STORAGE, out, FP) == LEGACY
    assert legacy_manifest.legacy_fingerprint(STORAGE, out, {**FP, "max_length": 256}) is None
    assert legacy_manifest.legacy_fingerprint(STORAGE, str(tmp_path / "new"), FP) is None


def test_upgrade_records_the_identity_so_a_changed_model_is_refused_from_then_on(tmp_path):
    out = legacy_output(tmp_path)
    digest = fingerprint_digest(FP)
    old = checkpoint.load_done(STORAGE, out, [SHARD], fingerprint_digest(LEGACY))
    done = legacy_manifest.upgraded_markers(old, digest)
    legacy_manifest.upgrade(STORAGE, out, done, FP, digest)

    manifest = STORAGE.read_json(join(out, paths.RUN_MANIFEST))
    assert manifest["digest"] == digest and manifest["fingerprint"] == FP
    assert manifest["upgraded_from"] == fingerprint_digest(LEGACY)
    assert set(checkpoint.load_done(STORAGE, out, [SHARD], digest)) == {"a.parquet"}
    assert legacy_manifest.legacy_fingerprint(STORAGE, out, FP) is None  # no longer legacy
    checkpoint.check_output(STORAGE, out, FP, digest, fresh=False)  # resumes
