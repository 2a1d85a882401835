"""`CallbackList`: the hooks called on every callback of a run, in list order."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from torchcallbacks.callbacks.base import Callback, sanitize_logs
from torchcallbacks.callbacks.history import History
from torchcallbacks.callbacks.progbar_logger import ProgbarLogger

if TYPE_CHECKING:
    from torchcallbacks.trainer import Trainer


def flatten(callbacks: Iterable[Any]) -> list[Any]:
    """Callbacks given in nested lists, as one list."""
    flat: list[Any] = []
    for item in callbacks:
        if isinstance(item, list | tuple):
            flat.extend(flatten(item))
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
        self.callbacks: list[Callback] = flatten(callbacks or [])
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
