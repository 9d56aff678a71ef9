"""The Ray Data plan, in one place: shards → tokenize/sort (CPU) → score (actor pool).

The write stage is not part of this dataset: the runner hands each shard, the moment all of its
scores have streamed out of it, to a few long-lived writer actors (`ShardWriter`,
pipeline/rerank/stages/write.py, fed by pipeline/rerank/stream/publisher.py), which publish it
and write its done-marker. Ray Data's own writers neither map one input file to one output file
nor publish atomically per file, and our output must be re-sorted per query within each shard.
"""

from __future__ import annotations

import warnings

import ray
from ray.data import ActorPoolStrategy, Dataset

from pipeline.config import ModelConfig
from pipeline.io import ShardFile, Storage
from pipeline.rerank.config import InputConfig, ScoringConfig
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


def build(
    *,
    shards: dict[int, ShardFile],
    rows: dict[int, int],
    model: ModelConfig,
    columns: InputConfig,
    pool: ScoringConfig,
    settings: ScoringSettings,
    storage: Storage,
) -> Dataset:
    """The streaming dataset of scores (`shard`, `row`, `score`, ...) for the given shards (`rows`:
    each one's row count). `model` has its kind resolved; `settings` holds every device-dependent
    value."""
    groups = shard_groups(shards, rows, settings.rows_per_call)
    items = [{"shards": g, "uris": [shards[i].uri for i in g]} for g in groups]
    ds: Dataset = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
    ds = ds.map_batches(
        TokenizeShard,
        fn_constructor_kwargs={
            "model": model,
            "columns": columns,
            "storage": storage,
            "block_rows": settings.rows_per_call,
        },
        batch_size=1,
        compute=ActorPoolStrategy(size=pool.tokenize_actors),
        num_cpus=pool.cpus_per_tokenizer,
    )
    ds = ds.map_batches(
        ScorePairs,
        fn_constructor_kwargs={"model": model, "storage": storage, "settings": settings},
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
