"""`ProgbarLogger`: prints Keras's progress bar to stdout."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from torchcallbacks.callbacks.base import Callback
from torchcallbacks.progbar import Progbar


class ProgbarLogger(Callback):
    """Prints ``Epoch 3/10`` and a progress bar per epoch (added by `fit` when verbose != 0).

    Example::

        trainer.fit(x, y, epochs=10, verbose=1)
        # Epoch 1/10
        # 625/625 [==============================] - 1s 2ms/step - loss: 0.3120 - accuracy: 0.91

    Args:
        count_mode: "steps" counts batches; "samples" counts samples when the trainer knows
            them (tensor inputs), else falls back to steps. The list `fit` adds uses "steps".
            The "keras3" style always counts steps, as Keras 3 (which has no count_mode) does.
        stateful_metrics: kept for tf.keras compatibility; logs are running means already
            and are shown as they are. ``averaged_metrics`` names keys to average instead.
        style: "keras2" (``[=====>....]``, width 30, ``ETA:``) or "keras3" (``━``, width 20).
        stream: where to write (default ``sys.stdout``, looked up at each epoch).

    ``verbose`` comes from ``fit``/``evaluate``/``predict``: 1 (or "auto") draws the bar,
    2 prints one line per epoch. Off a terminal no control characters are written.

    Under torchrun it is on every rank (so all ranks hold the same callbacks and run the
    same collectives) and prints on rank 0 only. It never stops training, so it does not
    make the ranks agree on stopping after every batch (``stops_training = False``).
    """

    stops_training = False

    def __init__(
        self,
        count_mode: str = "samples",
        stateful_metrics: list[str] | None = None,
        style: str = "keras2",
        averaged_metrics: list[str] | None = None,
        stream: TextIO | None = None,
    ) -> None:
        super().__init__()
        if count_mode not in ("samples", "steps"):
            raise ValueError(
                f'Unknown `count_mode`: {count_mode}. Expected values are ["samples", "steps"]'
            )
        if style not in ("keras2", "keras3"):
            raise ValueError(f"Unknown progress bar style {style!r}; use 'keras2' or 'keras3'")
        self.count_mode = count_mode
        self.stateful_metrics = set(stateful_metrics or [])
        self.averaged = set(averaged_metrics or [])
        self.style = style
        self.stream = stream
        self.verbose = 1
        self.epochs = 1
        self.target: int | None = None
        self.seen = 0
        self.progbar: Progbar | None = None
        self._called_in_fit = False

    def set_params(self, params: dict[str, Any]) -> None:
        super().set_params(params)
        verbose = params.get("verbose", 1)
        self.verbose = 1 if verbose == "auto" else int(verbose)
        self.epochs = params.get("epochs", 1)
        self.target = params.get("steps")

    def implements_batch_hooks(self, mode: str) -> bool:
        if mode == "test" and self._called_in_fit:
            return False
        return self.verbose == 1

    def needs_batch_logs(self, mode: str) -> bool:
        return False  # it asks the trainer for running logs only when it redraws

    def _samples(self) -> tuple[int, int] | None:
        """(samples per epoch, batch size) when counting samples and the trainer knows them."""
        if self.count_mode != "samples" or self.style == "keras3" or self.trainer is None:
            return None
        samples = self.trainer.samples_per_epoch
        return (samples, self.trainer.batch_size) if samples else None

    def _prints(self) -> bool:
        return self.trainer is None or self.trainer.is_main_process

    def _new_bar(self) -> None:
        self.seen = 0
        if not self._prints():
            self.progbar = None
            return
        target = self.target
        samples = self._samples()
        if samples is not None and target is not None:
            target = min(samples[0], target * samples[1])
        self.progbar = Progbar(
            target,
            verbose=self.verbose,
            style=self.style,
            unit_name="sample" if samples is not None else "step",
            averaged=self.averaged,
            stream=self.stream or sys.stdout,
        )

    def _seen_after(self, batches: int) -> int:
        """What the bar counts after ``batches`` batches: steps, or samples."""
        samples = self._samples()
        return batches if samples is None else min(batches * samples[1], samples[0])

    def _update(self, batch: int, logs: dict | None) -> None:
        self.seen = self._seen_after(batch + 1)
        if self.verbose != 1 or self.progbar is None:
            return
        values = None
        if self.progbar.due():  # read the logs only for a redraw: no sync on other batches
            if not logs and self.trainer is not None:
                logs = self.trainer.running_logs()
            values = self._ordered(logs)
        self.progbar.update(self.seen, values, finalize=False)

    def _finalize(self, logs: dict | None) -> None:
        if self.progbar is None:
            return
        if self.progbar.target is None:
            self.progbar.target = self.seen
            self.target = self.seen
        self.progbar.update(self.progbar.target, self._ordered(logs), finalize=True)

    def _ordered(self, logs: dict | None) -> dict:
        """tf.keras 2 order: loss, metrics, val_loss, val_ metrics, lr."""
        logs = dict(logs or {})
        logs.pop("outputs", None)
        if self.style == "keras3":
            return logs

        def rank(key: str) -> int:
            if key == "loss":
                return 0
            if key == "lr":
                return 4
            if key == "val_loss":
                return 2
            return 3 if key.startswith("val_") else 1

        return {key: logs[key] for key in sorted(logs, key=rank)}

    # -- fit -------------------------------------------------------------------------------
    def on_train_begin(self, logs: dict | None = None) -> None:
        self._called_in_fit = True

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._new_bar()
        if self.verbose and self.epochs > 1 and self._prints():
            stream = self.stream or sys.stdout
            stream.write(f"Epoch {epoch + 1}/{self.epochs}\n")
            stream.flush()
        start = getattr(self.trainer, "epoch_start_batch", 0)
        if start and self.progbar is not None:  # resumed mid-epoch: the bar goes on from there
            self.seen = self._seen_after(start)
            self.progbar.resume_at(self.seen)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._update(batch, logs)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._finalize(logs)

    # -- evaluate / predict outside fit ----------------------------------------------------
    def on_test_begin(self, logs: dict | None = None) -> None:
        if not self._called_in_fit:
            self._new_bar()

    def on_test_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if not self._called_in_fit:
            self._update(batch, logs)

    def on_test_end(self, logs: dict | None = None) -> None:
        if not self._called_in_fit:
            self._finalize(logs)

    def on_predict_begin(self, logs: dict | None = None) -> None:
        self._new_bar()

    def on_predict_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._update(batch, None)

    def on_predict_end(self, logs: dict | None = None) -> None:
        self._finalize(None)
