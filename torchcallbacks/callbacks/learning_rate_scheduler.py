"""`LearningRateScheduler`: set the learning rate from a schedule function, a torch scheduler or
a timm scheduler."""

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
      once per optimizer step with ``interval="batch"`` (OneCycleLR, warm-up schedules such as
      transformers' ``get_linear_schedule_with_warmup``). torch's ``ReduceLROnPlateau`` is
      stepped at each epoch end with the logged ``monitor`` value (a missing key warns once and
      skips the step).
    - a timm scheduler (``timm.scheduler.CosineLRScheduler`` and the others deriving from
      timm's ``Scheduler``) built on ``trainer.optimizer``, stepped as timm's own training
      script does: ``scheduler.step(epoch + 1)`` after each epoch, and ``step(initial_epoch)``
      first (its ``PlateauLRScheduler`` with the logged ``monitor`` value as ``metric``, at
      epoch ends only), or, with ``interval="batch"``,
      ``scheduler.step_update(steps_done)`` after each optimizer step, ``steps_done`` counting
      every step since the start of training. ``interval="batch"`` needs a scheduler built
      with ``t_in_epochs=False`` and ``interval="epoch"`` one built with ``t_in_epochs=True``
      (timm's default): timm ignores the other call.

    With ``interval="batch"``, accumulated batches (``accumulate_grad_batches``) are not
    optimizer steps: the scheduler steps when the optimizer does. The scheduler's state goes
    into full checkpoints and backups, so a resumed run continues the schedule exactly.

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

        from timm.scheduler import CosineLRScheduler  # pip install timm

        cosine = CosineLRScheduler(trainer.optimizer, t_initial=4, warmup_t=1,
                                   warmup_lr_init=0.01)
        trainer.fit(x, y, epochs=4, callbacks=[LearningRateScheduler(cosine)], verbose=0)
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
        self.timm = _is_timm_scheduler(schedule)
        is_scheduler = self.timm or isinstance(schedule, _TORCH_SCHEDULERS)
        if not is_scheduler and not callable(schedule):
            raise TypeError(
                "schedule must be a function schedule(epoch) or schedule(epoch, lr) returning "
                "the learning rate, a torch.optim.lr_scheduler object or a timm scheduler; got "
                f"{schedule!r} ({type(schedule).__name__})."
            )
        # timm's PlateauLRScheduler wraps torch's ReduceLROnPlateau as .lr_scheduler
        wrapped = getattr(schedule, "lr_scheduler", None) if self.timm else None
        self.plateau = isinstance(schedule, lr_scheduler.ReduceLROnPlateau) or isinstance(
            wrapped, lr_scheduler.ReduceLROnPlateau
        )
        if self.timm:
            _check_timm_interval(schedule, interval)
        elif interval == "batch" and (not is_scheduler or self.plateau):
            raise ValueError(
                "interval='batch' needs a torch.optim.lr_scheduler object stepped per batch "
                "(e.g. OneCycleLR) or a timm scheduler; schedule functions and "
                "ReduceLROnPlateau work per epoch (interval='epoch')."
            )
        self.schedule = schedule
        self.verbose = verbose
        self.interval = interval
        self.monitor = monitor
        self.scheduler = schedule if is_scheduler else None
        self._takes_lr = None if is_scheduler else _takes_lr(schedule)
        self._warned_missing = False
        self.last_step = 0  # the trainer's optimizer steps the scheduler has followed

    def implements_batch_hooks(self, mode: str) -> bool:
        return mode == "train" and self.interval == "batch"

    def needs_batch_logs(self, mode: str) -> bool:
        return False  # stepping per batch reads no batch values: no per-step sync

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._warned_missing = False
        self.last_step = self.trainer.global_step
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
            if self.timm and self.interval == "epoch" and not self.plateau:
                # the rate of this epoch, as timm's script sets it with step(start_epoch) when
                # a run starts later than epoch 0 (initial_epoch); the same value otherwise
                self.scheduler.step(epoch)
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
        self._follow_optimizer_steps()

    def _follow_optimizer_steps(self) -> None:
        """Steps the per-batch scheduler once for every optimizer step since the last call."""
        step = self.trainer.global_step
        if self.interval != "batch" or step == self.last_step:
            return  # per epoch, or an accumulated batch (no optimizer step)
        done, self.last_step = self.last_step, step
        if self.timm:
            self.scheduler.step_update(step)  # timm takes the count itself
            return
        for _ in range(step - done):
            self.scheduler.step()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = {} if logs is None else logs
        self._follow_optimizer_steps()  # the step after the epoch's last accumulated batches
        logs["lr"] = self.trainer.get_lr()
        if self.scheduler is None or self.interval == "batch":
            return
        value = None
        if self.plateau:
            value, self._warned_missing = monitored_value(
                logs, self.monitor, ReduceLROnPlateau.missing_message, self._warned_missing
            )
        if self.timm:  # timm's convention: the index of the epoch about to start
            self.scheduler.step(epoch + 1, value)  # value: the metric of PlateauLRScheduler
        elif not self.plateau:
            self.scheduler.step()
        elif value is not None:
            self.scheduler.step(value)

    def state_dict(self) -> dict[str, Any]:
        if self.scheduler is None:
            return {}
        return {"scheduler": self.scheduler.state_dict(), "last_step": self.last_step}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.scheduler is not None and "scheduler" in state:
            self.scheduler.load_state_dict(state["scheduler"])
            self.last_step = int(state.get("last_step", self.last_step))


def _is_timm_scheduler(schedule: Any) -> bool:
    """Whether ``schedule`` derives from ``timm.scheduler.Scheduler`` (read from its classes'
    names, so that timm is never imported here)."""
    return any(
        cls.__name__ == "Scheduler" and cls.__module__.split(".")[0] == "timm"
        for cls in type(schedule).__mro__
    )


def _check_timm_interval(scheduler: Any, interval: str) -> None:
    """timm changes the rate in ``step`` only when ``t_in_epochs`` and in ``step_update`` only
    when not: refuse the pairing whose calls timm would ignore."""
    name = type(scheduler).__name__
    per_epoch = bool(getattr(scheduler, "t_in_epochs", True))
    if interval == "batch" and per_epoch:
        raise ValueError(
            f"This {name} was built with t_in_epochs=True (timm's default): it changes the "
            "learning rate in step(epoch) only, and ignores step_update(num_updates), which "
            "interval='batch' calls. Use interval='epoch', or build it with t_in_epochs=False "
            "(lengths counted in optimizer steps) for interval='batch'."
        )
    if interval == "epoch" and not per_epoch:
        raise ValueError(
            f"This {name} was built with t_in_epochs=False: it changes the learning rate in "
            "step_update(num_updates) only, and ignores step(epoch), which interval='epoch' "
            "calls. Pass interval='batch' to step it after every optimizer step."
        )


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
