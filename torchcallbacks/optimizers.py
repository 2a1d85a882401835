"""Optimizer resolution from Keras-style names."""

from __future__ import annotations

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
