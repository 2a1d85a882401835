"""`JSONLogger`: the logs as JSON Lines, one object per epoch (and per batch if asked)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any

from torchcallbacks.callbacks._log_file import LogFile
from torchcallbacks.callbacks.base import Callback, to_float


def json_safe(value: Any) -> Any:
    """``value`` as strict JSON data: ints and text as they are, other numbers (tensors,
    NumPy) as floats, NaN and infinities as the strings ``"NaN"``, ``"Infinity"`` and
    ``"-Infinity"`` (which ``float()`` reads back), containers item by item, any other
    object as its ``str``."""
    if value is None or isinstance(value, bool | int | str):
        return value
    value = to_float(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    if isinstance(value, float):
        return value
    return str(value)


class JSONLogger(Callback):
    """Writes the logs as JSON Lines: one JSON object per line, flushed line by line.

    Example::

        trainer.fit(x, y, epochs=3, validation_split=0.2,
                    callbacks=[JSONLogger("training.jsonl")])
        with open("training.jsonl") as f:
            records = [json.loads(line) for line in f]
        records[0]   # {"epoch": 0, "loss": 0.71, "val_loss": 0.69}

    Each epoch end writes ``{"epoch": <0-based epoch>, **logs}``. With ``batch_level=True``
    each training batch also writes ``{"epoch": e, "batch": b, **logs}`` (running means, as
    the batch logs hold); without it the callback costs nothing per batch.

    NaN and infinite values are not valid JSON, so they are written as the strings
    ``"NaN"``, ``"Infinity"`` and ``"-Infinity"``: every line parses with ``json.loads``
    (and any strict JSON reader), and ``float(value)`` gives the number back.

    ``append=False`` replaces the file at the first record of a fit; ``append=True``
    continues it. Lines reach the file whole. The state saved by BackupAndRestore holds the
    file's length after the last line, so a resumed run first cuts the lines written after
    the backup.
    """

    def __init__(
        self, filename: str | os.PathLike, append: bool = False, batch_level: bool = False
    ) -> None:
        super().__init__()
        self.filename = os.fspath(filename)
        self.append = append
        self.batch_level = batch_level
        self._epoch = 0
        self._file = LogFile(self.filename)

    def implements_batch_hooks(self, mode: str) -> bool:
        return self.batch_level and mode == "train"

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._file.begin(self.append, "JSONLogger", getattr(self.trainer, "is_main_process", True))

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.batch_level:
            self._write({"epoch": self._epoch, "batch": batch, **(logs or {})})

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._write({"epoch": epoch, **(logs or {})})

    def on_train_end(self, logs: dict | None = None) -> None:
        self._file.close()

    def state_dict(self) -> dict[str, Any]:
        return {"length": self._file.length}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if getattr(self.trainer, "is_main_process", True):  # other ranks never touch the file
            self._file.restore(int(state["length"]))

    def _write(self, record: dict[str, Any]) -> None:
        if getattr(self.trainer, "is_main_process", True):
            self._file.write(json.dumps(json_safe(record), allow_nan=False) + "\n")
