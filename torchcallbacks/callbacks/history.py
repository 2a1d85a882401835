"""`History`: records the epoch logs; `fit` returns it."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torchcallbacks.callbacks.base import Callback
from torchcallbacks.utils import require


class History(Callback):
    """Records every epoch's logs in ``history`` (key → list of floats) and ``epoch``.

    `Trainer.fit` adds one automatically and returns it::

        history = trainer.fit(x, y, epochs=3, validation_split=0.2)
        history.history["val_loss"]   # three floats
        history.epoch                 # [0, 1, 2]

    As in Keras, a key that first appears at a later epoch has a shorter list (no padding).

    `plot` draws the curves, training against validation (needs ``torchcallbacks[plot]``)::

        history.plot("runs/curves.png")                      # every metric
        history.plot("runs/loss.png", keys=["loss"])         # loss and val_loss only
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

    def plot(self, path: str | os.PathLike | None = None, keys: Sequence[str] | None = None) -> Any:
        """Plot each metric per epoch, training (solid) against ``val_`` (dashed).

        ``keys`` names the metrics to draw (``"loss"``, ``"accuracy"``, ``"lr"``; a ``val_``
        name selects the same plot); by default every recorded metric. One panel per metric.
        With ``path``, the figure is written there as a PNG (folders are made as needed).
        Returns the matplotlib ``Figure``. A series recorded on fewer epochs than ``epoch``
        holds (``validation_freq > 1``) is drawn at its own indices 1..n.
        """
        require("matplotlib", "plot", "History.plot")
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator

        if not self.history:
            raise ValueError("History.plot: nothing recorded yet; call it after fit.")
        available = [k for k in self.history if not k.startswith("val_")]
        available += [
            k[4:] for k in self.history if k.startswith("val_") and k[4:] not in self.history
        ]
        names = available if keys is None else [k.removeprefix("val_") for k in keys]
        unknown = [k for k in names if k not in self.history and f"val_{k}" not in self.history]
        if unknown or not names:
            raise ValueError(
                f"History.plot: no recorded metric {unknown or names}; recorded: "
                f"{sorted(self.history)}."
            )
        columns = min(3, len(names))
        rows = math.ceil(len(names) / columns)
        figure = Figure(figsize=(4.5 * columns, 3.4 * rows), layout="constrained")
        for index, name in enumerate(names):
            axes = figure.add_subplot(rows, columns, index + 1)
            for key, label, style in ((name, "training", "-"), (f"val_{name}", "validation", "--")):
                values = self.history.get(key)
                if values:
                    axes.plot(self._epochs_for(values), values, style, marker="o", label=label)
            axes.set_title(name)
            axes.set_xlabel("epoch")
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
            axes.grid(alpha=0.3)
            axes.legend()
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            figure.savefig(path, format="png", dpi=100)
        return figure

    def _epochs_for(self, values: list[Any]) -> list[int]:
        """1-based epochs of a series: ``epoch`` when it has a value for each, else 1..n."""
        if len(values) == len(self.epoch):
            return [e + 1 for e in self.epoch]
        return list(range(1, len(values) + 1))

    def state_dict(self) -> dict[str, Any]:
        return {"history": {k: list(v) for k, v in self.history.items()}, "epoch": list(self.epoch)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = {k: list(v) for k, v in state["history"].items()}
        self.epoch = list(state["epoch"])
