"""What several processes run for a module trained through its ``training_step``."""

from __future__ import annotations

from typing import Any

import torch

from torchcallbacks.overrides import user_method


class TrainingStepForward(torch.nn.Module):
    """What DDP wraps for a module trained through its ``training_step``: a forward that
    is the training step, so that DDP's reducer sees the step's graph and synchronises the
    gradients (Lightning's own strategy wrapper does the same). `Trainer.model` stays the
    module itself: checkpoints hold its keys without prefixes."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, batch: Any, batch_idx: int) -> Any:
        return self.module.training_step(batch, batch_idx)


def step_methods(module: torch.nn.Module) -> list[str]:
    """The step methods the Trainer calls on ``module`` instead of its forward: FSDP2
    gathers the sharded parameters around them as around a forward."""
    names = ("training_step", "validation_step", "test_step", "predict_step")
    return [name for name in names if user_method(module, name) is not None]
