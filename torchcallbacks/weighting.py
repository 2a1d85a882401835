"""Keras 3's sample and class weights: batches ``(x, y, sample_weight)``, ``class_weight``,
weighted losses and ``weighted_metrics``.

- The loss of a weighted batch is ``sum(loss_i * w_i) / n``, ``n`` the number of per-sample
  values (Keras's ``"sum_over_batch_size"``): the weights scale each sample's share, they do
  not renormalise the mean. The logged ``loss`` is the mean of the batch losses weighted by
  batch size, as Keras's loss tracker does.
- ``metrics`` ignore the weights; ``weighted_metrics`` are weighted means,
  ``sum(m_i * w_i) / sum(w_i)`` over the epoch. A weighted metric named like an unweighted
  one is logged as ``weighted_<name>``.
- ``class_weight`` maps each sample's class (the target, its argmax when one-hot, rounded)
  to a weight; classes it does not name weigh 1. It applies to training batches only.
- ``loss_weights`` (`loss_weights_for`) scale each output's loss, sample weights included:
  the trained and logged ``loss`` is ``sum(w_o * loss_o)``, while ``<output>_loss`` is
  logged unweighted. A single output's ``loss`` is its weighted loss.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from torchcallbacks import losses
from torchcallbacks.data.inputs import _to_tensor, as_weights, move_to_device


class ClassWeights:
    """``class_weight`` as a lookup table on the device: weights without a host sync."""

    def __init__(self, class_weight: Mapping[Any, float], device: torch.device) -> None:
        if not isinstance(class_weight, Mapping):
            raise ValueError(
                "`class_weight` must be a dict-like mapping of class indices to weights. "
                f"Received: class_weight={class_weight!r} of type {type(class_weight)}."
            )
        cleaned: dict[int, float] = {}
        for key, value in class_weight.items():
            try:
                index = int(key)
            except (TypeError, ValueError):
                index = -1
            if index < 0:
                raise ValueError(
                    "`class_weight` must be a dictionary with integer keys representing class "
                    f"indices. Received an invalid key: {key!r} of type {type(key)}."
                )
            cleaned[index] = float(value)
        table = torch.ones(max(cleaned, default=-1) + 2)  # the last entry: unnamed classes
        for index, value in cleaned.items():
            table[index] = value
        self.table = table.to(device)

    def __call__(self, targets: Any) -> torch.Tensor:
        """One weight per sample, from the targets' classes (as Keras computes them)."""
        if not isinstance(targets, torch.Tensor):
            raise ValueError("`class_weight` is only supported for Models with a single output.")
        classes = targets
        if classes.ndim > 1:
            classes = classes.argmax(dim=-1) if classes.shape[-1] != 1 else classes.squeeze(-1)
        classes = classes.round().long() if classes.is_floating_point() else classes.long()
        unnamed = len(self.table) - 1
        classes = torch.where((classes >= 0) & (classes < unnamed), classes, unnamed)
        return self.table[classes]


def class_weights_for(
    class_weight: Mapping[Any, float] | None, sample_weight: Any, device: torch.device
) -> ClassWeights | None:
    """``class_weight`` for `PlainKind`; it excludes ``sample_weight``, as in Keras."""
    if class_weight is None:
        return None
    if sample_weight is not None:
        raise ValueError(
            "Arguments `sample_weight` and `class_weight` cannot be specified at the same time."
        )
    return ClassWeights(class_weight, device)


def weighted_loss(loss_fn: Any, y_pred: Any, y_true: Any, weights: torch.Tensor) -> torch.Tensor:
    """The loss of a weighted batch, reduced as Keras reduces it.

    The Keras names and loss classes give per-sample values; a torch loss module (any
    ``reduction="mean"``/``"sum"`` module) is called with ``reduction="none"`` and keeps its
    own reduction; other callables must return one value per sample.
    """
    if isinstance(loss_fn, losses.Loss):
        return loss_fn(y_pred, y_true, sample_weight=weights)
    reduction = "sum_over_batch_size"
    if loss_fn in losses.LOSSES.values():
        values = loss_fn(y_pred, y_true, reduction="none")
    elif isinstance(loss_fn, torch.nn.Module) and getattr(loss_fn, "reduction", None) in (
        "mean",
        "sum",
    ):
        reduction = "sum" if loss_fn.reduction == "sum" else reduction
        original = loss_fn.reduction
        loss_fn.reduction = "none"
        try:
            values = loss_fn(y_pred, y_true)
        finally:
            loss_fn.reduction = original
    else:
        values = loss_fn(y_pred, y_true)
        if not isinstance(values, torch.Tensor) or values.ndim == 0:
            raise ValueError(
                f"cannot apply sample weights to the loss {losses.loss_name(loss_fn)!r}: it "
                "returns one value for the whole batch. Return one value per sample "
                "(no mean over the batch), or use a Keras loss name or a torch loss module."
            )
    return losses.reduce_weighted(values, weights, reduction)


