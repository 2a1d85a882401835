"""Modules that compute their own loss, HuggingFace style.

Chosen by ``Trainer(model)`` when no ``loss`` is given and the module defines no
``training_step``. The module is called with the batch's inputs and labels, and the
``loss`` it returns (a ``ModelOutput`` attribute, or a ``"loss"`` key) is trained on::

    from transformers import BertConfig, BertForSequenceClassification

    model = BertForSequenceClassification(BertConfig(...))
    trainer = Trainer(model, optimizer=torch.optim.AdamW(model.parameters(), lr=5e-5),
                      metrics=["accuracy"])
    trainer.fit(train_loader, validation_data=val_loader, epochs=3)  # dict batches
    logits = trainer.predict(test_loader)

Batches: a dict (``{"input_ids", "attention_mask", "labels"}``, as HuggingFace's collators
make) is passed as keyword arguments, ``model(**batch)``; an ``(inputs, labels)`` pair
(``fit(x, y)``) as ``model(**inputs, labels=labels)`` (or ``model(inputs, labels=labels)``).
Metrics given to the Trainer score the output's logits against the labels; `predict`
returns the logits.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from torchcallbacks.data.batches import batch_size, predict_inputs
from torchcallbacks.metrics import Objective
from torchcallbacks.models.plain import PlainKind
from torchcallbacks.outputs import describe, logits_of, logits_or_output, returned_loss

if TYPE_CHECKING:
    from torchcallbacks.trainer import Trainer


class OwnLossKind(PlainKind):
    """The kind of model for modules that return their own loss (see the module docstring)."""

    computes_own_loss = True  # fit(x) needs no y: the labels may sit inside x

    def __init__(self, trainer: Trainer) -> None:
        super().__init__(trainer)
        # The loss term of the objective is the module's own loss for the current batch;
        # metrics are scored as usual, on the logits.
        self.objective = trainer.objective = Objective(
            self._batch_loss, trainer.objective.metric_spec, trainer.objective.weighted_spec
        )
        self._loss: torch.Tensor | None = None
        self.takes_labels = _takes_labels(trainer.model)

    def _batch_loss(self, logits: Any, labels: Any) -> torch.Tensor:
        return self._loss  # type: ignore[return-value]

    def _split(self, batch: Any) -> tuple[tuple[Any, dict[str, Any]], Any]:
        """``((inputs, keyword arguments), labels)``: how to call the module on a batch, and
        the labels the metrics score against."""
        if isinstance(batch, Mapping):
            return (batch, {}), batch.get("labels")
        if isinstance(batch, tuple | list) and len(batch) == 3:
            raise ValueError(
                f"{type(self.trainer.model).__name__} computes its own loss (no loss= given), "
                "which sample weights cannot reach. To weight samples, pass loss= (it is then "
                "applied to the output's logits), or weight inside the model's loss."
            )
        if isinstance(batch, tuple | list) and len(batch) == 2:
            inputs, labels = batch
            if labels is None and isinstance(inputs, Mapping):  # train_on_batch(dict batch)
                return (inputs, {}), inputs.get("labels")
            if labels is None or not self.takes_labels:
                return (inputs, {}), None  # a plain module given no loss=: _score says so
            if isinstance(inputs, Mapping):
                return ({**inputs, "labels": labels}, {}), labels
            return (inputs, {"labels": labels}), labels
        return (batch, {}), None

    def _score(self, call: Any, labels: Any, weights: Any = None) -> tuple[torch.Tensor, list, Any]:
        # `compute` passes sample weights; a module that computes its own loss cannot take them.
        inputs, keywords = call
        output = self.forward(inputs, **keywords)
        loss = returned_loss(output)
        if loss is None:
            raise ValueError(
                "No loss given: pass loss= to Trainer (a Keras name such as 'mse', an "
                "nn.Module, or a callable (y_pred, y_true) -> scalar tensor). Without loss=, "
                f"the module must return its own loss (a `loss` attribute or key, as "
                f"HuggingFace models do when the batch has labels); it returned {describe(output)}."
            )
        logits = logits_of(output)
        if self.objective.names[1:] and (logits is None or labels is None):
            raise ValueError(
                "metrics= needs the output's logits and the batch's labels; the module "
                f"returned {describe(output)} and the batch has "
                f"{'no labels' if labels is None else 'labels'}. Put the labels in the batch "
                "(a 'labels' key, or y=) and return logits."
            )
        self._loss = loss
        total, values = self.objective(logits, labels)
        return total, values, logits

    def training_loss(self, batch: Any, batch_index: int) -> tuple[torch.Tensor, list, int]:
        trainer = self.trainer
        if trainer.class_weights is not None:
            raise ValueError(
                f"{type(trainer.model).__name__} computes its own loss (no loss= given), which "
                "class_weight cannot reach. Pass loss= (applied to the output's logits) to "
                "weight classes, or weight inside the model's loss."
            )
        call, labels = self._split(batch)
        if trainer.example_batch_inputs is None:
            trainer.example_batch_inputs = call[0]
        loss, values, logits = self.compute(call, labels)
        if self.objective.stateful:
            self.objective.update_stateful(logits, labels)
        return loss, values, batch_size(labels if labels is not None else call[0])

    def eval_batch(self, batch: Any, batch_index: int) -> tuple[list, int]:
        call, labels = self._split(batch)
        _, values, logits = self.compute(call, labels)
        if self.objective.stateful:
            self.objective.update_stateful(logits, labels)
        return values, batch_size(labels if labels is not None else call[0])

    def predict_batch(self, batch: Any, batch_index: int) -> Any:
        """The output's logits (attribute or key), else the output as it is."""
        inputs = batch if isinstance(batch, Mapping) else predict_inputs(batch)
        dtype = self.trainer._autocast_dtype
        if dtype is None:
            return logits_or_output(self.forward(inputs))
        with torch.autocast(self.trainer.device.type, dtype=dtype):
            return logits_or_output(self.forward(inputs))


def _takes_labels(module: torch.nn.Module) -> bool:
    """Whether ``module``'s forward accepts a ``labels`` keyword (HuggingFace models do)."""
    try:
        parameters = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError):  # no signature to read: try it
        return True
    return any(p.name == "labels" or p.kind is p.VAR_KEYWORD for p in parameters)
