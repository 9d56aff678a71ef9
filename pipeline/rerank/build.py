"""The Ray Data plans, in one place: shards → tokenize/sort (CPU) → score (actor pool); and,
before it when the run reuses an earlier run's scores, the lookup: shards' keys ⋈ stored scores →
grouped by shard (`build_lookup`).

The write stage is not part of this dataset: the runner hands each shard, the moment all of its
scores have streamed out of it, to a few long-lived writer actors (`ShardWriter`,
pipeline/rerank/stages/write.py, fed by pipeline/rerank/stream/publisher.py), which publish it
and write its done-marker. Ray Data's own writers neither map one input file to one output file
nor publish atomically per file, and our output must be re-sorted per query within each shard.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import replace

import ray
from ray.data import ActorPoolStrategy, Dataset

from pipeline.config import ModelConfig
from pipeline.io import ShardFile, Storage
from pipeline.rerank.config import InputConfig, ScoringConfig
from pipeline.rerank.reuse.keys import KEY_COLUMNS
from pipeline.rerank.reuse.lookup import JoinInOneTask, ReadStores, ShardKeys, store_items, write_reused
from pipeline.rerank.settings import ScoringSettings
from pipeline.rerank.stages.score import ScorePairs
from pipeline.rerank.stages.tokenize import TokenizeShard

# Not more than about one scoring call's rows per group: Ray Data merges what one task yields into
# one block (up to its target block size), and a scoring task takes a whole block, so a bigger
# group would publish its shards only after all of its calls (tests/integration/test_progressive.py).
MAX_SHARDS_PER_GROUP = 256
# With --actors N:M and N > 1, the pools wait (this long at most) for their first N actors before
# any block is handed out: else the first actor up takes every block of a short run, and the
# other nodes' GPUs sit idle (tests/integration/test_cluster.py).
WAIT_FOR_MIN_ACTORS_S = 600
# The lookup's join partitions: about this many keys each (24 bytes a key, beside the stored
# scores that match them), so a partition stays tens of MB whatever the corpus.
KEYS_PER_PARTITION = 1_000_000
MAX_PARTITIONS = 512


def shard_groups(shards: dict[int, ShardFile], rows: dict[int, int], group_rows: int) -> list[list[int]]:
    """Consecutive shards grouped so that each group holds at least `group_rows` rows (a shard that
    big is a group of its own), at most MAX_SHARDS_PER_GROUP shards: one tokenize task per group."""
    groups: list[list[int]] = [[]]
    held = 0
    for i in shards:
        if groups[-1] and (held >= group_rows or len(groups[-1]) >= MAX_SHARDS_PER_GROUP):
            groups.append([])
            held = 0
        groups[-1].append(i)
        held += rows[i]
    return [g for g in groups if g]


def group_items(shards: dict[int, ShardFile], groups: list[list[int]], reused: dict[int, str]) -> list[dict]:
    """One plan item per group: its shards, their URIs and (with --reuse) their reused-score files."""
    return [
        {"shards": g, "uris": [shards[i].uri for i in g], "reused": [reused.get(i, "") for i in g]}
        for g in groups
    ]


def build(
    *,
    shards: dict[int, ShardFile],
    rows: dict[int, int],
    model: ModelConfig,
    columns: InputConfig,
    pool: ScoringConfig,
    settings: ScoringSettings,
    storage: Storage,
    reused: dict[int, str] | None = None,
) -> Dataset:
    """The streaming dataset of scores (`shard`, `row`, `score`, ...) for the given shards (`rows`:
    each one's row count). `model` has its kind resolved; `settings` holds every device-dependent
    value; `reused`: per shard with stored scores to reuse, the lookup's file of them (`build_lookup`)."""
    groups = shard_groups(shards, rows, settings.rows_per_call)
    items = group_items(shards, groups, reused or {})
    ds: Dataset = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
    ds = ds.map_batches(
        TokenizeShard,
        fn_constructor_kwargs={
            "model": model,
            "columns": columns,
            "storage": storage,
            "block_rows": settings.rows_per_call,
            "reused_columns": model.score_columns if reused is not None else None,
        },
        batch_size=1,
        compute=ActorPoolStrategy(size=pool.tokenize_actors),
        num_cpus=pool.cpus_per_tokenizer,
    )
    ds = ds.map_batches(
        ScorePairs,
        fn_constructor_kwargs={
            "model": model,
            "storage": storage,
            "settings": replace(settings, pairs_per_actor=sum(rows.values()) // pool.max_actors),
        },
        batch_size=settings.rows_per_call,
        batch_format="pyarrow",
        compute=ActorPoolStrategy(min_size=pool.min_actors, max_size=pool.max_actors),
        num_cpus=pool.cpus_per_actor,
        num_gpus=settings.gpus_per_actor,
    )
    # Blocks go to the least busy scoring actor, not to one on the node that tokenized them:
    # token ids are cheap to move, and with locality one node's actors take every block while
    # they have room, leaving the other nodes' GPUs idle.
    with warnings.catch_warnings():  # deprecated for Ray's own placement, still honoured in 2.60
        warnings.simplefilter("ignore")
        ds.context.execution_options.actor_locality_enabled = False
    if pool.min_actors > 1:  # one actor: no wait, so the tokenize and scoring pools start together
        ds.context.wait_for_min_actors_s = WAIT_FOR_MIN_ACTORS_S
    return ds


def build_lookup(
    *,
    shards: dict[int, ShardFile],
    rows: dict[int, int],
    store_files: list[list[str]],
    columns: InputConfig,
    score_columns: list[str],
    storage: Storage,
    output: str,
    digest: str,
    stored_pairs: int,
) -> Dataset:
    """The --reuse lookup (pipeline/rerank/reuse/lookup.py): every pending pair's key, joined to
    the stored scores of the reuse sources (`store_files`: each source's files, newest source
    first), grouped by shard; yields (`shard`, `pairs`) per shard with stored scores, each shard's
    written to the file the tokenize stage reads. `stored_pairs`: how many the sources hold (their
    `_SUCCESS` says); a night whose keys and stored pairs fit one join partition is joined in one
    task, without the shuffle."""
    chunked = columns.long_passages == "chunk"
    keyed, read = ShardKeys(columns, storage), ReadStores(storage, output, digest, score_columns, chunked)
    write = {"storage": storage, "output": output, "score_columns": score_columns, "chunked": chunked}
    files = store_items(store_files)
    if sum(rows.values()) + stored_pairs <= KEYS_PER_PARTITION:  # one partition: no shuffle
        item = {
            "shards": list(shards),
            "uris": [shards[i].uri for i in shards],
            "store_uri": [f["uri"] for f in files],
            "source": [f["source"] for f in files],
        }
        return ray.data.from_items([item]).map_batches(
            JoinInOneTask(keyed, read, write), batch_size=1, batch_format="numpy"
        )
    groups = shard_groups(shards, rows, KEYS_PER_PARTITION // 4)
    items = [{"shards": g, "uris": [shards[i].uri for i in g]} for g in groups]
    keys: Dataset = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
    keys = keys.map_batches(keyed, batch_size=1, batch_format="numpy")
    stores: Dataset = ray.data.from_items(files, override_num_blocks=max(1, min(256, len(files))))
    stores = stores.map_batches(read, batch_size=16, batch_format="numpy")
    keys_total = sum(rows.values()) + stored_pairs
    partitions = max(1, min(MAX_PARTITIONS, math.ceil(keys_total / KEYS_PER_PARTITION)))
    matched = keys.join(stores, "inner", num_partitions=partitions, on=KEY_COLUMNS)  # type: ignore[arg-type]
    return matched.groupby("shard", num_partitions=partitions).map_groups(
        write_reused,  # type: ignore[arg-type]
        batch_format="pyarrow",
        fn_kwargs=write,
    )
