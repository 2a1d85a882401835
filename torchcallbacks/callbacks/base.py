"""The `Callback` base class (`CallbackList`, in ``callback_list.py``, dispatches its hooks).

Keras semantics: hooks are no-ops by default, epochs and batches
are 0-based, ``on_batch_begin``/``on_batch_end`` are aliases reached only from training
batches, begin hooks receive ``{}``, and one sanitised logs dict is shared by every callback
of a dispatch, so a key added by an earlier callback (``lr``) is seen by later ones.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from torchcallbacks.trainer import Trainer

_BATCH_HOOKS = {
    "train": ("on_train_batch_begin", "on_train_batch_end", "on_batch_begin", "on_batch_end"),
    "test": ("on_test_batch_begin", "on_test_batch_end"),
    "predict": ("on_predict_batch_begin", "on_predict_batch_end"),
}


class Callback:
    """Base class of every callback.

    Subclass it and override the hooks you need::

        class PrintLoss(Callback):
            def on_epoch_end(self, epoch, logs=None):
                print(epoch, logs["loss"])

        trainer.fit(x, y, epochs=3, callbacks=[PrintLoss()])

    Attributes: ``trainer`` (the `Trainer`), ``model`` (the plain ``nn.Module``, never a
    ``DistributedDataParallel`` wrapper), ``optimizer`` (the trainer's) and ``params``
    (``{"epochs", "steps", "verbose"}``).

    A callback that overrides a train batch hook makes the trainer build batch logs (one
    host sync per step); callbacks that only use epoch hooks cost nothing per batch. Override
    `implements_batch_hooks` when the answer depends on the arguments.
    """

    # Under torchrun, callbacks that save, restore or change training set this: `fit` then
    # checks that every process was given the same ones (a rank-0-only one would hang).
    on_every_process = False

    def __init__(self) -> None:
        self.trainer: Trainer | None = None
        self.params: dict[str, Any] | None = None

    # -- wiring -----------------------------------------------------------------------------
    def set_trainer(self, trainer: Trainer) -> None:
        self.trainer = trainer

    def set_params(self, params: dict[str, Any]) -> None:
        self.params = params

    @property
    def model(self) -> torch.nn.Module | None:
        return None if self.trainer is None else self.trainer.model

    @property
    def optimizer(self) -> torch.optim.Optimizer | None:
        """The trainer's optimizer (also ``self.model.optimizer``, as in Keras, unless the
        module has an ``optimizer`` of its own)."""
        if "_optimizer" in vars(self):  # a subclass that sets self.optimizer keeps its own
            return self._optimizer
        return None if self.trainer is None else self.trainer.optimizer

    @optimizer.setter
    def optimizer(self, value: torch.optim.Optimizer | None) -> None:
        self._optimizer = value

    def state_dict(self) -> dict[str, Any]:
        """State saved in full checkpoints and backups: plain containers and tensors only."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what `state_dict` returned."""

    def implements_batch_hooks(self, mode: str) -> bool:
        """Whether this callback needs the ``mode`` ("train", "test", "predict") batch hooks.

        The default answer is: it overrides one of them.
        """
        return any(_overrides(self, name) for name in _BATCH_HOOKS[mode])

    def needs_batch_logs(self, mode: str) -> bool:
        """Whether this callback reads the logs of ``mode`` batch hooks.

        Batch logs cost a host sync per step; a callback that uses batch hooks only to count
        or to react to signals returns False, and then receives ``{}`` when no other
        callback needs the logs.
        """
        return self.implements_batch_hooks(mode)

    # -- training --------------------------------------------------------------------------
    def on_train_begin(self, logs: dict | None = None) -> None:
        """Called once at the start of `fit`."""

    def on_train_end(self, logs: dict | None = None) -> None:
        """Called once at the end of `fit`, with the last epoch's logs."""

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        """Called at the start of each (0-based) epoch."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        """Called at the end of each epoch with the epoch means and ``val_*`` results."""

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self.on_batch_begin(batch, logs=logs)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.on_batch_end(batch, logs=logs)

    def on_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        """Alias of `on_train_batch_begin` (training batches only, as in Keras)."""

    def on_batch_end(self, batch: int, logs: dict | None = None) -> None:
        """Alias of `on_train_batch_end`: ``logs`` holds the epoch's running means."""

    # -- evaluation ------------------------------------------------------------------------
    def on_test_begin(self, logs: dict | None = None) -> None:
        """Called at the start of `evaluate` and of validation inside `fit`."""

    def on_test_end(self, logs: dict | None = None) -> None:
        """Called with the evaluation results (no ``val_`` prefix)."""

    def on_test_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        """Called before each evaluation batch."""

    def on_test_batch_end(self, batch: int, logs: dict | None = None) -> None:
        """Called after each evaluation batch with running means."""

    # -- prediction ------------------------------------------------------------------------
    def on_predict_begin(self, logs: dict | None = None) -> None:
        """Called at the start of `predict`."""

    def on_predict_end(self, logs: dict | None = None) -> None:
        """Called at the end of `predict`."""

    def on_predict_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        """Called before each prediction batch."""

    def on_predict_batch_end(self, batch: int, logs: dict | None = None) -> None:
        """Called after each prediction batch with ``{"outputs": batch_outputs}``."""


def _overrides(callback: Callback, name: str) -> bool:
    method = getattr(type(callback), name, None)
    if name in vars(callback):  # LambdaCallback-style instance attribute
        return True
    return method is not None and method is not getattr(Callback, name)


def to_float(value: Any) -> Any:
    """Python float for scalars (tensors, NumPy, numbers); other values unchanged."""
    if type(value) is float:  # the common case: the Trainer's logs are floats already
        return value
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, bool | str) or value is None:
        return value
    if isinstance(value, numbers.Real):
        return float(value)
    if hasattr(value, "item") and getattr(value, "size", 0) == 1:  # NumPy scalar / 1-element array
        return float(value.item())
    return value


def sanitize_logs(logs: Mapping[str, Any] | None) -> dict[str, Any]:
    """A new dict with float values and sorted keys (Keras 3's ``pythonify_logs``)."""
    if not logs:
        return {}
    return {key: to_float(logs[key]) for key in sorted(logs)}
