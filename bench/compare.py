"""The cost of comparing a run with an earlier one (`--diff-against OUT1`, `--qrels`): plain vs compared.

    python bench/compare.py                                     # 1,000,000 short pairs, tiny BERT, 10 shards
    python bench/compare.py --pairs 20000 --repeat 1            # a quick run
    python bench/compare.py --repeat 3 --json out.json --check  # each row 3 times; exit 1 on a missed target
    python bench/compare.py --model-kind demo                   # 20,000 pairs, demo MiniLM-L6, 4 shards

Setup, as bench/incremental.py's: night 1 is a generated corpus (seeded), scored once by
`rerank run IN1 OUT1`; night 2 is the same corpus with, drawn from `--seed`, 5 % of the passages
edited, 3 % new pairs, 2 % of the pairs removed and 10 % of the queries moved to another shard. A
TREC qrels file judges 1,000 of night 2's queries (or all, if fewer): 1-3 of each query's candidates,
grades 1-2, drawn from the seed. Three rows, each run `--repeat` times (interleaved) into a fresh
OUTPUT, every run a `rerank run` subprocess timed from outside:
  plain       `rerank run IN2 OUT2 --model M`: night 2, no comparison
  diff        the same with `--diff-against OUT1`: a change file per output shard
              (OUT2/_changes/<relpath>.parquet) and the ranking drift in `_SUCCESS`
  diff+qrels  also `--qrels QRELS`: nDCG@10, MRR@10, Recall@100 on the judged queries
Figures per run, from the wall clock and the run's `_SUCCESS`: wall (the whole subprocess, Ray
start included), the driver's peak RSS (`last_run.driver_peak_rss_mib`), scoring-actor busy seconds
(`last_run.scoring_busy_s`), the change counts (`changes.totals`: added, removed, reranked,
rescored), the queries the drift covers (`drift.queries`), the judged queries and their reranked
nDCG@10 (`quality`); load1 after each run shows when other processes shared the cores.
From the medians: the extra wall of `diff` over `plain` (seconds, share of plain's wall, seconds per
million night-2 rows), the same for `diff+qrels`, and the driver peak RSS diff/plain.
Targets (the issue's, stated at 1,000,000 pairs with the scale model): the extra wall of `diff` <=
5 % of plain's wall; the driver's memory unchanged in order (diff/plain peak RSS < 2). A missed target
prints FAIL and fails the exit code only with `--check`. Correctness, checked after every run (a
failure always exits 1): a compared run's change counts sum to more than 0, added == night 2's new
pairs and removed == its removed pairs exactly (moved queries are paired across shards), every output
shard has its change file and `changes.files` names each; a plain run has no `_changes/`; with
`--qrels`, every judged query is in `quality`. At small `--pairs` Ray's start dominates the wall, so
the wall share there says little; the driver RSS is taken after the run's end-of-run comparison
step (pipeline/rerank/runner.py, finalize), so it covers the driver's whole run. Linux carries a
process's peak RSS (ru_maxrss) across fork and exec into the `rerank run` it starts, so the setup
runs in a child process and this one stays small (its own peak is printed; a driver figure at or
under it is not the driver's, and the RSS check fails).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import resource
import shutil
import sys
import tempfile
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.incremental import KINDS, cell, median_row, prepare  # noqa: E402
from bench.scale import timed_run  # noqa: E402
from pipeline.demo.corpus import shard_path  # noqa: E402
from pipeline.rerank.output.paths import CHANGES  # noqa: E402

JUDGED = 1_000  # queries the qrels judge
TARGET_EXTRA_WALL = 0.05  # (diff - plain) / plain, medians of wall
TARGET_RSS = 2.0  # diff / plain, medians of the driver's peak RSS: the same order
CHANGE_KINDS = ("added", "removed", "reranked", "rescored")
ROWS = ("plain", "diff", "diff+qrels")


def write_qrels(in_dir: Path, shards: int, path: Path, judged: int, seed: int) -> int:
    """A TREC qrels file (`qid 0 docid rel`) judging `judged` of the queries in `in_dir` (all if
    fewer): 1-3 of each one's candidates, grades 1-2, drawn from `seed`. Returns the judged queries."""
    candidates: dict[str, set[str]] = defaultdict(set)
    for s in range(shards):
        t = pq.read_table(shard_path(in_dir, s), columns=["query_id", "doc_id"])
        for q, d in zip(t.column("query_id").to_pylist(), t.column("doc_id").to_pylist(), strict=True):
            candidates[str(q)].add(str(d))
    rng = random.Random(seed)
    queries = sorted(rng.sample(sorted(candidates), min(judged, len(candidates))))
    lines = []
    for q in queries:
        docs = sorted(candidates[q])
        for d in sorted(rng.sample(docs, min(len(docs), rng.randint(1, 3)))):
            lines.append(f"{q} 0 {d} {rng.randint(1, 2)}\n")
    path.write_text("".join(lines))
    return len(queries)


