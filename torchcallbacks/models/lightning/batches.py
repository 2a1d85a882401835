"""Batches and outputs as Lightning passes them to the step methods and hooks."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch


def loss_of(output: Any, owner: str) -> torch.Tensor | None:
    """The loss ``training_step`` returned (a tensor or a dict's ``"loss"``), or None."""
    loss = output.get("loss") if isinstance(output, Mapping) else output
    if loss is None:
        return None
    if isinstance(loss, torch.Tensor) and loss.numel() == 1 and loss.requires_grad:
        return loss.reshape(())
    if isinstance(loss, torch.Tensor) and loss.numel() == 1:
        problem = "a loss that does not require grad (detached, or computed under no_grad)"
    else:
        problem = f"{type(output).__name__}"
    raise ValueError(
        f"{owner}.training_step must return the loss (a scalar tensor with grad), a dict "
        f"with 'loss', or None to skip the batch; it returned {problem}."
    )


def is_pair(batch: Any) -> bool:
    return isinstance(batch, tuple | list) and len(batch) == 2


def as_given(batch: Any) -> Any:
    """The batch as the user's data holds it: in-memory inputs given without targets
    (``fit(x)``, ``train_on_batch(x)``) come as ``(x, None)`` and go to the steps as ``x``."""
    return batch[0] if is_pair(batch) and batch[1] is None else batch


def _tensors(batch: Any) -> Iterator[torch.Tensor]:
    if isinstance(batch, torch.Tensor):
        yield batch
    elif isinstance(batch, Mapping):
        for value in batch.values():
            yield from _tensors(value)
    elif isinstance(batch, Sequence) and not isinstance(batch, str):
        for value in batch:
            yield from _tensors(value)


def batch_size_of(batch: Any) -> int:
    """Lightning's rule: the first dimension of the first tensor in the batch (else 1)."""
    for tensor in _tensors(batch):
        return tensor.shape[0] if tensor.ndim else 1
    return 1
