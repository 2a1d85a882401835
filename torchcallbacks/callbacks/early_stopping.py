"""`EarlyStopping`: stop training when a monitored quantity has stopped improving."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch

from torchcallbacks.callbacks._monitor import MonitorCallback


class EarlyStopping(MonitorCallback):
    """Stop training when ``monitor`` has stopped improving (Keras 3.15 semantics).

    At each epoch end ``wait`` is incremented, then reset to 0 by an improvement of more than
    ``min_delta`` over the best value so far (only when the value also beats ``baseline``,
    if one is given). Training stops at the first non-improving epoch (never epoch 0) where
    ``wait >= patience``. Epochs before ``start_from_epoch`` are ignored.

    With ``restore_best_weights=True`` the module's weights from the best epoch are loaded
    back whenever training ends (early stop, another callback stopping it, or all epochs done).
    They are kept as a copy of the ``state_dict`` **on the CPU**, so GPU memory is not doubled.

    Example::

        import torch
        from torchcallbacks import EarlyStopping, Trainer

        model = torch.nn.Linear(3, 1)
        trainer = Trainer(model, optimizer="sgd", loss="mse")
        x, y = torch.randn(64, 3), torch.randn(64, 1)
        stop = EarlyStopping(monitor="loss", min_delta=0.01, patience=2, restore_best_weights=True)
        history = trainer.fit(x, y, epochs=50, callbacks=[stop], verbose=0)
        print(stop.stopped_epoch, stop.best_epoch, len(history.epoch))

    Attributes (Keras's names, reset in `on_train_begin`): ``wait``, ``stopped_epoch`` (0 when
    it never stopped training), ``best``, ``best_epoch``, ``best_weights``.
    """

    missing_message = (
        "Early stopping conditioned on metric `{monitor}` which is not available. "
        "Available metrics are: {available}"
    )

    @property
    def on_every_process(self) -> bool:
        """Restoring the best weights must happen on every rank (the replicas stay equal)."""
        return bool(self.restore_best_weights)

    def __init__(
        self,
        monitor: str = "val_loss",
        min_delta: float = 0,
        patience: int = 0,
        verbose: int = 0,
        mode: str = "auto",
        baseline: float | None = None,
        restore_best_weights: bool = False,
        start_from_epoch: int = 0,
    ) -> None:
        super().__init__(monitor, mode=mode, min_delta=min_delta, baseline=baseline)
        self.patience = patience
        self.verbose = verbose
        self.restore_best_weights = restore_best_weights
        self.start_from_epoch = start_from_epoch
        self._reset()

    def _reset(self) -> None:
        self.wait = 0
        self.stopped_epoch = 0
        self.best: Any = None
        self.best_weights: dict[str, Any] | None = None
        self.best_epoch = 0

    def on_train_begin(self, logs: dict | None = None) -> None:
        super().on_train_begin(logs)
        self._reset()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        current = self._get_monitor_value(logs)
        if current is None or epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            # Something to restore even if no later epoch improves.
            self.best_weights = self._copy_weights()
            self.best_epoch = epoch
        self.wait += 1
        if self._is_improvement(current, self.best):
            self.best = current
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights = self._copy_weights()
            # Keras 3.15: only an improvement that also beats the baseline resets `wait`.
            if self.baseline is None or self._is_improvement(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.trainer.stop_training = True

    def on_train_end(self, logs: dict | None = None) -> None:
        talk = self.verbose > 0 and getattr(self.trainer, "is_main_process", True)
        if self.stopped_epoch > 0 and talk:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if talk:
                print(
                    "Restoring model weights from the end of the best epoch: "
                    f"{self.best_epoch + 1}."
                )
            self.model.load_state_dict(self.best_weights)

    def _copy_weights(self) -> dict[str, Any]:
        """A CPU copy of the module's ``state_dict`` (no extra accelerator memory)."""
        return _to_cpu(self.model.state_dict())

    def state_dict(self) -> dict[str, Any]:
        return {
            "wait": self.wait,
            "stopped_epoch": self.stopped_epoch,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "best_weights": self.best_weights,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.wait = int(state["wait"])
        self.stopped_epoch = int(state["stopped_epoch"])
        self.best = state["best"]
        self.best_epoch = int(state["best_epoch"])
        weights = state["best_weights"]
        self.best_weights = None if weights is None else _to_cpu(weights)


def _to_cpu(weights: Mapping[str, Any]) -> dict[str, Any]:
    return {
        key: value.detach().to("cpu", copy=True)
        if isinstance(value, torch.Tensor)
        else copy.deepcopy(value)
        for key, value in weights.items()
    }
