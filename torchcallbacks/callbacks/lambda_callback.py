"""`LambdaCallback`: a callback built from plain functions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torchcallbacks.callbacks.base import Callback

_EPOCH_HOOKS = {"on_epoch_begin", "on_epoch_end"}
_BATCH_HOOKS = {
    "on_batch_begin",
    "on_batch_end",
    "on_train_batch_begin",
    "on_train_batch_end",
    "on_test_batch_begin",
    "on_test_batch_end",
    "on_predict_batch_begin",
    "on_predict_batch_end",
}
_LOGS_HOOKS = {
    "on_train_begin",
    "on_train_end",
    "on_test_begin",
    "on_test_end",
    "on_predict_begin",
    "on_predict_end",
}


class LambdaCallback(Callback):
    """Build a callback from functions, one per hook name::

        trainer.fit(x, y, callbacks=[LambdaCallback(
            on_epoch_end=lambda epoch, logs: print(epoch, logs["loss"]),
            on_batch_end=lambda batch, logs: losses.append(logs["loss"]),
            on_train_end=lambda logs: print("done"),
        )])

    Any hook name works. Epoch and batch functions get ``(index, logs=logs)`` (``logs`` by
    keyword, as Keras passes it), so name their second parameter ``logs``; the begin/end
    functions get ``(logs)``. Other keyword arguments become attributes.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        for name, value in kwargs.items():
            if name in _EPOCH_HOOKS or name in _BATCH_HOOKS:
                setattr(self, name, _with_keyword_logs(value))
            elif name in _LOGS_HOOKS:
                setattr(self, name, _with_positional_logs(value))
            else:
                setattr(self, name, value)


def _with_keyword_logs(fn: Callable[..., Any]) -> Callable[..., Any]:
    def hook(index: int, logs: dict | None = None) -> Any:
        return fn(index, logs=logs)

    return hook


def _with_positional_logs(fn: Callable[..., Any]) -> Callable[..., Any]:
    def hook(logs: dict | None = None) -> Any:
        return fn(logs)

    return hook
