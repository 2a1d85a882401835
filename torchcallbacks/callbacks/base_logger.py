"""`BaseLogger`: Keras 2's epoch averaging of batch logs."""

from __future__ import annotations

from typing import Any

from torchcallbacks.callbacks.base import Callback


class BaseLogger(Callback):
    """Averages batch-log values over the epoch, weighted by batch size, into the epoch logs.

    Kept for code ported from Keras 2, where batch logs held per-batch values. The Trainer's
    own keys (``loss`` and metrics) are running means already, so like tf.keras's progress
    bar, BaseLogger treats them as stateful (takes the last value, the epoch mean). Keys that
    other callbacks add to batch logs as per-batch values are averaged::

        trainer.fit(x, y, callbacks=[BaseLogger(stateful_metrics=["tokens_seen"])])

    Args:
        stateful_metrics: keys to take as they are at the last batch instead of averaging.
    """

    def __init__(self, stateful_metrics: list[str] | None = None) -> None:
        super().__init__()
        self.stateful_metrics = set(stateful_metrics or [])
        self.seen = 0
        self.totals: dict[str, Any] = {}

    def _stateful(self) -> set[str]:
        names = set(self.trainer.objective.names) if self.trainer is not None else set()
        return self.stateful_metrics | names

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.seen = 0
        self.totals = {}

    def on_batch_end(self, batch: int, logs: dict | None = None) -> None:
        size = self.trainer.last_batch_size if self.trainer is not None else 1
        self.seen += size
        stateful = self._stateful()
        for key, value in (logs or {}).items():
            if key in stateful:
                self.totals[key] = value
            else:
                self.totals[key] = self.totals.get(key, 0.0) + value * size

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is None or not self.seen:
            return
        stateful = self._stateful()
        for key, total in self.totals.items():
            logs[key] = total if key in stateful else total / self.seen
