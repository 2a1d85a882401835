"""The kinds of model: each owns what one batch does (see `base.ModelKind`).

- `plain.PlainKind`: a module scored by the Trainer's ``loss`` and ``metrics``;
- `own_loss.OwnLossKind`: a module that returns its own loss (HuggingFace models);
- `lightning.LightningKind`: a module that defines ``training_step`` (LightningModules)
  or only evaluation or prediction steps;
- `lightning.ManualLightningKind`: the same with ``automatic_optimization = False``.

`kind_for` picks one for a module and a loss.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from torchcallbacks.models.base import ModelKind
from torchcallbacks.models.lightning import LightningKind, ManualLightningKind
from torchcallbacks.models.own_loss import OwnLossKind
from torchcallbacks.models.plain import PlainKind
from torchcallbacks.overrides import user_method


def kind_for(module: torch.nn.Module, loss: Any) -> type[ModelKind]:
    """With ``loss=``: `PlainKind`. Without: `LightningKind` when the module defines
    ``training_step`` (`ManualLightningKind` when it sets ``automatic_optimization =
    False``) or only evaluation or prediction steps (a module for `predict` or `evaluate`
    alone), else `OwnLossKind` (the module returns its own loss)."""
    if loss is not None:
        owner = type(module).__name__
        steps = [f"{owner}.{step}" for step in _STEPS if user_method(module, step) is not None]
        if steps:
            warnings.warn(
                f"{', '.join(steps)} {'is' if len(steps) == 1 else 'are'} not used: with loss= the "
                "Trainer scores the module's forward output itself (and configure_optimizers, "
                "self.log and the Lightning hooks are not called either). Leave loss= out to "
                "train with the module's steps.",
                stacklevel=3,
            )
        return PlainKind
    if any(user_method(module, step) is not None for step in _STEPS):
        manual = getattr(module, "automatic_optimization", True) is False
        return ManualLightningKind if manual else LightningKind
    return OwnLossKind


_STEPS = ("training_step", "validation_step", "test_step", "predict_step")


__all__ = [
    "LightningKind",
    "ManualLightningKind",
    "ModelKind",
    "OwnLossKind",
    "PlainKind",
    "kind_for",
]
