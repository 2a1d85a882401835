"""`LearningRateScheduler`: set the learning rate from a schedule function or a torch scheduler."""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch.optim import lr_scheduler

from torchcallbacks.callbacks._monitor import monitored_value
from torchcallbacks.callbacks.base import Callback
from torchcallbacks.callbacks.reduce_lr_on_plateau import ReduceLROnPlateau

_TORCH_SCHEDULERS = (lr_scheduler.LRScheduler, lr_scheduler.ReduceLROnPlateau)
Schedule = Callable[..., Any] | lr_scheduler.LRScheduler | lr_scheduler.ReduceLROnPlateau


class LearningRateScheduler(Callback):
    """Set the learning rate each epoch from ``schedule``, and log it as ``lr``.

    ``schedule`` is either

    - a function ``schedule(epoch)`` or ``schedule(epoch, lr)`` (0-based epoch, current learning
      rate as a float; the arity is read from its signature), called at the start of every epoch.
      It may return any real number (float, int, NumPy scalar, 0-dim tensor); the result is set
      on every param group (keeping each group's ratio to the first group). With ``verbose=1``
      it prints ``Epoch N: LearningRateScheduler setting learning rate to X.`` as Keras does.
    - a ``torch.optim.lr_scheduler`` object built on ``trainer.optimizer``: stepped at the end
      of each epoch (so the learning rate during epoch ``e`` is its value after ``e`` steps), or
      after each training batch with ``interval="batch"`` (OneCycleLR, warm-up schedules).
      torch's ``ReduceLROnPlateau`` is stepped at each epoch end with the logged ``monitor``
      value (a missing key warns once and skips the step).

    At each epoch end the learning rate of the first param group (before an epoch-end step)
    is written into the logs as ``lr``.

    Example::

        import torch
        from torchcallbacks import LearningRateScheduler, Trainer

        model = torch.nn.Linear(3, 1)
        trainer = Trainer(model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), loss="mse")
        x, y = torch.randn(64, 3), torch.randn(64, 1)
        halve = LearningRateScheduler(lambda epoch, lr: lr if epoch < 2 else lr * 0.5)
        history = trainer.fit(x, y, epochs=4, callbacks=[halve], verbose=0)
        print(history.history["lr"])  # [0.1, 0.1, 0.05, 0.025]

        one_cycle = torch.optim.lr_scheduler.OneCycleLR(trainer.optimizer, max_lr=0.5,
                                                        total_steps=4 * 2)
        per_batch = LearningRateScheduler(one_cycle, interval="batch")
        trainer.fit(x, y, batch_size=32, epochs=4, callbacks=[per_batch], verbose=0)
    """

    on_every_process = True  # under torchrun every rank needs it: it changes the learning rate

    def __init__(
        self,
        schedule: Schedule,
        verbose: int = 0,
        interval: str = "epoch",
        monitor: str = "val_loss",
    ) -> None:
        super().__init__()
        if interval not in ("epoch", "batch"):
            raise ValueError(f"interval must be 'epoch' or 'batch'; got {interval!r}.")
        is_torch = isinstance(schedule, _TORCH_SCHEDULERS)
        if not is_torch and not callable(schedule):
            raise TypeError(
                "schedule must be a function schedule(epoch) or schedule(epoch, lr) returning "
                "the learning rate, or a torch.optim.lr_scheduler object; got "
                f"{schedule!r} ({type(schedule).__name__})."
            )
        self.plateau = isinstance(schedule, lr_scheduler.ReduceLROnPlateau)
        if interval == "batch" and (not is_torch or self.plateau):
            raise ValueError(
                "interval='batch' needs a torch.optim.lr_scheduler object stepped per batch "
                "(e.g. OneCycleLR); schedule functions and ReduceLROnPlateau work per epoch "
                "(interval='epoch')."
            )
        self.schedule = schedule
        self.verbose = verbose
        self.interval = interval
        self.monitor = monitor
        self.scheduler = schedule if is_torch else None
        self._takes_lr = None if is_torch else _takes_lr(schedule)
        self._warned_missing = False

    def implements_batch_hooks(self, mode: str) -> bool:
        return mode == "train" and self.interval == "batch"

    def needs_batch_logs(self, mode: str) -> bool:
        return False  # stepping per batch reads no batch values: no per-step sync

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._warned_missing = False
        optimizer = getattr(self.trainer, "optimizer", None)
        if self.scheduler is not None and self.scheduler.optimizer is not optimizer:
            raise ValueError(
                f"The {type(self.scheduler).__name__} given to LearningRateScheduler was built on "
                "another optimizer than the Trainer's; build it on trainer.optimizer, e.g. "
                f"{type(self.scheduler).__name__}(trainer.optimizer, ...)."
            )

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self.scheduler is None:
            value = self._call_schedule(epoch, self.trainer.get_lr())
            self.trainer.set_lr(_as_lr(value))
            shown = float(value) if isinstance(value, torch.Tensor) else value
        else:
            shown = self.trainer.get_lr()
        if self.verbose > 0 and getattr(self.trainer, "is_main_process", True):
            print(f"\nEpoch {epoch + 1}: LearningRateScheduler setting learning rate to {shown}.")

    def _call_schedule(self, epoch: int, lr: float) -> Any:
        if self._takes_lr is None:  # no readable signature: Keras's try-then-fall-back
            try:
                return self.schedule(epoch, lr)
            except TypeError:
                return self.schedule(epoch)
        return self.schedule(epoch, lr) if self._takes_lr else self.schedule(epoch)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.interval == "batch":
            self.scheduler.step()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = {} if logs is None else logs
        logs["lr"] = self.trainer.get_lr()
        if self.scheduler is None or self.interval == "batch":
            return
        if not self.plateau:
            self.scheduler.step()
            return
        value, self._warned_missing = monitored_value(
            logs, self.monitor, ReduceLROnPlateau.missing_message, self._warned_missing
        )
        if value is not None:
            self.scheduler.step(value)

    def state_dict(self) -> dict[str, Any]:
        return {} if self.scheduler is None else {"scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.scheduler is not None and "scheduler" in state:
            self.scheduler.load_state_dict(state["scheduler"])


def _takes_lr(schedule: Callable[..., Any]) -> bool | None:
    """Whether ``schedule`` accepts ``(epoch, lr)``; None when its signature cannot be read."""
    try:
        signature = inspect.signature(schedule)
    except (TypeError, ValueError):
        return None
    try:
        signature.bind(0, 0.1)
    except TypeError:
        return False
    return True


def _as_lr(value: Any) -> float:
    """The schedule's result as a float: any real number, NumPy scalar or 0-dim tensor."""
    if isinstance(value, torch.Tensor):
        if value.ndim == 0 and not value.dtype.is_complex and value.dtype != torch.bool:
            return float(value.item())
    elif isinstance(value, np.ndarray):
        if value.ndim == 0 and value.dtype.kind in "iuf":
            return float(value)
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    raise ValueError(
        f"The output of the `schedule` function should be a float. Got: {value} "
        f"(type {type(value).__name__}); return a real number such as 0.01."
    )
