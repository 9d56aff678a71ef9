"""The Ray Data plan, in one place: shards → tokenize/sort (CPU) → score (actor pool).

The write stage is `publish_shard`, launched by the runner as a Ray task for each shard the
moment all of its scores have streamed out of this dataset: Ray Data's own writers neither map
one input file to one output file nor publish atomically per file, and our output must be
re-sorted per query within each shard.
"""

from __future__ import annotations

import ray
from ray.data import ActorPoolStrategy, Dataset

from pipeline.config import ModelConfig
from pipeline.io import ShardFile, Storage
from pipeline.rerank.config import InputConfig, ScoringConfig
from pipeline.rerank.score_stage import ScorePairs
from pipeline.rerank.settings import ScoringSettings
from pipeline.rerank.tokenize_stage import TokenizeShard


def build(
    *,
    shards: dict[int, ShardFile],
    model: ModelConfig,
    columns: InputConfig,
    pool: ScoringConfig,
    settings: ScoringSettings,
    storage: Storage,
) -> Dataset:
    """The streaming dataset of scores (`shard`, `row`, `score`, ...) for the given shards.
    `model` has its kind resolved; `settings` holds every device-dependent value."""
    items = [{"shard": i, "uri": shard.uri} for i, shard in shards.items()]
    ds: Dataset = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
    ds = ds.map_batches(
        TokenizeShard,
        fn_constructor_kwargs={"model": model, "columns": columns, "storage": storage},
        batch_size=1,
        compute=ActorPoolStrategy(size=pool.tokenize_actors),
        num_cpus=pool.cpus_per_tokenizer,
    )
    return ds.map_batches(
        ScorePairs,
        fn_constructor_kwargs={"model": model, "storage": storage, "settings": settings},
        batch_size=settings.rows_per_call,
        batch_format="pyarrow",
        compute=ActorPoolStrategy(min_size=pool.min_actors, max_size=pool.max_actors),
        num_cpus=pool.cpus_per_actor,
        num_gpus=settings.gpus_per_actor,
    )
