"""The run report and `rerank status` of a real run (the session's `finished_run`): the numbers
agree with `_SUCCESS`, the page renders in a real headless Chromium, with its plots."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest

from jobs.cli import main
from pipeline.rerank.output.paths import REPORT_HTML, REPORT_JSON

pytestmark = pytest.mark.integration

CHARTS = (
    "phases",
    "stage-busy",
    "pairs-per-s",
    "tokens-per-s",
    "node-pairs",
    "token-lengths",
    "scores-score",
)


def chromium() -> str:
    """The headless browser; a test may skip without one only outside CI (.ci/run installs it)."""
    found = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium not found, and CI is set: .ci/run installs the Debian package `chromium`")
        pytest.skip("chromium not installed (apt-get install chromium); CI runs this test")
    return found


def decode_png(data: bytes) -> np.ndarray:
    """8-bit RGB/RGBA, non-interlaced PNG (what Chromium writes) to a (height, width, channels)
    array: zlib and the five row filters, with no imaging library."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, [], None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
    assert header is not None
    width, height, depth, color, _, _, interlace = header
    assert depth == 8 and interlace == 0 and color in (2, 6), header
    bpp = 3 if color == 2 else 4
    raw, stride = zlib.decompress(b"".join(idat)), width * bpp
    out = np.zeros((height, stride), np.int64)
    prev = np.zeros(stride, np.int64)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = np.frombuffer(raw, np.uint8, stride, y * (stride + 1) + 1).astype(np.int64)
        if kind == 0:
            cur = line
        elif kind == 1:  # Sub: a running sum along each channel
            cur = np.cumsum(line.reshape(-1, bpp), axis=0).reshape(-1) % 256
        elif kind == 2:  # Up
            cur = (line + prev) % 256
        else:  # Average, Paeth: each byte needs the one before it
            up, lst, rec = prev.tolist(), line.tolist(), [0] * stride
            for x in range(stride):
                a, b = (rec[x - bpp] if x >= bpp else 0), up[x]
                if kind == 3:
                    rec[x] = (lst[x] + (a + b) // 2) & 255
                    continue
                c = up[x - bpp] if x >= bpp else 0
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                rec[x] = (lst[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
            cur = np.array(rec, np.int64)
        out[y], prev = cur, cur
    return out.reshape(height, width, bpp)


def test_the_run_writes_a_report_whose_numbers_agree_with_success(finished_run):
    out = finished_run["output"]
    data = json.loads((out / REPORT_JSON).read_text())
    success = json.loads((out / "_SUCCESS").read_text())
    totals = success["totals"]
    assert data["outcome"] == "complete" and data["shards"] == {
        "total": 3,
        "skipped": 0,
        "published": 3,
        "failed": 0,
    }
    assert data["rows"]["rows_out"] == totals["rows_out"] == 3 * 4 * 6 - 1
    assert data["rejects"] == {"empty passage": 1} and data["rows"]["rows_rejected"] == 1
    scored = sum(a["pairs"] for a in data["actors"].values())
    assert scored == data["summary"]["pairs_scored"] == data["scores"]["score"]["count"] == 71
    assert data["token_lengths"]["tokens"]["count"] == 71
    assert sum(a["tokens"] for a in data["actors"].values()) == totals["tokens"]
    tp = data["throughput"]
    assert sum(tp["pairs_per_s"]) * tp["bin_s"] == pytest.approx(71, rel=1e-3)
    p = data["phases"]
    assert (
        0 < p["planning_s"] <= p["first_call_s"] <= p["first_scored_s"] <= p["last_call_end_s"] <= p["wall_s"]
    )
    assert data["stage_busy_s"]["score"] > 0 and data["stage_busy_s"]["tokenize"] is not None
    assert data["stage_busy_s"]["publish"] is not None
    assert data["digest"] == success["digest"] and data["fingerprint"] == success["fingerprint"]
    assert "SUPERSECRET" not in (out / REPORT_JSON).read_text() + (out / REPORT_HTML).read_text()


@pytest.mark.timeout(240)
def test_the_report_renders_in_headless_chromium_with_its_plots(finished_run, tmp_path):
    browser = chromium()
    page = (finished_run["output"] / REPORT_HTML).as_uri()
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    flags += [f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1000,1400"]
    shot = tmp_path / "report.png"
    # one start of the browser: the screenshot is written, the DOM after load goes to stdout
    run = subprocess.run(
        [*flags, f"--screenshot={shot}", "--dump-dom", page], capture_output=True, timeout=120
    )
    assert shot.exists(), run.stderr.decode()[-2000:]
    pixels = decode_png(shot.read_bytes())[..., :3]
    assert pixels.shape[:2] == (1400, 1000)
    assert pixels.std() > 10  # not a blank page
    assert (pixels.min(axis=2) < 200).mean() > 0.02  # text and plots drawn, not a white page
    dom = run.stdout.decode()
    charts = set(re.findall(r'<svg class="chart" data-chart="([^"]+)"', dom))
    assert set(CHARTS) <= charts, charts
    assert len(re.findall(r'<polyline class="series"', dom)) >= 3  # throughput lines
    assert len(re.findall(r'<rect class="bar"', dom)) >= 10  # histogram and work bars


def test_status_of_the_real_run(finished_run, capsys):
    out, inp = str(finished_run["output"]), str(finished_run["input"])
    assert main(["status", out, "--input", inp, "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    success = json.loads(Path(out, "_SUCCESS").read_text())
    assert s["state"] == "complete" and s["shards_done"] == s["shards_total"] == 3 and s["pending"] == []
    assert s["rows"] == {k: success["totals"][k] for k in s["rows"]}
    assert s["model"].endswith("tiny-bert") and s["dtype"] == "float32" and s["digest"] == success["digest"]
    assert s["last_run"]["outcome"] == "complete" and s["lease"] is None
    assert s["report"] == f"{out}/{REPORT_HTML}"
    assert main(["status", out]) == 0
    assert "3 of 3 done, 0 pending" in capsys.readouterr().out
