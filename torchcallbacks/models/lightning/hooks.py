"""A LightningModule's fit-level hooks, called at the matching events of the loop."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from torchcallbacks.callbacks.base import Callback, to_float

if TYPE_CHECKING:
    from torchcallbacks.models.lightning.kind import LightningKind


class ModuleHooks(Callback):
    """Calls the LightningModule's (and its Lightning callbacks') fit-level hooks at the
    matching events of `fit`, in Lightning's order relative to the loop: entering the stage
    and ``on_fit_start``/``on_train_start`` at the start, ``on_train_epoch_start``/``end``
    around each epoch (the end after validation, with ``callback_metrics`` holding this
    epoch's values), ReduceLROnPlateau's step after it, and ``on_train_end``,
    ``on_fit_end`` and ``teardown`` at the end. Values logged in ``on_train_start``,
    ``on_train_epoch_start`` and ``on_train_epoch_end`` join the epoch logs.

    Its state in full checkpoints: the schedulers' and the Lightning callbacks' states.
    """

    def __init__(self, kind: LightningKind, training: bool) -> None:
        super().__init__()
        self.kind = kind
        self.training = training
        self.view = kind.view
        # What on_train_start/on_train_epoch_start log joins the epoch's logs, as in Lightning.
        self._opening: list[tuple[str, Any, bool, bool, int | None]] = []

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._opening = self.kind.begin_fit(self.params or {})

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.view.stage = "train"
        self._opening += self.kind.run_hook("on_train_epoch_start")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        kind, view = self.kind, self.view
        view.stage = "train"
        logs = {} if logs is None else logs  # the dict every later callback receives
        view.callback_metrics = as_tensors(logs)  # this epoch's, as in Lightning
        entries = self._opening + kind.run_hook("on_train_epoch_end")
        self._opening = []
        values = _epoch_values(entries)
        logs.update(values)
        view.callback_metrics.update(as_tensors(values))
        if kind.scheduler_configs and kind.automatic:  # (manual: training_step steps them)
            logs["lr"] = kind.trainer.get_lr() if kind.epoch_lr is None else kind.epoch_lr
            for config in kind.scheduler_configs:
                due = (epoch + 1) % config.frequency == 0
                if config.reduce_on_plateau and config.interval == "epoch" and due:
                    kind.scheduler_step(config, logs)

    def on_train_end(self, logs: dict | None = None) -> None:
        self.kind.end_fit()

    def on_test_end(self, logs: dict | None = None) -> None:
        self.view.callback_metrics.update(as_tensors(logs or {}))  # validation or evaluate's

    def state_dict(self) -> dict[str, Any]:
        kind = self.kind
        state: dict[str, Any] = {}
        if kind.scheduler_configs:
            state["schedulers"] = [
                config.scheduler.state_dict() for config in kind.scheduler_configs
            ]
        callbacks = {
            callback.state_key: callback.state_dict() for callback in kind.lightning_callbacks
        }
        callbacks = {key: value for key, value in callbacks.items() if value}
        if callbacks:
            state["lightning_callbacks"] = callbacks
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        kind = self.kind
        for config, saved in zip(kind.scheduler_configs, state.get("schedulers") or []):
            config.scheduler.load_state_dict(saved)
        saved = state.get("lightning_callbacks") or {}
        for callback in kind.lightning_callbacks:
            if callback.state_key in saved:
                callback.load_state_dict(saved[callback.state_key])


def as_tensors(logs: Mapping[str, Any]) -> dict[str, Any]:
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
