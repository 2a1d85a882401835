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

Keras's loss classes take ``from_logits`` and ``reduction``: ``BinaryCrossentropy``,
``CategoricalCrossentropy``, ``SparseCategoricalCrossentropy``, ``MeanSquaredError``,
``MeanAbsoluteError``. Like every loss here they are called ``loss(y_pred, y_true)``, torch's
argument order (Keras's is ``(y_true, y_pred)``), with an optional ``sample_weight``.
The losses that take probabilities warn once when they receive values outside [0, 1].
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from torchcallbacks.utils import expected_sync

_EPSILON = 1e-7  # Keras's backend epsilon, used to clip probabilities before the log
_IGNORE_INDEX = -100  # the label torch's cross_entropy and nll_loss skip


def same_rank_target(y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
    """``y_true`` with the rank of ``y_pred`` where they differ by a trailing dimension of 1,
    as Keras matches them: a 1-D target (a pandas Series, a NumPy vector) goes with a
    one-unit output of shape ``(N, 1)``. Other targets are returned as they are."""
    if y_pred.ndim == y_true.ndim + 1 and y_pred.shape[-1] == 1:
        if y_pred.shape[:-1] == y_true.shape:
            return y_true.unsqueeze(-1)
    if y_true.ndim == y_pred.ndim + 1 and y_true.shape[-1] == 1:
        if y_true.shape[:-1] == y_pred.shape:
            return y_true.squeeze(-1)
    return y_true


def _matching_target(name: str, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
    """``y_true`` shaped like ``y_pred`` (`same_rank_target`), or a ValueError naming both."""
    y_true = same_rank_target(y_pred, y_true)
    if y_pred.shape == y_true.shape:
        return y_true
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


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    """torch's ``reduction`` argument ("mean", "sum", "none") for values computed by hand."""
    if reduction == "mean":
        return values.mean()
    return values.sum() if reduction == "sum" else values


def mean_squared_error(
    y_pred: torch.Tensor, y_true: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    y_true = _matching_target("mse", y_pred, y_true)
    return F.mse_loss(y_pred, y_true.to(y_pred.dtype), reduction=reduction)


def mean_absolute_error(
    y_pred: torch.Tensor, y_true: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    y_true = _matching_target("mae", y_pred, y_true)
    return F.l1_loss(y_pred, y_true.to(y_pred.dtype), reduction=reduction)


def binary_crossentropy(
    y_pred: torch.Tensor, y_true: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    y_true = _matching_target("binary_crossentropy", y_pred, y_true)
    probs = y_pred.float().clamp(_EPSILON, 1.0 - _EPSILON)
    return F.binary_cross_entropy(probs, y_true.float(), reduction=reduction)


def categorical_crossentropy(
    y_pred: torch.Tensor, y_true: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    y_true = _matching_target("categorical_crossentropy", y_pred, y_true)
    probs = y_pred.float()
    probs = (probs / probs.sum(dim=-1, keepdim=True)).clamp(_EPSILON, 1.0 - _EPSILON)
    return _reduce(-(y_true.float() * probs.log()).sum(dim=-1), reduction)


def sparse_categorical_crossentropy(
    y_pred: torch.Tensor, y_true: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    if class_column(y_pred, y_true):  # Keras squeezes (N, 1) labels
        y_true = y_true.squeeze(-1)
    _class_targets("sparse_categorical_crossentropy", y_pred, y_true)
    probs = y_pred.float().clamp(_EPSILON, 1.0 - _EPSILON)
    return F.nll_loss(probs.log(), y_true.long(), reduction=reduction)


def cross_entropy(
    y_pred: torch.Tensor, y_true: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    # torch checks the shapes itself; its error is reported with both shapes by the caller.
    # Class indices of any integer dtype (int32 from NumPy or pandas, uint8) become int64.
    if y_true.dtype is not torch.int64 and not y_true.is_floating_point():
        y_true = y_true.long()
    return F.cross_entropy(y_pred, y_true, reduction=reduction)


def label_out_of_range(name: str, y_pred: Any, y_true: Any) -> str | None:
    """For integer class targets outside ``[0, classes)`` (torch's ``IndexError: Target 5 is
    out of bounds``): a message naming the loss, the first such label and the number of
    classes (dimension 1 of the output, torch's layout); None when all are in range."""
    if not isinstance(y_true, torch.Tensor) or y_true.is_floating_point():
        return None
    if not isinstance(y_pred, torch.Tensor) or y_pred.ndim == 0:
        return None
    classes = y_pred.shape[1] if y_pred.ndim > 1 else y_pred.shape[0]
    labels = y_true.flatten()
    with expected_sync():  # only on the way to an error
        bad = labels[((labels < 0) & (labels != _IGNORE_INDEX)) | (labels >= classes)]
        if not len(bad):
            return None
        label = int(bad[0])
        needed = int(labels.max()) + 1
    if label < 0:
        fix = "Negative labels are no class (only -100 marks a sample to skip): check the labels."
    else:
        fix = (
            "Check the labels (1-based? more classes than the model has outputs?) or make the "
            f"last layer output one value per class (here {needed} or more)."
        )
    return (
        f"loss '{name}': the targets hold the class label {label}, but the model outputs "
        f"{classes} classes, so labels must be integers from 0 to {classes - 1}. {fix}"
    )


def class_column(y_pred: torch.Tensor, y_true: torch.Tensor) -> bool:
    """Whether ``y_true`` holds class labels as a column, ``(N, 1)`` for an ``(N, C)`` output
    (Keras's datasets, ``df[["label"]]``), which Keras's sparse losses and accuracy squeeze."""
    return y_true.ndim == y_pred.ndim > 1 and y_true.shape[-1] == 1 and y_pred.shape[-1] > 1


def class_labels_fix(y_pred: Any, y_true: Any) -> str | None:
    """For class labels torch's cross-entropy refuses, given as floats (torch's ``expected
    ... Long ... but got Float``; a CSV column, a float NumPy array) or as a column
    ``(N, 1)``, or one-hot rows of integers: the fix; None for other targets."""
    if not isinstance(y_true, torch.Tensor) or not isinstance(y_pred, torch.Tensor):
        return None
    if y_true.shape == y_pred.shape and not y_true.is_floating_point():
        return (
            "One-hot targets must be floats, y.float(), or give class indices instead: "
            "y.argmax(-1)."
        )
    fixes = []
    if class_column(y_pred, y_true):
        fixes.append("flatten the column: y.squeeze(-1) (NumPy: y.ravel())")
        y_true = y_true.squeeze(-1)
    if y_true.ndim != y_pred.ndim - 1:
        return None
    if y_true.is_floating_point():
        fixes.append("cast them: y.long() (NumPy: y.astype('int64'))")
    if not fixes:
        return None
    return "Class labels must be integers, one per sample: " + "; ".join(fixes) + "."


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
    if isinstance(loss, Loss):
        return loss.name
    return getattr(loss, "__name__", type(loss).__name__)


# -- Keras's loss classes --------------------------------------------------------------------

REDUCTIONS = ("sum_over_batch_size", "mean", "sum", "mean_with_sample_weight")


def align_weights(sample_weight: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Sample weights shaped to multiply ``values`` (per sample or per element): a trailing
    dimension of 1 is dropped and missing trailing dimensions are added, as Keras does."""
    weights = sample_weight.to(device=values.device, dtype=values.dtype)
    if weights.ndim == values.ndim + 1 and weights.shape[-1] == 1:
        weights = weights.squeeze(-1)
    weights = weights.reshape(weights.shape + (1,) * (values.ndim - weights.ndim))
    try:
        torch.broadcast_shapes(weights.shape, values.shape)
    except RuntimeError:
        raise ValueError(
            f"sample_weight of shape {tuple(sample_weight.shape)} does not fit the per-sample "
            f"values of shape {tuple(values.shape)}: pass one weight per sample, shape "
            "(batch,), or per time step, shape (batch, steps)."
        ) from None
    return weights


def reduce_weighted(
    values: torch.Tensor,
    sample_weight: torch.Tensor | None = None,
    reduction: str = "sum_over_batch_size",
) -> torch.Tensor:
    """Keras's loss reduction: multiply by the weights, sum, and for ``sum_over_batch_size``
    (and ``mean``) divide by the number of values, not by the sum of the weights."""
    if sample_weight is not None:
        sample_weight = align_weights(sample_weight, values)
        values = values * sample_weight
    total = values.sum()
    if reduction == "sum":
        return total
    if reduction == "mean_with_sample_weight" and sample_weight is not None:
        weight_sum = sample_weight.sum()
        return torch.where(weight_sum != 0, total / weight_sum, torch.zeros_like(total))
    return total / max(values.numel(), 1)


def _per_sample(values: torch.Tensor) -> torch.Tensor:
    """Keras's per-sample loss: the mean over the last axis (of outputs with one)."""
    return values.mean(dim=-1) if values.ndim > 1 else values


class Loss:
    """Base of Keras-style loss objects, called ``loss(y_pred, y_true, sample_weight=None)``.

    Subclasses implement ``call(y_pred, y_true)``, returning one value per sample (or per
    time step); ``reduction`` is Keras's: ``"sum_over_batch_size"`` (the default; ``"mean"``
    is the same), ``"sum"`` or ``"mean_with_sample_weight"``.
    """

    default_name = "loss"

    def __init__(self, reduction: str = "sum_over_batch_size", name: str | None = None) -> None:
        if reduction not in REDUCTIONS:
            raise ValueError(
                f"Invalid value for argument `reduction`. Expected one of {set(REDUCTIONS)}. "
                f"Received: reduction={reduction}"
            )
        self.reduction = reduction
        self.name = name or self.default_name

    def call(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(
        self,
        y_pred: torch.Tensor,
        y_true: torch.Tensor,
        sample_weight: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return reduce_weighted(self.call(y_pred, y_true), sample_weight, self.reduction)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reduction={self.reduction!r}, name={self.name!r})"


class MeanSquaredError(Loss):
    """Keras's ``MeanSquaredError``: ``Trainer(model, loss=MeanSquaredError(reduction="sum"))``."""

    default_name = "mean_squared_error"

    def call(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        return _per_sample(mean_squared_error(y_pred, y_true, reduction="none"))


class MeanAbsoluteError(Loss):
    """Keras's ``MeanAbsoluteError``."""

    default_name = "mean_absolute_error"

    def call(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        return _per_sample(mean_absolute_error(y_pred, y_true, reduction="none"))


class _ProbabilityLoss(Loss):
    """A crossentropy that takes probabilities, or logits with ``from_logits=True``."""

    function: Callable[..., torch.Tensor]  # the loss on probabilities

    def __init__(
        self,
        from_logits: bool = False,
        reduction: str = "sum_over_batch_size",
        name: str | None = None,
    ) -> None:
        super().__init__(reduction, name or self.function.__name__)
        self.from_logits = from_logits

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(from_logits={self.from_logits}, "
            f"reduction={self.reduction!r}, name={self.name!r})"
        )


class BinaryCrossentropy(_ProbabilityLoss):
    """Keras's ``BinaryCrossentropy``: probabilities (a sigmoid output) by default, logits
    with ``from_logits=True``::

        Trainer(model, "adam", loss=BinaryCrossentropy(from_logits=True))
    """

    function = staticmethod(binary_crossentropy)

    def call(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        if not self.from_logits:
            return _per_sample(self.function(y_pred, y_true, reduction="none"))
        y_true = _matching_target(self.name, y_pred, y_true)
        values = F.binary_cross_entropy_with_logits(
            y_pred.float(), y_true.float(), reduction="none"
        )
        return _per_sample(values)


class CategoricalCrossentropy(_ProbabilityLoss):
    """Keras's ``CategoricalCrossentropy`` (one-hot or probability targets, classes on the
    last axis): probabilities by default, logits with ``from_logits=True``."""

    function = staticmethod(categorical_crossentropy)

    def call(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        if not self.from_logits:
            return self.function(y_pred, y_true, reduction="none")
        y_true = _matching_target(self.name, y_pred, y_true)
        return -(y_true.float() * F.log_softmax(y_pred.float(), dim=-1)).sum(dim=-1)


class SparseCategoricalCrossentropy(_ProbabilityLoss):
    """Keras's ``SparseCategoricalCrossentropy`` (integer targets; classes on dimension 1,
    torch's layout): probabilities by default; with ``from_logits=True`` it equals
    ``loss="cross_entropy"``."""

    function = staticmethod(sparse_categorical_crossentropy)

    def call(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        if not self.from_logits:
            return self.function(y_pred, y_true, reduction="none")
        _class_targets(self.name, y_pred, y_true)
        return F.cross_entropy(y_pred.float(), y_true.long(), reduction="none")


# -- logits given to a loss that takes probabilities ----------------------------------------

_FOR_LOGITS = {
    "binary_crossentropy": "torchcallbacks.losses.BinaryCrossentropy(from_logits=True) "
    "(or torch.nn.BCEWithLogitsLoss())",
    "categorical_crossentropy": "torchcallbacks.losses.CategoricalCrossentropy(from_logits=True)",
    "sparse_categorical_crossentropy": 'loss="cross_entropy" (or '
    "torchcallbacks.losses.SparseCategoricalCrossentropy(from_logits=True))",
}


def logits_alternative(loss: Any) -> str | None:
    """For a loss that takes probabilities, the loss to use with logits instead; else None."""
    if isinstance(loss, str):
        return _FOR_LOGITS.get(loss)
    if isinstance(loss, _ProbabilityLoss) and not loss.from_logits:
        return _FOR_LOGITS[loss.function.__name__]
    return None


def warn_if_logits(label: str, alternative: str, y_pred: torch.Tensor) -> None:
    """Warn when a loss that takes probabilities receives values outside [0, 1].

    One host sync: callers check a single batch (the first), not every step.
    """
    if not isinstance(y_pred, torch.Tensor) or y_pred.numel() == 0:
        return
    with expected_sync():
        low, high = torch.stack(torch.aminmax(y_pred.detach().float())).tolist()
    if low < 0.0 or high > 1.0:
        warnings.warn(
            f"loss '{label}' takes probabilities in [0, 1] (a model ending in a sigmoid or "
            f"softmax), but the model's outputs range from {low:.4g} to {high:.4g}: they look "
            f"like logits. Use {alternative} instead, or end the model in a sigmoid/softmax.",
            UserWarning,
            stacklevel=2,
        )


def warn_if_probabilities(label: str, y_pred: torch.Tensor) -> None:
    """Warn when a loss that takes logits receives probabilities: classes (dimension 1) in
    [0, 1] that sum to 1, the outputs of a final softmax, which it would softmax again.

    One host sync: callers check a single batch (the first), not every step.
    """
    if not isinstance(y_pred, torch.Tensor) or y_pred.ndim < 2 or y_pred.shape[1] < 2:
        return
    values = y_pred.detach().float()
    in_range = (values >= 0.0).all() & (values <= 1.0).all()
    with expected_sync():
        probabilities = bool(in_range & ((values.sum(dim=1) - 1.0).abs() <= 1e-3).all())
    if probabilities:
        warnings.warn(
            f"loss '{label}' takes logits and applies a softmax itself, but the model's outputs "
            "are probabilities (each sample's classes sum to 1: the model ends in a softmax), "
            "which would be softmaxed twice and learn slowly. Remove the final softmax, or use "
            'loss="sparse_categorical_crossentropy", which takes probabilities.',
            UserWarning,
            stacklevel=2,
        )


def output_check(loss: Any, label: str) -> Callable[[torch.Tensor], None] | None:
    """The check of the first batch's outputs for a loss the model's last layer can
    contradict: logits given to a loss that takes probabilities, or a softmax's
    probabilities given to one that takes logits; None for other losses."""
    alternative = logits_alternative(loss)
    if alternative is not None:
        return functools.partial(warn_if_logits, label, alternative)
    if loss == "cross_entropy" or type(loss) is torch.nn.CrossEntropyLoss:
        return functools.partial(warn_if_probabilities, label)
    return None