def problems_of(name: str, output: Path, manifest: dict[str, Any], expect: dict[str, int]) -> list[str]:
    """What is wrong with a run's comparison output (empty: nothing)."""
    found = []
    changes, changes_dir = manifest.get("changes"), output / CHANGES
    if name == "plain":
        if changes is not None or changes_dir.exists():
            found.append("a plain run has `changes` in _SUCCESS or an OUTPUT/_changes/ folder")
        return found
    if changes is None or "drift" not in manifest:
        return [*found, "no `changes` or `drift` in _SUCCESS"]
    totals = changes["totals"]
    if sum(totals.get(k, 0) for k in CHANGE_KINDS) <= 0:
        found.append(f"no changes at all: {totals}")
    for kind in ("added", "removed"):
        if totals.get(kind) != expect[kind]:
            found.append(f"{kind} {totals.get(kind)} != night 2's {expect[kind]}")
    shards = [s["path"] for s in manifest["shards"]]
    missing = [p for p in shards if not (changes_dir / p).is_file()]
    if missing:
        found.append(f"{len(missing)} of {len(shards)} shards have no change file, e.g. {missing[:3]}")
    listed = {f["path"] for f in changes["files"]}
    if not set(shards) <= listed:
        found.append(f"changes.files misses shards: {sorted(set(shards) - listed)[:3]}")
    if not manifest["drift"].get("queries"):
        found.append("drift covers no query")
    if name == "diff+qrels":
        judged = (manifest.get("quality") or {}).get("queries")
        if judged != expect["judged"]:
            found.append(f"quality covers {judged} queries, not the {expect['judged']} judged")
    return found


def run_once(
    name: str, rep: int, in_dir: Path, output: Path, model: Path, flags: list[str], expect: dict[str, int]
) -> dict[str, Any]:
    """One `rerank run` into a fresh OUTPUT, timed from outside, its figures and its problems."""
    if output.exists():
        shutil.rmtree(output)
    wall, manifest = timed_run(in_dir, output, model, flags)
    run = manifest["last_run"]
    totals = (manifest.get("changes") or {}).get("totals") or {}
    quality = manifest.get("quality") or {}
    problems = problems_of(name, output, manifest, expect) if expect else []
    row = {
        "row": name,
        "run": rep,
        "wall_s": round(wall, 1),
        "driver_peak_rss_mib": run.get("driver_peak_rss_mib"),
        "scoring_busy_s": run.get("scoring_busy_s") or 0.0,
        "rows_in": manifest.get("totals", {}).get("rows_in"),
        **{k: totals.get(k) for k in CHANGE_KINDS},
        "drift_queries": (manifest.get("drift") or {}).get("queries"),
        "judged_queries": quality.get("queries"),
        "ndcg10_first_stage": (quality.get("first_stage") or {}).get("ndcg10"),
        "ndcg10_reranked": (quality.get("reranked") or {}).get("ndcg10"),
        "load1": round(os.getloadavg()[0], 2),
        "problems": problems,
    }
    print(
        f"  {name} run {rep}: wall {row['wall_s']} s, driver RSS {row['driver_peak_rss_mib']} MiB, "
        f"load1 {row['load1']}" + "".join(f"\n  FAIL {p}" for p in problems),
        flush=True,
    )
    return row


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def ratios(medians: dict[str, dict[str, Any]], pairs2: int) -> dict[str, Any]:
    """From the rows' medians: each compared row's extra wall over plain, and driver RSS diff/plain."""
    plain = medians["plain"]
    out: dict[str, Any] = {}
    for name in ROWS[1:]:
        extra = medians[name]["wall_s"] - plain["wall_s"]
        out[name] = {
            "extra_wall_s": round(extra, 2),
            "extra_wall_share": round(extra / plain["wall_s"], 4),
            "extra_wall_s_per_m_rows": round(extra / pairs2 * 1e6, 2),
        }
    rss_plain, rss_diff = plain.get("driver_peak_rss_mib"), medians["diff"].get("driver_peak_rss_mib")
    out["driver_rss_diff_over_plain"] = round(rss_diff / rss_plain, 3) if rss_plain and rss_diff else None
    return out


