"""`History`: records the epoch logs; `fit` returns it."""

from __future__ import annotations

from typing import Any

from torchcallbacks.callbacks.base import Callback


class History(Callback):
    """Records every epoch's logs in ``history`` (key → list of floats) and ``epoch``.

    `Trainer.fit` adds one automatically and returns it::

        history = trainer.fit(x, y, epochs=3, validation_split=0.2)
        history.history["val_loss"]   # three floats
        history.epoch                 # [0, 1, 2]

    As in Keras, a key that first appears at a later epoch has a shorter list (no padding).
    """

    def __init__(self) -> None:
        super().__init__()
        self.history: dict[str, list[Any]] = {}
        self.epoch: list[int] = []

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.epoch = []

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)
        if self.trainer is not None:
            self.trainer.history = self

    def state_dict(self) -> dict[str, Any]:
        return {"history": {k: list(v) for k, v in self.history.items()}, "epoch": list(self.epoch)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = {k: list(v) for k, v in state["history"].items()}
        self.epoch = list(state["epoch"])
