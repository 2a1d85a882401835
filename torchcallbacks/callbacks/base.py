"""The `Callback` base class and the `CallbackList` that dispatches hook events.

Keras semantics: hooks are no-ops by default, epochs and batches
are 0-based, ``on_batch_begin``/``on_batch_end`` are aliases reached only from training
batches, begin hooks receive ``{}``, and one sanitised logs dict is shared by every callback
of a dispatch, so a key added by an earlier callback (``lr``) is seen by later ones.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping
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


def _flatten(callbacks: Iterable[Any]) -> list[Any]:
    flat: list[Any] = []
    for item in callbacks:
        if isinstance(item, list | tuple):
            flat.extend(_flatten(item))
        else:
            flat.append(item)
    return flat


class CallbackList:
    """Calls every hook on each callback, in list order.

    Like Keras, it appends a `History` (``add_history=True``) and a `ProgbarLogger`
    (``add_progbar=True``) after the user's callbacks unless the list already holds one::

        callbacks = CallbackList([EarlyStopping()], trainer=trainer, params={"epochs": 5})
        callbacks.on_train_begin()
    """

    def __init__(
        self,
        callbacks: Iterable[Callback] | None = None,
        trainer: Trainer | None = None,
        params: dict[str, Any] | None = None,
        add_history: bool = False,
        add_progbar: bool = False,
    ) -> None:
        from torchcallbacks.callbacks.history import History
        from torchcallbacks.callbacks.progbar_logger import ProgbarLogger

        self.callbacks: list[Callback] = _flatten(callbacks or [])
        for callback in self.callbacks:
            _check_is_callback(callback)
        self.history: History | None = next(
            (c for c in self.callbacks if isinstance(c, History)), None
        )
        if self.history is None and add_history:
            self.history = History()
            self.callbacks.append(self.history)
        if add_progbar and not any(isinstance(c, ProgbarLogger) for c in self.callbacks):
            self.callbacks.append(ProgbarLogger(count_mode="steps"))
        self.trainer = trainer
        self.params: dict[str, Any] = dict(params or {})
        if trainer is not None:
            self.set_trainer(trainer)
        if self.params:
            self.set_params(self.params)

    def append(self, callback: Callback) -> None:
        _check_is_callback(callback)
        self.callbacks.append(callback)

    def set_trainer(self, trainer: Trainer) -> None:
        self.trainer = trainer
        for callback in self.callbacks:
            callback.set_trainer(trainer)

    def set_params(self, params: dict[str, Any]) -> None:
        self.params = params
        for callback in self.callbacks:
            callback.set_params(params)

    def implements_batch_hooks(self, mode: str) -> bool:
        """True when some callback needs the ``mode`` batch hooks (and so batch logs)."""
        return any(c.implements_batch_hooks(mode) for c in self.callbacks)

    def needs_batch_logs(self, mode: str) -> bool:
        """True when some callback reads the ``mode`` batch logs."""
        return any(c.needs_batch_logs(mode) for c in self.callbacks)

    def __iter__(self):
        return iter(self.callbacks)

    def __len__(self) -> int:
        return len(self.callbacks)

    def _call(self, hook: str, *args: Any, logs: Mapping[str, Any] | None = None) -> None:
        shared = sanitize_logs(logs)
        for callback in self.callbacks:
            getattr(callback, hook)(*args, shared)

    def _call_batch(self, hook: str, batch: int, logs: Mapping[str, Any] | None) -> None:
        # Keras passes batch logs by keyword (LambdaCallback relies on it).
        shared = sanitize_logs(logs)
        for callback in self.callbacks:
            getattr(callback, hook)(batch, logs=shared)

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        self._call("on_train_begin", logs=logs)

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        self._call("on_train_end", logs=logs)

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        self._call("on_epoch_begin", epoch, logs=logs)

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        self._call("on_epoch_end", epoch, logs=logs)

    def on_train_batch_begin(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        self._call_batch("on_train_batch_begin", batch, logs)

    def on_train_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        self._call_batch("on_train_batch_end", batch, logs)

    on_batch_begin = on_train_batch_begin
    on_batch_end = on_train_batch_end

    def on_test_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        self._call("on_test_begin", logs=logs)

    def on_test_end(self, logs: Mapping[str, Any] | None = None) -> None:
        self._call("on_test_end", logs=logs)

    def on_test_batch_begin(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        self._call_batch("on_test_batch_begin", batch, logs)

    def on_test_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        self._call_batch("on_test_batch_end", batch, logs)

    def on_predict_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        self._call("on_predict_begin", logs=logs)

    def on_predict_end(self, logs: Mapping[str, Any] | None = None) -> None:
        self._call("on_predict_end", logs=logs)

    def on_predict_batch_begin(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        self._call_batch("on_predict_batch_begin", batch, logs)

    def on_predict_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        # Outputs stay tensors: only the Trainer's float logs are sanitised.
        shared = dict(logs or {})
        for callback in self.callbacks:
            callback.on_predict_batch_end(batch, logs=shared)


def _check_is_callback(callback: Any) -> None:
    if not isinstance(callback, Callback):
        raise TypeError(
            f"callbacks must be torchcallbacks.Callback instances; got {callback!r} "
            f"({type(callback).__name__}). Subclass torchcallbacks.Callback, or wrap plain "
            "functions in LambdaCallback(on_epoch_end=...)."
        )
