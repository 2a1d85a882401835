"""A LightningModule's epoch-level hooks, called at the matching events of the loop."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from torchcallbacks.callbacks.base import Callback, to_float

if TYPE_CHECKING:
    from torchcallbacks.models.lightning.kind import LightningKind


class ModuleHooks(Callback):
    """Calls the LightningModule's own hooks at the matching events of `fit`, `evaluate`
    and `predict`, in Lightning's order relative to the loop. Values the module logs in
    ``on_train_epoch_end`` join the epoch logs (after validation, as in Lightning); those
    logged in ``on_validation_epoch_end``/``on_test_epoch_end`` join the evaluation's."""

    def __init__(self, steps: LightningKind, training: bool) -> None:
        super().__init__()
        self.steps = steps
        self.training = training
        self.view = steps.view
        # What on_train_start/on_train_epoch_start log joins the epoch's logs, as in Lightning.
        self._opening: list[tuple[str, Any, bool, bool, int | None]] = []

    def _evaluation_stage(self) -> str:
        return "validation" if self.training else self.steps.test_stage

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.view.stage = "train"
        self.view.max_epochs = (self.params or {}).get("epochs")
        self.view.epochs_completed = None
        self._opening = self.steps.run_hook("on_fit_start") + self.steps.run_hook("on_train_start")

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.view.stage = "train"
        self._opening += self.steps.run_hook("on_train_epoch_start")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.view.stage = "train"
        entries = self._opening + self.steps.run_hook("on_train_epoch_end")
        self._opening = []
        if logs is not None:
            logs.update(_epoch_values(entries))  # the dict every later callback receives
            self.view.callback_metrics = _as_tensors(logs)

    def on_train_end(self, logs: dict | None = None) -> None:
        trainer = self.steps.trainer
        self.view.epochs_completed = trainer.current_epoch + bool(trainer.history.epoch)
        self.steps.run_hook("on_train_end")
        self.steps.run_hook("on_fit_end")
        self.view.stage = None

    def on_test_begin(self, logs: dict | None = None) -> None:
        stage = self._evaluation_stage()
        self.view.stage = "validate" if stage == "validation" else "test"
        self.steps.opening_entries = self.steps.run_hook(f"on_{stage}_start")
        self.steps.opening_entries += self.steps.run_hook(f"on_{stage}_epoch_start")
        self.steps.pending_epoch_end = f"on_{stage}_epoch_end"

    def on_test_end(self, logs: dict | None = None) -> None:
        self.view.callback_metrics.update(_as_tensors(logs or {}))  # validation or evaluate's
        self.steps.pending_epoch_end = None
        self.steps.run_hook(f"on_{self._evaluation_stage()}_end")
        self.view.stage = "train" if self.training else None

    def on_predict_begin(self, logs: dict | None = None) -> None:
        self.view.stage = "predict"
        self.steps.run_hook("on_predict_start")
        self.steps.run_hook("on_predict_epoch_start")

    def on_predict_end(self, logs: dict | None = None) -> None:
        self.steps.run_hook("on_predict_epoch_end")
        self.steps.run_hook("on_predict_end")
        self.view.stage = None


def _as_tensors(logs: Mapping[str, Any]) -> dict[str, Any]:
    """Logs as Lightning's ``callback_metrics`` holds them: numbers as scalar tensors."""
    return {
        name: torch.tensor(value) if isinstance(value, numbers.Real) else value
        for name, value in logs.items()
    }


def _epoch_values(entries: list[tuple[str, Any, bool, bool, int | None]]) -> dict[str, Any]:
    """Floats of what an epoch-end hook logged (metric objects: their ``compute()``)."""
    values: dict[str, Any] = {}
    for name, value, *_ in entries:
        if isinstance(value, torch.Tensor | float):
            values[name] = to_float(value)
        else:  # a metric object: read, then reset for the next epoch (as Lightning does)
            values[name] = to_float(value.compute())
            value.reset()
    return values
