"""`CSVLogger`: one CSV row per epoch, byte-compatible with Keras 3's files."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Mapping
from typing import Any

from torchcallbacks.callbacks._log_file import LogFile
from torchcallbacks.callbacks.base import Callback, to_float


class CSVLogger(Callback):
    """Streams the epoch logs to a CSV file, exactly as Keras 3 writes it.

    Example::

        trainer.fit(x, y, epochs=5, validation_split=0.2,
                    callbacks=[CSVLogger("training.csv")])
        pandas.read_csv("training.csv")   # columns: epoch, loss, val_loss

    The header is ``epoch`` (0-based) followed by the first epoch's log keys in sorted order.
    When the first epoch has no ``val_*`` key (no validation, or ``validation_freq > 1``),
    a ``val_<key>`` column is reserved for every key and filled with ``NA`` where absent,
    as Keras does; keys that first appear after the header are not written. Lines end
    with ``\\r\\n``, floats are written with ``repr``, and a list value is written as the
    quoted text ``"[a, b]"``. With ``append=True`` an existing non-empty file is continued
    without a second header.

    Every row reaches the file whole and at once at its epoch end. The state saved by
    BackupAndRestore holds the header keys and the file's length after the last row, so a
    resumed run first cuts the rows written after the backup.

    Args:
        filename: path of the CSV file (parent folders are created).
        separator: the one-character field delimiter.
        append: continue an existing file instead of replacing it.
    """

    def __init__(
        self, filename: str | os.PathLike, separator: str = ",", append: bool = False
    ) -> None:
        super().__init__()
        if not isinstance(separator, str) or len(separator) != 1:
            raise ValueError(
                f"separator must be a single character such as ',' or '\\t'; got {separator!r}"
            )
        self.filename = os.fspath(filename)
        self.sep = separator
        self.append = append
        self.keys: list[str] | None = None
        self._file = LogFile(self.filename)

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._file.begin(self.append, "CSVLogger", getattr(self.trainer, "is_main_process", True))
        self.keys = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if not getattr(self.trainer, "is_main_process", True):
            return
        logs = logs or {}
        text = ""
        if self.keys is None:
            self.keys = sorted(logs)
            if self.keys and not any(key.startswith("val_") for key in self.keys):
                self.keys += [f"val_{key}" for key in self.keys]
            if self._file.length == 0:
                text = self._line(["epoch", *self.keys])
        values = [_csv_value(logs.get(key, "NA")) for key in self.keys]
        self._file.write(text + self._line([epoch, *values]))

    def on_train_end(self, logs: dict | None = None) -> None:
        self._file.close()

    def state_dict(self) -> dict[str, Any]:
        keys = None if self.keys is None else list(self.keys)
        return {"keys": keys, "length": self._file.length}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.keys = None if state["keys"] is None else list(state["keys"])
        if getattr(self.trainer, "is_main_process", True):  # other ranks never touch the file
            self._file.restore(int(state["length"]))

    def _line(self, fields: list[Any]) -> str:
        buffer = io.StringIO()
        csv.writer(buffer, dialect="excel", delimiter=self.sep).writerow(fields)
        return buffer.getvalue()


def _csv_value(value: Any) -> Any:
    """Keras's ``handle_value``: text as is, an iterable as the quoted text ``"[a, b]"``."""
    value = to_float(value)  # scalar tensors and arrays (0-d included) become floats
    if isinstance(value, str):
        return value
    if isinstance(value, Iterable):
        return f'"[{", ".join(map(str, value))}]"'
    return value
