"""The Ray Data plan, in one place: shards → tokenize/sort (CPU) → score (actor pool).

The write stage is `publish_shard`, launched by the runner as a Ray task for each shard the
moment all of its scores have streamed out of this dataset: Ray Data's own writers neither map
one input file to one output file nor publish atomically per file, and our output must be
re-sorted per query within each shard.
"""

from __future__ import annotations

import ray
from ray.data import ActorPoolStrategy, Dataset

from pipeline.config import DEFAULT_ROWS_PER_CALL, JobConfig
from pipeline.io import ShardFile, Storage
from pipeline.stages import ScorePairs, TokenizeShard


def build(
    cfg: JobConfig,
    storage: Storage,
    shards: dict[int, ShardFile],
    device: str,
    dtype: str,
    max_batch_tokens: int | str,
) -> Dataset:
    """The streaming dataset of scores (`shard`, `row`, `score`, ...) for the given shards."""
    s = cfg.scoring
    items = [{"shard": i, "uri": shard.uri} for i, shard in shards.items()]
    ds: Dataset = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
    ds = ds.map_batches(
        TokenizeShard,
        fn_constructor_kwargs={"model": cfg.model, "columns": cfg.input, "storage": storage},
        batch_size=1,
        compute=ActorPoolStrategy(size=s.tokenize_actors),
        num_cpus=s.cpus_per_tokenizer,
    )
    return ds.map_batches(
        ScorePairs,
        fn_constructor_kwargs={
            "model": cfg.model,
            "storage": storage,
            "device": device,
            "dtype": dtype,
            "max_batch_tokens": max_batch_tokens,
            "min_batch_fill": s.min_batch_fill,
            "torch_threads": s.torch_threads,
        },
        batch_size=s.rows_per_call or DEFAULT_ROWS_PER_CALL[device],
        batch_format="pyarrow",
        compute=ActorPoolStrategy(min_size=s.min_actors, max_size=s.max_actors),
        num_cpus=s.cpus_per_actor,
        num_gpus=1 if device == "cuda" else 0,
    )
