"""The plain kind of model: a module, and the Trainer's ``loss`` and ``metrics``.

Batches are ``(inputs, targets)`` or ``(inputs, targets, sample_weight)``; the module's forward
runs on the inputs, and the loss and metrics score its outputs against the targets.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from torchcallbacks.data.batches import (
    batch_size,
    cast_floating,
    predict_inputs,
    split_weighted_batch,
)
from torchcallbacks.metrics import MetricTracker
from torchcallbacks.models.optimization import AutomaticOptimization
from torchcallbacks.outputs import prediction_of, scored_output

if TYPE_CHECKING:
    from torchcallbacks.trainer import Trainer


class PlainKind(AutomaticOptimization):
    """A module scored by the Trainer's ``loss`` and ``metrics`` (see the module docstring)."""

    def __init__(self, trainer: Trainer) -> None:
        super().__init__(trainer)
        self.objective = trainer.objective
        self.input_dtype = _floating_dtype(trainer.model)

    def tracker(self) -> MetricTracker:
        return MetricTracker(self.objective)

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
            try:
                return module(inputs, **extra)
            except RuntimeError as error:  # torch's "mat1 and mat2 must have the same dtype"
                if dtype is None or inputs.is_floating_point() or "type" not in str(error):
                    raise
                raise TypeError(_integer_inputs_message(inputs, dtype, error)) from error
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

    def training_loss(self, batch: Any, batch_index: int) -> tuple[torch.Tensor, list, int]:
        trainer = self.trainer
        inputs, targets, weights = split_weighted_batch(batch, trainer.class_weights)
        if trainer.example_batch_inputs is None:
            trainer.example_batch_inputs = inputs
        loss, values, outputs = self.compute(inputs, targets, weights)
        if self.objective.stateful:
            self.objective.update_stateful(outputs, targets, weights)
        return loss, values, batch_size(targets)

    def eval_batch(self, batch: Any, batch_index: int) -> tuple[list, int]:
        inputs, targets, weights = split_weighted_batch(batch)
        _, values, outputs = self.compute(inputs, targets, weights)
        if self.objective.stateful:
            self.objective.update_stateful(outputs, targets, weights)
        return values, batch_size(targets)

    def predict_batch(self, batch: Any, batch_index: int) -> Any:
        dtype = self.trainer._autocast_dtype
        if dtype is None:
            return prediction_of(self.forward(predict_inputs(batch)))
        with torch.autocast(self.trainer.device.type, dtype=dtype):
            return prediction_of(self.forward(predict_inputs(batch)))


def _floating_dtype(module: torch.nn.Module) -> torch.dtype | None:
    """The dtype of the module's floating parameters (None when it has none)."""
    for parameter in module.parameters():
        if parameter.is_floating_point():
            return parameter.dtype
    return None


def _integer_inputs_message(inputs: torch.Tensor, dtype: torch.dtype, error: Exception) -> str:
    """Keras casts its inputs to float32; here integer inputs stay integers (token ids)."""
    return (
        f"The model failed on inputs of dtype {inputs.dtype} (its parameters are {dtype}): "
        f"{error}. Integer inputs are passed as they are (token ids, indices); for images "
        "stored as integers pass floats, e.g. x.float() / 255 (NumPy: x.astype('float32') "
        "/ 255)."
    )


def _channels_last(inputs: Any) -> Any:
    if isinstance(inputs, torch.Tensor) and inputs.ndim == 4:
        return inputs.contiguous(memory_format=torch.channels_last)
    return inputs
