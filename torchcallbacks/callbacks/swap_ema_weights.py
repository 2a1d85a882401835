"""`SwapEMAWeights`: validate, evaluate and predict with the moving average of the weights."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torchcallbacks.callbacks.base import Callback

if TYPE_CHECKING:
    from torchcallbacks.ema import ExponentialMovingAverage
    from torchcallbacks.trainer import Trainer


class SwapEMAWeights(Callback):
    """Swaps the EMA weights (``Trainer(..., ema_momentum=...)``) into the module for
    validation inside `fit`, for `evaluate` and for `predict`, and back afterwards::

        trainer = Trainer(model, "adam", "mse", ema_momentum=0.99)
        trainer.fit(x, y, epochs=10, validation_data=(x_val, y_val),
                    callbacks=[SwapEMAWeights()])  # val_loss scores the EMA weights
        trainer.evaluate(x_test, y_test, callbacks=[SwapEMAWeights()])

    With ``swap_on_epoch=True`` the EMA weights are also in the module from this callback's
    ``on_epoch_end`` to the next epoch's start, so that the callbacks listed after it
    (`ModelCheckpoint`, `BackupAndRestore`) save them; training goes on from the training
    weights, and a full checkpoint written meanwhile resumes from them too. `fit` ends with
    the EMA weights in the module either way.

    Unlike Keras 3, the training weights are put back after `predict` too.
    """

    on_every_process = True  # under torchrun every rank needs it: it swaps the weights

    def __init__(self, swap_on_epoch: bool = False) -> None:
        super().__init__()
        self.swap_on_epoch = swap_on_epoch
        self._swapped_in_here = False  # whether on_test/on_predict_begin swapped them in

    def set_trainer(self, trainer: Trainer) -> None:
        if getattr(trainer, "ema", None) is None:
            raise ValueError(
                "SwapEMAWeights must be used when `ema_momentum` is set on the Trainer "
                "(Keras: `use_ema=True` on the optimizer), e.g. "
                "Trainer(model, optimizer, loss, ema_momentum=0.99). Received: ema_momentum=None"
            )
        super().set_trainer(trainer)

    @property
    def _ema(self) -> ExponentialMovingAverage:
        return self.trainer.ema  # type: ignore[union-attr,return-value]

    def _swap_in(self) -> bool:
        """Put the EMA weights in the module; True if they were not there."""
        if self._ema.swapped or self._ema.updates == 0:
            return False
        self._ema.swap()
        return True

    def _swap_out(self) -> None:
        if self._ema.swapped:
            self._ema.swap()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self.swap_on_epoch:
            self._swap_out()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.swap_on_epoch:
            self._swap_in()

    def on_test_begin(self, logs: dict | None = None) -> None:
        self._swapped_in_here = self._swap_in()

    def on_test_end(self, logs: dict | None = None) -> None:
        if self._swapped_in_here:
            self._swap_out()
            self._swapped_in_here = False

    def on_predict_begin(self, logs: dict | None = None) -> None:
        self.on_test_begin(logs)

    def on_predict_end(self, logs: dict | None = None) -> None:
        self.on_test_end(logs)