def checks(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets against the figures, and the correctness found after each run."""
    share = result["ratios"]["diff"]["extra_wall_share"]
    rss = result["ratios"]["driver_rss_diff_over_plain"]
    drivers = [r["driver_peak_rss_mib"] or 0.0 for r in result["rows"] if r["row"] in ROWS]
    inherited = min(drivers) <= result["bench_peak_rss_mib"]  # see own_peak_rss_mib
    problems = [f"{r['row']} run {r['run']}: {p}" for r in result["rows"] for p in r.get("problems", [])]
    return [
        {
            "check": f"extra wall of diff over plain <= {TARGET_EXTRA_WALL:.0%} of plain's wall",
            "value": share,
            "result": verdict(share <= TARGET_EXTRA_WALL),
            "kind": "target",
        },
        {
            "check": f"driver peak RSS diff/plain < {TARGET_RSS} (same order)",
            "value": f"{rss}, but a driver peak is at or under this process's own: not the driver's"
            if inherited
            else rss,
            "result": verdict(rss is not None and rss < TARGET_RSS and not inherited),
            "kind": "target",
        },
        {
            "check": "change files, counts, drift and quality right after every run",
            "value": problems or "ok",
            "result": verdict(not problems),
            "kind": "correctness",
        },
    ]


TABLE = [
    ("row", "row", 10),
    ("run", "run", 6),
    ("wall s", "wall_s", 8),
    ("RSS MiB", "driver_peak_rss_mib", 8),
    ("busy s", "scoring_busy_s", 8),
    ("added", "added", 8),
    ("removed", "removed", 8),
    ("reranked", "reranked", 8),
    ("rescored", "rescored", 8),
    ("drift q", "drift_queries", 8),
    ("judged", "judged_queries", 6),
    ("nDCG fs", "ndcg10_first_stage", 7),
    ("nDCG rr", "ndcg10_reranked", 7),
    ("load1", "load1", 6),
]


def print_report(result: dict[str, Any]) -> None:
    c, r = result["night2"], result
    print(f"{os.cpu_count()} cores; {r['about']}; work {r['work']}")
    print(
        f"night 1: {r['pairs1']:,} pairs in {r['shards']} shards; night 2: {r['pairs2']:,} pairs "
        f"({c['edited']:,} edited, {c['new']:,} new, {c['removed']:,} removed, "
        f"{c['queries_moved']:,} of {c['queries']:,} queries moved); qrels judge {r['judged']:,} queries"
    )
    print(" | ".join(f"{h:>{w}}" for h, _, w in TABLE))
    for row in result["rows"]:
        print(" | ".join(cell(row.get(k), w) for _, k, w in TABLE))
    for name in ROWS[1:]:
        x = result["ratios"][name]
        print(
            f"{name} - plain (medians): {x['extra_wall_s']:+.2f} s wall, {x['extra_wall_share']:+.1%} of "
            f"plain's wall, {x['extra_wall_s_per_m_rows']:+.2f} s per million rows"
        )
    print(
        f"driver peak RSS diff/plain (medians): {result['ratios']['driver_rss_diff_over_plain']} "
        f"(this process's own peak: {result['bench_peak_rss_mib']} MiB)"
    )
    for check in result["checks"]:
        print(f"{check['result']}  {check['check']}: {check['value']}")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-kind", choices=sorted(KINDS), default="scale")
    ap.add_argument("--pairs", type=int, help="night 1's pairs (default: scale 1,000,000, demo 20,000)")
    ap.add_argument("--shards", type=int, help="shards of each night (default: scale 10, demo 4)")
    ap.add_argument("--repeat", type=int, default=2, help="runs of each night-2 row (median reported)")
    ap.add_argument("--seed", type=int, default=0, help="the corpus, night 2's changes and the qrels")
    ap.add_argument("--workdir", help="default: a new temp directory")
    ap.add_argument("--json", help="also write the JSON result to this file")
    ap.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = ap.parse_args()
    kind = KINDS[args.model_kind]
    args.pairs = args.pairs or kind["pairs"]
    args.shards = args.shards or kind["shards"]
    if args.shards < 2 or args.repeat < 1:
        ap.error("--shards must be at least 2 (queries move between shards) and --repeat at least 1")
    return args


def setup(args: argparse.Namespace, work: Path) -> tuple[Path, dict[str, int], int]:
    """The model, both nights' inputs and the qrels; returns the model, night 2's changes and the
    judged queries. Run in a child process (`run_all`): see `own_peak_rss_mib`."""
    model = KINDS[args.model_kind]["model"](work / f"model-{args.model_kind}")
    counts, _ = prepare(args, work)  # night 1 in IN1, night 2 in IN2
    judged = write_qrels(work / "in2", args.shards, work / "qrels.txt", JUDGED, args.seed + 2)
    return model, counts, judged


def own_peak_rss_mib() -> float:
    """This process's peak RSS. Linux carries ru_maxrss across fork and exec, so a `rerank run`
    this process starts reports as its driver peak at least this much: the setup (1,000,000 pairs as
    Python rows, torch for the model) runs in a child process so that this figure stays small."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def run_all(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    kind = KINDS[args.model_kind]
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        model, counts, judged = pool.submit(setup, args, work).result()
    expect = {"added": counts["new"], "removed": counts["removed"], "judged": judged}
    flags = kind["flags"]
    print(f"night 1: {counts['pairs1']:,} pairs; night 2: {counts['pairs2']:,}; scoring night 1", flush=True)
    rows = [run_once("night1", 0, work / "in1", work / "out1", model, flags, {})]
    row_flags = {
        "plain": flags,
        "diff": [*flags, "--diff-against", str(work / "out1")],
        "diff+qrels": [*flags, "--diff-against", str(work / "out1"), "--qrels", str(work / "qrels.txt")],
    }
    runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for rep in range(1, args.repeat + 1):  # interleaved, so a spell of load hits every row
        for name in ROWS:
            output = work / f"out2-{name.replace('+', '-')}"
            runs[name].append(run_once(name, rep, work / "in2", output, model, row_flags[name], expect))
    medians = {}
    for name in ROWS:
        medians[name] = median_row(runs[name])
        rows += [*runs[name], medians[name]]
    pairs2 = counts.pop("pairs2")
    result = {
        "model_kind": args.model_kind,
        "about": kind["about"],
        "work": str(work),
        "shards": args.shards,
        "seed": args.seed,
        "repeat": args.repeat,
        "pairs1": counts.pop("pairs1"),
        "pairs2": pairs2,
        "night2": counts,
        "judged": judged,
        "bench_peak_rss_mib": own_peak_rss_mib(),
        "rows": rows,
        "ratios": ratios(medians, pairs2),
    }
    result["checks"] = checks(result)
    return result


def main() -> int:
    args = parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="rerank-bench-compare-"))
    work.mkdir(parents=True, exist_ok=True)
    result = run_all(args, work)
    print_report(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
    failed = {c["kind"] for c in result["checks"] if c["result"] != "PASS"}
    return 1 if "correctness" in failed or (args.check and "target" in failed) else 0


if __name__ == "__main__":
    sys.exit(main())
