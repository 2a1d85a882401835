"""``self.trainer`` for a LightningModule: Lightning's names read from torchcallbacks' `Trainer`."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from torchcallbacks.trainer import Trainer


class LightningTrainerView:
    """What a LightningModule reads as ``self.trainer`` under torchcallbacks' `Trainer`.

    Lightning's names that have a meaning here: ``current_epoch``, ``global_step``,
    ``max_epochs``, ``global_rank``, ``local_rank``, ``world_size``, ``is_global_zero``,
    ``optimizers``, ``training``/``validating``/``testing``/``predicting``,
    ``sanity_checking`` (always False), ``should_stop`` (set it to stop `fit`), ``logger``
    (None), ``loggers`` ([]), ``model`` (the module), ``callback_metrics`` (the latest epoch
    or evaluation logs, as tensors). Any other attribute is read from (and written to) the
    `Trainer` itself.
    """

    sanity_checking = False
    logger = None
    _OWN = frozenset(
        {"_trainer", "stage", "max_epochs", "callback_metrics", "loggers", "epochs_completed"}
    )

    def __init__(self, trainer: Trainer) -> None:
        self._trainer = trainer
        self.stage: str | None = None  # "train", "validate", "test" or "predict"
        self.max_epochs: int | None = None
        self.epochs_completed: int | None = None  # set when fit ends, as Lightning counts
        self.callback_metrics: dict[str, Any] = {}
        self.loggers: list[Any] = []

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._OWN or isinstance(getattr(type(self), name, None), property):
            object.__setattr__(self, name, value)
        else:  # self.trainer.stop_training = True reaches the Trainer
            setattr(self._trainer, name, value)

    @property
    def should_stop(self) -> bool:
        """Lightning's name for `Trainer.stop_training`: set it to end `fit` after this epoch."""
        return self._trainer.stop_training

    @should_stop.setter
    def should_stop(self, value: bool) -> None:
        self._trainer.stop_training = value

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return getattr(self._trainer, name)
        except AttributeError:
            raise AttributeError(
                f"self.trainer.{name} is a lightning.Trainer attribute that torchcallbacks' "
                "Trainer does not have; see the Lightning migration guide for what "
                "self.trainer offers."
            ) from None

    @property
    def current_epoch(self) -> int:
        """The epoch's index during fit; after it (from ``on_train_end``), the number of
        epochs run, as in Lightning."""
        if self.epochs_completed is not None:
            return self.epochs_completed
        return self._trainer.current_epoch

    @property
    def global_step(self) -> int:
        return self._trainer.global_step

    @property
    def global_rank(self) -> int:
        return self._trainer.rank

    @property
    def local_rank(self) -> int:
        return int(os.environ.get("LOCAL_RANK", 0))

    @property
    def is_global_zero(self) -> bool:
        return self._trainer.is_main_process

    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        optimizer = self._trainer.optimizer
        return [] if optimizer is None else [optimizer]

    @property
    def strategy(self) -> Any:
        """Enough of Lightning's strategy for ``LightningModule.optimizers()``."""
        return _StrategyView(self.optimizers)

    @property
    def training(self) -> bool:
        return self.stage == "train"

    @property
    def validating(self) -> bool:
        return self.stage == "validate"

    @property
    def testing(self) -> bool:
        return self.stage == "test"

    @property
    def predicting(self) -> bool:
        return self.stage == "predict"


class _StrategyView:
    __slots__ = ("_lightning_optimizers",)

    def __init__(self, optimizers: list[torch.optim.Optimizer]) -> None:
        self._lightning_optimizers = optimizers
