"""`ReduceLROnPlateau`: lower the learning rate when a monitored quantity stops improving."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from torchcallbacks.callbacks._monitor import MonitorCallback


class ReduceLROnPlateau(MonitorCallback):
    """Multiply the learning rate by ``factor`` after ``patience`` epochs without improvement.

    Keras 3.15 semantics: at each epoch end the current (pre-reduction) learning rate is
    written into the logs as ``lr``; during ``cooldown`` epochs after a reduction ``wait`` stays
    0; an improvement of more than ``min_delta`` resets ``wait``; otherwise ``wait`` grows and,
    once it reaches ``patience``, the learning rate becomes ``max(lr * factor, min_lr)`` unless
    it is already at ``min_lr`` (compared in float32, as Keras does).

    Param groups: the learning rate read, logged and compared with ``min_lr`` is the first
    param group's. A reduction sets the first group to the new value and every other group to
    the new value times its ratio to the first group (``trainer.set_lr``), so groups with
    different learning rates are all scaled by ``factor`` and keep their ratios, also when the
    first group is clamped at ``min_lr``.

    Example::

        import torch
        from torchcallbacks import ReduceLROnPlateau, Trainer

        model = torch.nn.Linear(3, 1)
        trainer = Trainer(model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), loss="mse")
        x, y = torch.randn(64, 3), torch.randn(64, 1)
        reduce = ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1, min_delta=10.0)
        history = trainer.fit(x, y, epochs=3, callbacks=[reduce], verbose=0)
        print(history.history["lr"], trainer.get_lr())  # [0.1, 0.1, 0.05] 0.025

    Attributes (Keras's names, reset in `on_train_begin`): ``wait``, ``best``,
    ``cooldown_counter``. The legacy ``epsilon`` keyword is accepted as ``min_delta`` with a
    deprecation warning (as tf.keras does).
    """

    missing_message = (
        "Learning rate reduction is conditioned on metric `{monitor}` which is not "
        "available. Available metrics are: {available}."
    )

    on_every_process = True  # under torchrun every rank needs it: it changes the learning rate

    def __init__(
        self,
        monitor: str = "val_loss",
        factor: float = 0.1,
        patience: int = 10,
        verbose: int = 0,
        mode: str = "auto",
        min_delta: float = 1e-4,
        cooldown: int = 0,
        min_lr: float = 0.0,
        **kwargs: Any,
    ) -> None:
        if "epsilon" in kwargs:
            min_delta = kwargs.pop("epsilon")
            warnings.warn(
                "`epsilon` argument is deprecated and will be removed, use `min_delta` instead.",
                stacklevel=2,
            )
        if kwargs:
            raise TypeError(
                f"ReduceLROnPlateau got unexpected keyword argument(s) {sorted(kwargs)}; valid "
                "ones are monitor, factor, patience, verbose, mode, min_delta, cooldown, min_lr."
            )
        if factor >= 1.0:
            raise ValueError(
                f"ReduceLROnPlateau does not support a factor >= 1.0. Received factor={factor}"
            )
        super().__init__(monitor, mode=mode, min_delta=min_delta)
        self.factor = factor
        self.patience = patience
        self.verbose = verbose
        self.cooldown = cooldown
        self.min_lr = min_lr
        self._reset()

    def _reset(self) -> None:
        self.wait = 0
        self.best: Any = None
        self.cooldown_counter = 0

    def on_train_begin(self, logs: dict | None = None) -> None:
        super().on_train_begin(logs)
        self._reset()

    def in_cooldown(self) -> bool:
        return self.cooldown_counter > 0

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = {} if logs is None else logs
        logs["lr"] = self.trainer.get_lr()
        current = self._get_monitor_value(logs)
        if current is None:
            return
        if self.in_cooldown():
            self.cooldown_counter -= 1
            self.wait = 0
        if self._is_improvement(current, self.best):
            self.best = current
            self.wait = 0
            return
        if self.in_cooldown():
            return
        self.wait += 1
        if self.wait < self.patience:
            return
        old_lr = self.trainer.get_lr()
        # float32 as in Keras: an LR already at min_lr is left alone (tensorflow#39462).
        if np.float32(old_lr) > np.float32(self.min_lr):
            new_lr = max(old_lr * self.factor, self.min_lr)
            self.trainer.set_lr(new_lr)
            if self.verbose > 0 and getattr(self.trainer, "is_main_process", True):
                print(f"\nEpoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new_lr}.")
            self.cooldown_counter = self.cooldown
            self.wait = 0

    def state_dict(self) -> dict[str, Any]:
        return {"wait": self.wait, "best": self.best, "cooldown_counter": self.cooldown_counter}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.wait = int(state["wait"])
        self.best = state["best"]
        self.cooldown_counter = int(state["cooldown_counter"])
