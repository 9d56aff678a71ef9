"""What OUTPUT holds, in one place. Every module that reads or writes OUTPUT takes its names here.

OUTPUT/<relpath>.parquet              output shard, published atomically
OUTPUT/_rejected/<relpath>.parquet    quarantined rows of that shard, with `reject_reason`
OUTPUT/_rerank/run.json               the run's config fingerprint, written before any shard
OUTPUT/_rerank/lease.json             one run per OUTPUT (pipeline/rerank/output/lease.py); survives --fresh
OUTPUT/_rerank/done/<relpath>.json    done-marker, written after its shard is published
OUTPUT/_rerank/shards.json            every input shard the last run saw (relpath, size, version)
OUTPUT/_rerank/report.json, .html     the run report (pipeline/rerank/report/run_report.py)
OUTPUT/_rerank/scores/<relpath>.parquet  the shard's score store (pipeline/rerank/reuse/store.py),
                                      written before its done-marker
OUTPUT/_rerank/reuse/                 scratch of a --reuse lookup: a shard's reused scores, removed
                                      when the run ends (pipeline/rerank/reuse/lookup.py)
OUTPUT/_changes/<relpath>.parquet     --diff-against: the shard's rows added, removed, reranked or
                                      rescored since the earlier run (pipeline/rerank/compare/)
OUTPUT/_rerank/quality/<relpath>.parquet  --qrels: the shard's judged queries' figures
OUTPUT/_rerank/quality.parquet, .json every judged query's figures; the summary and the gate's verdict
OUTPUT/_SUCCESS                       manifest, written last, once every shard is done (and the
                                      quality gate, if any, passed)
"""

from __future__ import annotations

OWN = "_rerank/"  # everything of ours but the data shards, _rejected/ and _SUCCESS lives under it
RUN_MANIFEST = "_rerank/run.json"
LEASE = "_rerank/lease.json"
MARKERS = "_rerank/done"
SHARD_LIST = "_rerank/shards.json"
REPORT_JSON = "_rerank/report.json"
REPORT_HTML = "_rerank/report.html"
SCORES = "_rerank/scores"
REUSE = "_rerank/reuse"
CHANGES = "_changes"
QUALITY_PIECES = "_rerank/quality"
QUALITY_TABLE = "_rerank/quality.parquet"
QUALITY_JSON = "_rerank/quality.json"
SUCCESS = "_SUCCESS"
REJECTED = "_rejected"
# the row accounting of every done-marker: rows_in = rows_out + rows_rejected + rows_dropped_top_k
ROW_COUNTS = ("rows_in", "rows_out", "rows_rejected", "rows_dropped_top_k")
# counts only some done-markers hold (chunk mode's windows; pairs scored, reused and stored, the score
# store's bytes), summed in `_SUCCESS`'s totals where any marker holds them
OPTIONAL_COUNTS = (
    "windows_scored",
    "windows_not_scored",
    "pairs_scored",
    "pairs_reused",
    "pairs_stored",
    "store_bytes",
)
