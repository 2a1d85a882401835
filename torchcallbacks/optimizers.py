"""Optimizers: built from Keras-style names, shown to Keras callbacks as
``model.optimizer``, and their learning rate set."""

from __future__ import annotations

import weakref
from collections.abc import Iterable

import torch

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
    "adagrad": torch.optim.Adagrad,
}
# Keras's default learning rates (torch's SGD has none).
_DEFAULT_LR = {"adam": 1e-3, "adamw": 1e-3, "sgd": 1e-2, "rmsprop": 1e-3, "adagrad": 1e-3}


def resolve_optimizer(
    optimizer: torch.optim.Optimizer | str | None, parameters: Iterable[torch.nn.Parameter]
) -> torch.optim.Optimizer | None:
    """The optimizer itself, or one built by name on ``parameters`` with Keras defaults."""
    if optimizer is None or isinstance(optimizer, torch.optim.Optimizer):
        return optimizer
    if isinstance(optimizer, str):
        key = optimizer.lower()
        if key not in OPTIMIZERS:
            raise ValueError(
                f"Unknown optimizer name {optimizer!r}. Valid names: "
                f"{', '.join(sorted(OPTIMIZERS))}; or pass a torch.optim.Optimizer."
            )
        return OPTIMIZERS[key](parameters, lr=_DEFAULT_LR[key])
    raise TypeError(
        f"optimizer must be a torch.optim.Optimizer or a name; got {type(optimizer).__name__}"
    )


_MISSING = object()
# The optimizer each module was given by `expose_on_module`, to tell it from the module's own.
_exposed: weakref.WeakKeyDictionary[torch.nn.Module, torch.optim.Optimizer | None] = (
    weakref.WeakKeyDictionary()
)


def expose_on_module(module: torch.nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
    """Set ``module.optimizer`` to the trainer's optimizer, for Keras's ``self.model.optimizer``.

    A module that has an ``optimizer`` of its own (an attribute, property, submodule or
    method it defines) keeps it; only an attribute set here before is replaced.
    """
    owned = module.__dict__.get("optimizer", _MISSING)
    if owned is _MISSING:
        if hasattr(module, "optimizer"):
            return
    elif module not in _exposed or _exposed[module] is not owned:
        return
    module.__dict__["optimizer"] = optimizer
    _exposed[module] = optimizer


def set_learning_rate(optimizer: torch.optim.Optimizer, value: float) -> None:
    """Set the first parameter group's learning rate to ``value``; the other groups keep their
    ratio to it.

    The ratios are kept in the groups (``"lr_ratio"``), so they survive a warm-up from 0,
    where they cannot be computed, and go into checkpoints with the optimizer.
    """
    groups = optimizer.param_groups
    first = float(groups[0]["lr"])
    for group in groups:
        if first:
            group["lr_ratio"] = float(group["lr"]) / first
        group["lr"] = float(value) * group.get("lr_ratio", 1.0)
