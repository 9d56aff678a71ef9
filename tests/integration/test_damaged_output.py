"""Damaged bookkeeping files in a finished OUTPUT (an interrupted copy, a full disk, an edit):
`rerank run`, `rerank run --fresh` and `rerank status` never exit 4 on them; a rerun repairs every
one but run.json, which is exit 2 naming it and --fresh (docs/output.md#damaged-bookkeeping-files)."""

from __future__ import annotations

import json

import pytest

from jobs.cli import main
from pipeline.io import Storage, join
from pipeline.rerank.output import paths

pytestmark = pytest.mark.integration

STORAGE = Storage()


def status(capsys, out) -> tuple[int, dict]:
    code = main(["status", str(out), "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_a_rerun_repairs_damaged_bookkeeping_and_redoes_only_the_damaged_marker(
    finished_copy, capsys, caplog
):
    args, out = finished_copy["args"], finished_copy["output"]
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")}
    damaged = {
        paths.LEASE: b"",
        f"{paths.MARKERS}/part-1.parquet.json": b'{"shard": "part-1.parq',
        paths.SUCCESS: b'{"shards": [',
        paths.REPORT_JSON: b"",
        paths.SHARD_LIST: b"\x00\x00",
    }
    for relpath, data in damaged.items():
        (out / relpath).write_bytes(data)
    code, s = status(capsys, out)
    assert code == 1 and sorted(s["damaged"]) == sorted(join(str(out), r) for r in damaged)

    caplog.clear()
    assert main(args) == 0
    assert f"{out / paths.LEASE} is damaged" in caplog.text and "taking it over" in caplog.text
    again = {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")}
    assert [name for name in stamps if again[name] != stamps[name]] == ["part-1.parquet"]
    for relpath in (
        paths.SUCCESS,
        f"{paths.MARKERS}/part-1.parquet.json",
        paths.SHARD_LIST,
        paths.REPORT_JSON,
    ):
        assert STORAGE.read_json(join(str(out), relpath))  # whole again (the report: part-1 was scored)
    code, s = status(capsys, out)
    assert code == 0 and s["state"] == "complete" and not s["damaged"]


def test_a_damaged_run_manifest_is_exit_2_naming_it_and_fresh_starts_over(finished_copy, capsys, caplog):
    args, out = finished_copy["args"], finished_copy["output"]
    (out / paths.RUN_MANIFEST).write_bytes(b'{"digest": "3f')
    (out / paths.SUCCESS).write_bytes(b"")
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    caplog.clear()
    assert main(args) == 2
    assert str(out / paths.RUN_MANIFEST) in caplog.text and "--fresh" in caplog.text
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == stamps  # nothing written
    assert status(capsys, out)[0] == 1

    assert main([*args, "--fresh"]) == 0
    code, s = status(capsys, out)
    assert code == 0 and s["state"] == "complete" and not s["damaged"]
