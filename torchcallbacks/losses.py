"""Loss resolution: Keras loss names, torch modules and plain callables.

The Keras names take probabilities (the model ends in softmax/sigmoid), as in Keras;
``cross_entropy`` takes logits, as torch's ``CrossEntropyLoss`` does.

| name | expects | targets |
|---|---|---|
| ``mse`` / ``mean_squared_error`` | any values | same shape as the output |
| ``mae`` / ``mean_absolute_error`` | any values | same shape as the output |
| ``binary_crossentropy`` | probabilities in [0, 1] | same shape, 0/1 or soft labels |
| ``categorical_crossentropy`` | class probabilities | one-hot or probability rows |
| ``sparse_categorical_crossentropy`` | class probabilities | integer class indices |
| ``cross_entropy`` | logits | integer class indices (or probabilities) |
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

_EPSILON = 1e-7  # Keras's backend epsilon, used to clip probabilities before the log


def _same_shape(name: str, y_pred: torch.Tensor, y_true: torch.Tensor) -> None:
    if y_pred.shape != y_true.shape:
        raise ValueError(
            f"loss '{name}': the model output has shape {tuple(y_pred.shape)} but the target "
            f"has shape {tuple(y_true.shape)}; they must match (reshape the target or the "
            "model's last layer)."
        )


def _class_targets(name: str, y_pred: torch.Tensor, y_true: torch.Tensor) -> None:
    if y_true.shape != y_pred.shape[:1] + y_pred.shape[2:]:
        raise ValueError(
            f"loss '{name}': the model output has shape {tuple(y_pred.shape)} and the target "
            f"has shape {tuple(y_true.shape)}; integer class targets must have the output's "
            "shape without the class dimension (use 'categorical_crossentropy' for one-hot)."
        )


def mean_squared_error(y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
    _same_shape("mse", y_pred, y_true)
    return F.mse_loss(y_pred, y_true.to(y_pred.dtype))


def mean_absolute_error(y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
    _same_shape("mae", y_pred, y_true)
    return F.l1_loss(y_pred, y_true.to(y_pred.dtype))


def binary_crossentropy(y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
    _same_shape("binary_crossentropy", y_pred, y_true)
    probs = y_pred.float().clamp(_EPSILON, 1.0 - _EPSILON)
    return F.binary_cross_entropy(probs, y_true.float())


def categorical_crossentropy(y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
    _same_shape("categorical_crossentropy", y_pred, y_true)
    probs = y_pred.float()
    probs = (probs / probs.sum(dim=-1, keepdim=True)).clamp(_EPSILON, 1.0 - _EPSILON)
    return -(y_true.float() * probs.log()).sum(dim=-1).mean()


def sparse_categorical_crossentropy(y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
    _class_targets("sparse_categorical_crossentropy", y_pred, y_true)
    probs = y_pred.float().clamp(_EPSILON, 1.0 - _EPSILON)
    return F.nll_loss(probs.log(), y_true.long())


def cross_entropy(y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
    # torch checks the shapes itself; its error is reported with both shapes by the caller.
    # Class indices of any integer dtype (int32 from NumPy or pandas, uint8) become int64.
    if y_true.dtype is not torch.int64 and not y_true.is_floating_point():
        y_true = y_true.long()
    return F.cross_entropy(y_pred, y_true)


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "mse": mean_squared_error,
    "mean_squared_error": mean_squared_error,
    "mae": mean_absolute_error,
    "mean_absolute_error": mean_absolute_error,
    "binary_crossentropy": binary_crossentropy,
    "categorical_crossentropy": categorical_crossentropy,
    "sparse_categorical_crossentropy": sparse_categorical_crossentropy,
    "cross_entropy": cross_entropy,
}


def resolve_loss(loss: Any) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A callable ``(y_pred, y_true) -> scalar`` for a Keras name, module or callable."""
    if isinstance(loss, str):
        if loss not in LOSSES:
            raise ValueError(
                f"Unknown loss name {loss!r}. Valid names: {', '.join(sorted(LOSSES))}; or pass "
                "an nn.Module or a callable (y_pred, y_true) -> scalar tensor."
            )
        return LOSSES[loss]
    if callable(loss):
        return loss
    raise TypeError(f"loss must be a name, an nn.Module or a callable; got {loss!r}")


def loss_name(loss: Any) -> str:
    if isinstance(loss, str):
        return loss
    return getattr(loss, "__name__", type(loss).__name__)
