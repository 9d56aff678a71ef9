"""What a checkpoint holds, so a resumed run continues the step count, the loss curve and the
optimizer exactly: trainable weights, optimizer, LR schedule, grad scaler, step, losses."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch

STATE_FILE = "train_state.pt"


@dataclass
class TrainState:
    step: int = 0  # optimizer steps done
    losses: list[tuple[int, float]] = field(default_factory=list)  # (step, mean loss over workers)
    eval_before: dict[str, float] | None = None
    resumed_from_step: int | None = None
    examples_seen: int = 0
    examples_per_s: float = 0.0  # of this process's steps (not restored)

    def meta(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "losses": self.losses,
            "eval_before": self.eval_before,
            "examples_seen": self.examples_seen,
        }


def save_state(directory: str, state: TrainState, objects: dict[str, Any]) -> None:
    """Writes the state and every object's `state_dict()` (plus `weights`, a tensor dict)."""
    payload = {"meta": state.meta()}
    for name, obj in objects.items():
        payload[name] = obj if name == "weights" else obj.state_dict()
    torch.save(payload, os.path.join(directory, STATE_FILE))


def load_state(directory: str, objects: dict[str, Any], load_weights: Any) -> TrainState:
    """Restores every object from a checkpoint directory; returns the train state it held."""
    payload = torch.load(os.path.join(directory, STATE_FILE), map_location="cpu", weights_only=False)
    load_weights(payload["weights"])
    for name, obj in objects.items():
        obj.load_state_dict(payload[name])
    meta = payload["meta"]
    return TrainState(
        step=meta["step"],
        losses=[tuple(x) for x in meta["losses"]],
        eval_before=meta["eval_before"],
        resumed_from_step=meta["step"],
        examples_seen=meta["examples_seen"],
    )
