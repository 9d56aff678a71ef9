"""Fine-tuning defaults from FlagEmbedding's recipe, and the warnings about a run that is unlikely
to have learned: too few optimizer steps, a final loss at chance level. Pure, no Ray."""

from __future__ import annotations

import math

from pipeline.finetune.config import load_finetune_config, with_kind_defaults
from pipeline.finetune.diagnostics import (
    MIN_SCHEDULED_STEPS,
    chance_warning,
    final_loss,
    run_warnings,
    schedule_warning,
)
from pipeline.finetune.groups import schedule_for


def config(**train):
    return load_finetune_config(
        None,
        {
            "data": {"train_uri": "t.jsonl"},
            "model": {"name_or_path": "m"},
            "train": train,
            "output": {"uri": "o"},
        },
    )


def test_defaults_are_flagembeddings_recipe_per_kind():
    encoder = with_kind_defaults(config(), "encoder").train
    llm = with_kind_defaults(config(), "llm").train
    assert (encoder.peak_learning_rate, encoder.num_epochs) == (6e-5, 2.0)
    assert (llm.peak_learning_rate, llm.num_epochs) == (2e-4, 1.0)
    assert encoder.warmup_ratio == 0.1 and encoder.queries_per_step == 2 and encoder.train_group_size == 8
    given = with_kind_defaults(config(learning_rate=1e-3, epochs=3), "encoder").train
    assert (given.peak_learning_rate, given.num_epochs) == (1e-3, 3)


def test_the_issues_small_set_has_enough_steps_with_the_defaults_and_not_with_the_old_ones():
    """300 queries, groups of 8, 2 workers: 150 steps now; 38 with the old 1 epoch x 4 per step."""
    train = with_kind_defaults(config(), "encoder").train
    assert schedule_for(train, 300, workers=2).total_steps == 150
    assert schedule_warning(schedule_for(train, 300, workers=2), train) is None

    old = with_kind_defaults(config(learning_rate=2e-5, epochs=1, queries_per_step=4), "encoder").train
    warning = schedule_warning(schedule_for(old, 300, workers=2), old)
    assert warning is not None and warning.startswith("only 38 optimizer steps (300 queries, 8 per step")
    assert f"raise --epochs to {math.ceil(MIN_SCHEDULED_STEPS / 38)}" in warning


def test_a_final_loss_within_5_percent_of_chance_is_named_with_what_to_change():
    train = with_kind_defaults(config(), "encoder").train
    chance = math.log(8)
    flat = [(step, chance * 0.97) for step in range(1, 41)]
    warning = chance_warning(flat, train, steps=40)
    assert warning is not None and "within 5% of chance (ln 8 = 2.079)" in warning
    assert "--learning-rate (now 6e-05)" in warning and "--epochs (now 2: 40 optimizer steps)" in warning
    learned = flat[:-4] + [(s, 0.9) for s in range(37, 41)]  # the last 10% of steps count
    assert final_loss(learned) == 0.9 and chance_warning(learned, train, steps=40) is None
    distill = with_kind_defaults(config(loss="distill"), "encoder").train
    assert chance_warning(flat, distill, steps=40) is None  # its chance level is the teacher's


def test_a_finished_run_collects_every_warning_that_applies():
    train = with_kind_defaults(config(), "encoder").train
    small = schedule_for(train, 40, workers=2)  # 20 steps
    assert len(run_warnings(small, train, [(1, 2.08), (2, 2.07)])) == 2
    assert run_warnings(schedule_for(train, 300, workers=2), train, [(1, 2.0), (2, 0.5)]) == []
