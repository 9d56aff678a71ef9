"""What the job's processes print: shared by `rerank run` and `rerank finetune`.

The console is quiet by default: the libraries' own warnings, load reports and progress bars are
off in the driver and in every Ray worker process of the job (environment variables read before
Ray or a library starts, and a worker setup hook, both in the job's runtime_env); errors always
show. `--verbose` (RERANK_VERBOSE=1, set by jobs/entry.py) shows everything, and our debug lines.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any

import ray

log = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
VERBOSE_ENV = "RERANK_VERBOSE"  # "1": --verbose, in the driver and (through the runtime_env) the workers
OUR_LOGGERS = ("rerank", "pipeline", "jobs")
# Libraries whose console output is errors only by default ("py.warnings": Python's warnings module).
LIBRARY_LOGGERS = (
    "ray",
    "transformers",
    "huggingface_hub",
    "torch",
    "peft",
    "filelock",
    "fsspec",
    "s3fs",
    "botocore",
    "aiobotocore",
    "urllib3",
    "py.warnings",
)
# Read when a library is imported or a Ray process starts, so they reach every process of the job.
QUIET_ENV = {
    "TRANSFORMERS_VERBOSITY": "error",  # the weights LOAD REPORT table and other warnings
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # "Loading weights" / "Writing model shards" bars
}
SUBMITTED_JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # what `ray job submit` hands its driver
SETUP_HOOK = "pipeline.logs.quiet_worker"


def is_verbose() -> bool:
    return os.environ.get(VERBOSE_ENV) == "1"


def configure_library_logging(verbose: bool) -> None:
    """This process's console levels: the libraries' loggers errors only (INFO and up with
    --verbose), ours INFO (DEBUG with --verbose); Python warnings go through logging too."""
    library = logging.INFO if verbose else logging.ERROR
    logging.captureWarnings(True)
    logging.getLogger().setLevel(library)  # any other library's logger (Ray Train's are named by path)
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(library)
    # Ray Data writes everything to its session log file and INFO up to the console: only the console
    for handler in logging.getLogger("ray.data").handlers:
        if handler.name == "console":
            handler.setLevel(library)
    for name in OUR_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.INFO)
    if not verbose and "huggingface_hub" in sys.modules:  # imported before QUIET_ENV was set:
        sys.modules["huggingface_hub"].utils.disable_progress_bars()  # transformers asks it on import
    if not verbose and "transformers" in sys.modules:
        sys.modules["transformers"].utils.logging.disable_progress_bar()


def quiet_environment() -> dict[str, str]:
    """The console's environment variables for Ray processes: QUIET_ENV (a value already set
    here wins) unless --verbose, and the verbosity itself. Also set in this process, before Ray
    starts, for the driver's own Ray core and a local Ray's processes."""
    env = {VERBOSE_ENV: "1" if is_verbose() else "0"}
    if not is_verbose():
        env |= {k: os.environ.get(k, v) for k, v in QUIET_ENV.items()}
    return env


def quiet_worker() -> None:
    """Ray's worker_process_setup_hook: the driver's console levels in each worker process. Also
    names the worker's own cluster in RAY_ADDRESS: Ray Train's PlacementGroupCleaner asks the
    state API for "auto", which fails with a traceback when a machine runs several local Rays.
    (A hook that raises would end every worker: it logs instead.)"""
    try:
        verbose = is_verbose()
        if verbose and not logging.getLogger().handlers:  # our debug lines, streamed to the driver
            logging.basicConfig(format=LOG_FORMAT)
        configure_library_logging(verbose)
        os.environ.setdefault("RAY_ADDRESS", ray.get_runtime_context().gcs_address)
    except Exception:
        log.exception("setting up this worker's console failed; it keeps Ray's defaults")


def worker_runtime_env(env: dict[str, str]) -> dict[str, Any]:
    """The job's runtime_env: the console's environment and the setup hook, less what the
    runtime_env of a submitted job (`ray job submit`) already sets: Ray refuses to merge the two
    where they overlap."""
    runtime_env: dict[str, Any] = {"env_vars": dict(env), "worker_process_setup_hook": SETUP_HOOK}
    try:
        submitted = json.loads(os.environ.get(SUBMITTED_JOB_ENV) or "{}").get("runtime_env") or {}
    except (ValueError, AttributeError):
        submitted = {}
    for key in submitted.get("env_vars") or {}:
        runtime_env["env_vars"].pop(key, None)
    if "worker_process_setup_hook" in submitted:
        del runtime_env["worker_process_setup_hook"]
    return runtime_env