class WeightedMetrics:
    """The ``weighted_metrics`` of one output: weighted sums kept in the epoch accumulator
    (a numerator and a denominator per function) and Keras-style metric objects given the
    weights. ``metrics`` holds ``(name, resolved, is_object)``; ``taken`` the names already
    logged, which a weighted metric's name gets the ``weighted_`` prefix to avoid."""

    def __init__(
        self, prefix: str, metrics: Sequence[tuple[str, Any, bool]], taken: Sequence[str]
    ) -> None:
        self.functions: list[Any] = []
        self.keys: list[str] = []  # accumulator keys: numerator, denominator per function
        self.ratios: list[tuple[str, str, str]] = []  # (log name, numerator, denominator)
        self.stateful: list[tuple[str, Any]] = []
        self.names: list[str] = []
        used = set(taken)
        for base, resolved, is_object in metrics:
            name = prefix + base if prefix + base not in used else prefix + "weighted_" + base
            used.add(name)
            self.names.append(name)
            if is_object:
                if not resolved.keras_style:
                    raise TypeError(
                        f"weighted metric {name!r} cannot take sample weights: a metric object "
                        "in weighted_metrics needs Keras's update_state(y_true, y_pred, "
                        "sample_weight=None). Pass it in metrics instead."
                    )
                self.stateful.append((name, resolved))
            else:
                self.functions.append(resolved)
                numerator, denominator = f"{name}/weighted_sum", f"{name}/weight_sum"
                self.keys += [numerator, denominator]
                self.ratios.append((name, numerator, denominator))

    def values(self, y_pred: Any, y_true: Any, weights: torch.Tensor | None) -> list[torch.Tensor]:
        """Per function: the batch's weighted sum and weight sum, each divided by the batch
        size (the accumulator multiplies them back)."""
        out = []
        for (name, _, _), fn in zip(self.ratios, self.functions):
            values = fn(y_pred, y_true)
            if not isinstance(values, torch.Tensor) or values.ndim == 0:
                raise ValueError(
                    f"weighted metric {name!r} returned one value for the whole batch; "
                    "weighting needs one value per sample (no mean over the batch)."
                )
            values = values.detach().float()
            if weights is None:
                aligned = torch.ones_like(values)
            else:
                aligned = losses.align_weights(weights, values).expand_as(values)
            size = values.shape[0]
            out += [(values * aligned).sum() / size, aligned.sum() / size]
        return out

    def update_stateful(self, y_pred: Any, y_true: Any, weights: torch.Tensor | None) -> None:
        for _, metric in self.stateful:
            metric.metric.update_state(y_true, y_pred, sample_weight=weights)


def ratios(logs: dict[str, float], weighted: Sequence[tuple[str, str, str]]) -> None:
    """Replace each weighted metric's accumulated sums in ``logs`` by their ratio."""
    for name, numerator, denominator in weighted:
        total, weight = logs.pop(numerator), logs.pop(denominator)
        logs[name] = total / weight if weight else 0.0


def loss_weights_for(
    loss_weights: Any, outputs: Sequence[str] | None, keyed: bool = False
) -> list[float] | None:
    """Keras's ``loss_weights`` as one factor per loss, in the order of the losses.

    ``outputs``: the names of the outputs that have a loss (None for a single output);
    ``keyed``: the losses were given as a dict, so the weights must be one too. A single
    output takes a number (or a list of one); several take a list in the order of the
    losses or a dict keyed like them. Anything else raises a ValueError naming the outputs.
    """
    if loss_weights is None:
        return None
    if outputs is None:
        if isinstance(loss_weights, list | tuple) and len(loss_weights) == 1:
            loss_weights = loss_weights[0]
        if isinstance(loss_weights, Mapping | list | tuple):
            raise ValueError(
                f"loss_weights={loss_weights!r} does not fit a model with a single output and "
                "loss: give one number (e.g. loss_weights=0.5)."
            )
        return [_loss_weight(loss_weights, "loss_weights")]
    names = ", ".join(repr(name) for name in outputs)
    if isinstance(loss_weights, Mapping):
        unknown = [key for key in loss_weights if key not in outputs]
        missing = [name for name in outputs if name not in loss_weights]
        if unknown or missing:
            problem = (
                f"names {unknown}, which are not outputs with a loss"
                if unknown
                else f"has no weight for {missing}"
            )
            raise ValueError(
                f"loss_weights {problem}; the outputs with a loss are {names}: give one "
                "weight per output, keyed like the outputs (1.0 leaves an output's loss as it is)."
            )
        return [_loss_weight(loss_weights[name], f"loss_weights[{name!r}]") for name in outputs]
    if keyed:
        raise ValueError(
            f"loss is a dict, so loss_weights must be one too, keyed like it ({names}); got "
            f"{type(loss_weights).__name__} {loss_weights!r}."
        )
    if not isinstance(loss_weights, list | tuple) or len(loss_weights) != len(outputs):
        count = len(loss_weights) if isinstance(loss_weights, list | tuple) else 1
        raise ValueError(
            f"`loss_weights` must match the number of losses, got {len(outputs)} losses (for "
            f"the outputs {names}) and {count} weights: give a list with one weight per "
            "output, in order, or a dict keyed like the outputs."
        )
    return [_loss_weight(w, f"loss_weights[{i}]") for i, w in enumerate(loss_weights)]


def _loss_weight(value: Any, where: str) -> float:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value)
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise ValueError(f"{where} must be a number (a float), got {value!r}.")
    return float(value)


def batch_from_arrays(x: Any, y: Any, sample_weight: Any, device: torch.device) -> tuple[Any, ...]:
    """One batch for ``train_on_batch``/``test_on_batch``/``predict_on_batch``, on the device:
    ``(x, y)`` or ``(x, y, sample_weight)``."""
    batch = [_to_tensor(x), None if y is None else _to_tensor(y)]
    if sample_weight is not None:
        batch.append(as_weights(sample_weight))
    return move_to_device(tuple(batch), device)
