"""Per-batch computation: how `Trainer` turns a batch into a loss, logged values and outputs.

`ObjectiveSteps` is the default strategy (forward on the inputs, score with the Trainer's
``loss``/``metrics``); `torchcallbacks.lightning.LightningSteps` overrides it for modules
that define ``training_step``, and `torchcallbacks.own_loss.OwnLossSteps` for modules that
return their own loss (HuggingFace models). `steps_for` picks one: a new kind of model plugs
in here, never in the loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from torchcallbacks import distributed
from torchcallbacks.callbacks.base import Callback
from torchcallbacks.metrics import MetricTracker
from torchcallbacks.outputs import prediction_of, scored_output
from torchcallbacks.weighting import ClassWeights

if TYPE_CHECKING:
    from torchcallbacks.trainer import Trainer


class ObjectiveSteps:
    """How `Trainer` turns one batch into a loss and logged values: the default strategy.

    Batches are ``(inputs, targets)``; the module's forward runs on the inputs and the
    Trainer's ``loss``/``metrics`` score the outputs.
    """

    computes_own_loss = False  # the module's output is scored by the Trainer's loss
    takes_weights = True  # sample_weight and class_weight reach the loss

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.objective = trainer.objective
        self.input_dtype = _floating_dtype(trainer.model)

    def tracker(self) -> MetricTracker:
        """A new epoch accumulator for the values the batch methods return."""
        return MetricTracker(self.objective)

    def callbacks(self, training: bool) -> list[Callback]:
        """Callbacks run before the user's, in `fit` (``training``) or `evaluate`/`predict`
        (none here)."""
        return []

    def validates(self) -> bool:
        """Whether `fit` can run the validation data it was given (always, here)."""
        return True

    def validation_logs(self, logs: Mapping[str, Any]) -> dict[str, Any]:
        """Validation results as epoch-log entries (Keras's ``val_`` prefix)."""
        return {f"val_{k}": v for k, v in logs.items()}

    def forward(self, inputs: Any, **extra: Any) -> Any:
        """Run the module: ``module(x)``, ``module(*inputs)`` or ``module(**inputs)``, with
        floating inputs in the dtype of the module's floating parameters."""
        trainer = self.trainer
        module = trainer._module
        if trainer.channels_last:
            inputs = _channels_last(inputs)
        if isinstance(inputs, torch.Tensor):
            dtype = self.input_dtype
            if inputs.dtype is not dtype and inputs.is_floating_point() and dtype is not None:
                inputs = inputs.to(dtype)
            return module(inputs, **extra)
        inputs = cast_floating(inputs, self.input_dtype)
        if isinstance(inputs, Mapping):
            return module(**inputs, **extra)
        if isinstance(inputs, tuple | list):
            return module(*inputs, **extra)
        return module(inputs, **extra)

    def compute(
        self, inputs: Any, targets: Any, weights: Any = None
    ) -> tuple[torch.Tensor, list, Any]:
        """Loss, tracker values and outputs, under autocast when mixed precision is on."""
        dtype = self.trainer._autocast_dtype
        if dtype is None:
            return self._score(inputs, targets, weights)
        with torch.autocast(self.trainer.device.type, dtype=dtype):
            return self._score(inputs, targets, weights)

    def _score(self, inputs: Any, targets: Any, weights: Any) -> tuple[torch.Tensor, list, Any]:
        outputs = self.forward(inputs)
        # (the class test first: no extra call per step for the usual tensor output)
        if outputs.__class__ is not torch.Tensor and not isinstance(outputs, torch.Tensor):
            objective = self.objective
            outputs = scored_output(outputs, targets, objective.loss_spec, objective.metric_spec)
        if self.objective.heads is None:
            self.objective.build(outputs)
        loss, values = self.objective(outputs, targets, weights)
        return loss, values, outputs

    def train_batch(self, batch: Any, batch_index: int) -> tuple[torch.Tensor, list, int]:
        """The loss to backpropagate, the values for the tracker and the batch size."""
        trainer = self.trainer
        inputs, targets, weights = split_weighted_batch(batch, trainer.class_weights)
        if trainer.example_batch_inputs is None:
            trainer.example_batch_inputs = inputs
        loss, values, outputs = self.compute(inputs, targets, weights)
        if self.objective.stateful:
            self.objective.update_stateful(outputs, targets, weights)
        return loss, values, batch_size(targets)

    def eval_batch(self, batch: Any, batch_index: int) -> tuple[list, int]:
        """Values and batch size of a validation batch (under ``no_grad``)."""
        inputs, targets, weights = split_weighted_batch(batch)
        _, values, outputs = self.compute(inputs, targets, weights)
        if self.objective.stateful:
            self.objective.update_stateful(outputs, targets, weights)
        return values, batch_size(targets)

    test_batch = eval_batch  # `evaluate`'s batches: the same computation here

    def predict_batch(self, batch: Any, batch_index: int) -> Any:
        dtype = self.trainer._autocast_dtype
        if dtype is None:
            return prediction_of(self.forward(predict_inputs(batch)))
        with torch.autocast(self.trainer.device.type, dtype=dtype):
            return prediction_of(self.forward(predict_inputs(batch)))


def steps_for(trainer: Trainer) -> ObjectiveSteps:
    """The batch strategy for the trainer's module and loss.

    With ``loss=``: `ObjectiveSteps`. Without: `LightningSteps` when the module defines
    ``training_step``, else `OwnLossSteps` (the module returns its own loss).
    """
    if trainer.objective.loss_spec is not None:
        return ObjectiveSteps(trainer)
    from torchcallbacks.lightning import LightningSteps, user_method

    if user_method(trainer.model, "training_step") is not None:
        return LightningSteps(trainer)
    from torchcallbacks.own_loss import OwnLossSteps

    return OwnLossSteps(trainer)


def split_batch(batch: Any) -> tuple[Any, Any]:
    """``(inputs, targets)`` of a batch: a pair, or a dict whose ``labels`` are the targets
    (HuggingFace's collators) and whose other keys are the inputs."""
    if isinstance(batch, tuple | list) and len(batch) == 2:
        return batch[0], batch[1]
    if isinstance(batch, Mapping) and "labels" in batch:
        return {k: v for k, v in batch.items() if k != "labels"}, batch["labels"]
    length = f" of length {len(batch)}" if isinstance(batch, tuple | list) else ""
    keys = f" with keys {sorted(batch)} and no 'labels'" if isinstance(batch, Mapping) else ""
    raise ValueError(
        "each batch must be an (inputs, targets) pair or (inputs, targets, sample_weight); "
        f"got {type(batch).__name__}{length}"
        f"{keys}. Wrap single tensors as TensorDataset(x, y), or pass x and y to fit; a dict "
        "batch gives its targets under 'labels'."
    )


def _floating_dtype(module: torch.nn.Module) -> torch.dtype | None:
    """The dtype of the module's floating parameters (None when it has none)."""
    for parameter in module.parameters():
        if parameter.is_floating_point():
            return parameter.dtype
    return None


def cast_floating(inputs: Any, dtype: torch.dtype | None) -> Any:
    """``inputs`` with floating tensors (inside tuples, lists and dicts too) cast to ``dtype``;
    the containers themselves when nothing needs a cast (a ``BatchEncoding`` stays one)."""
    if dtype is None:
        return inputs
    if isinstance(inputs, torch.Tensor):
        return inputs.to(dtype) if inputs.is_floating_point() else inputs
    if isinstance(inputs, Mapping):
        cast = {k: cast_floating(v, dtype) for k, v in inputs.items()}
        return inputs if all(cast[k] is v for k, v in inputs.items()) else cast
    if isinstance(inputs, tuple | list):
        items = [cast_floating(v, dtype) for v in inputs]
        return inputs if all(a is b for a, b in zip(items, inputs)) else tuple(items)
    return inputs


def split_weighted_batch(
    batch: Any, class_weights: ClassWeights | None = None
) -> tuple[Any, Any, Any]:
    """``(inputs, targets, sample_weight)`` of an ``(x, y)`` or ``(x, y, sample_weight)``
    batch; with ``class_weights`` the weights come from the targets' classes (training)."""
    size = len(batch) if isinstance(batch, tuple | list) else 0
    if size == 2:
        (inputs, targets), weights = batch, None
    elif size == 3:
        inputs, targets, weights = batch
    else:
        inputs, targets = split_batch(batch)  # any other form, or the error for a bad one
        weights = None
    if class_weights is not None:
        if weights is not None:
            raise ValueError(
                "You cannot `class_weight` and `sample_weight` at the same time: the batches "
                "already carry sample weights."
            )
        weights = class_weights(targets)
    return inputs, targets, weights


def predict_inputs(batch: Any) -> Any:
    """What the module runs on in `predict`: targets and weights are left out, as Keras's
    predict ignores them (a dict batch loses its ``labels``)."""
    if isinstance(batch, tuple | list) and len(batch) in (1, 2, 3):
        batch = batch[0]
    if isinstance(batch, Mapping) and "labels" in batch:
        return split_batch(batch)[0]
    return batch


def batch_size(targets: Any) -> int:
    if isinstance(targets, torch.Tensor):
        return targets.shape[0]
    if isinstance(targets, Mapping):
        return batch_size(next(iter(targets.values())))
    if isinstance(targets, tuple | list):
        return batch_size(targets[0])
    return len(targets)


def _channels_last(inputs: Any) -> Any:
    if isinstance(inputs, torch.Tensor) and inputs.ndim == 4:
        return inputs.contiguous(memory_format=torch.channels_last)
    return inputs


def concatenate_outputs(outputs: list[Any], gather: bool, order: torch.Tensor | None = None) -> Any:
    """Concatenate per-batch outputs on the CPU; with ``gather``, add every rank's rows and,
    when ``order`` gives each row's sample index, put them back in input order."""
    if not outputs:
        return torch.empty(0)
    first = outputs[0]
    if isinstance(first, torch.Tensor):
        local = torch.cat(outputs)
        if not gather:
            return local.cpu()
        gathered = distributed.gather(local).cpu()
        if order is None or len(order) != len(gathered):
            return gathered
        in_order = gathered.new_empty((int(order.max()) + 1, *gathered.shape[1:]))
        in_order[order] = gathered  # padding rows repeat samples and write the same values
        return in_order
    if isinstance(first, Mapping):
        return {k: concatenate_outputs([o[k] for o in outputs], gather, order) for k in first}
    if isinstance(first, tuple | list):
        parts = (
            concatenate_outputs([o[i] for o in outputs], gather, order) for i in range(len(first))
        )
        return type(first)(parts)
    return outputs
