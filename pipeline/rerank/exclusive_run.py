"""One run per OUTPUT: `rerank run` and `rerank nightly` run the job under OUTPUT's lease
(`OUTPUT/_rerank/lease.json`, `output/lease.py`), stopped at a safe point by SIGINT/SIGTERM."""

from __future__ import annotations

from pipeline.rerank.config import JobConfig
from pipeline.rerank.output.lease import RunLease
from pipeline.rerank.prepare import check_locations
from pipeline.rerank.runner import RunReport, run
from pipeline.rerank.stop import handling_signals, stop_when


def run_exclusively(cfg: JobConfig) -> RunReport:
    """`run(cfg)` as the one run of its OUTPUT: under OUTPUT's lease (LeaseHeldError while another
    live run holds it), stopped at a safe point by SIGINT/SIGTERM, and at once if the lease is lost.
    INPUT/OUTPUT overlapping or OUTPUT's storage unusable is a RerankError before the lease write
    creates anything there; those checks are not repeated after it."""
    storage = check_locations(cfg)
    with (
        handling_signals(),  # first: a signal while the lease is taken still releases it
        RunLease(storage, cfg.output.uri, ttl_s=cfg.output.lease_ttl_s) as lease,
        stop_when(lease.lost),
    ):
        return run(cfg, lease.claim, storage)
