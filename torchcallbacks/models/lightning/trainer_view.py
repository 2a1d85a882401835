"""``self.trainer`` for a LightningModule: Lightning's names read from torchcallbacks' `Trainer`."""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from torchcallbacks.models.lightning.kind import LightningKind
    from torchcallbacks.trainer import Trainer


class FitNotStarted(RuntimeError):
    """Read before `fit` knows it: what ``configure_optimizers`` raises when it runs at
    ``Trainer(model)`` time and reads the run's length (it then runs again when `fit`
    starts)."""


class LightningTrainerView:
    """What a LightningModule reads as ``self.trainer`` under torchcallbacks' `Trainer`.

    Lightning's names that have a meaning here: ``current_epoch``, ``global_step``,
    ``max_epochs``, ``max_steps`` (-1), ``num_training_batches``,
    ``estimated_stepping_batches``, ``is_last_batch``, ``accumulate_grad_batches``,
    ``gradient_clip_val``, ``gradient_clip_algorithm``, ``global_rank``, ``local_rank``,
    ``world_size``, ``num_devices``, ``is_global_zero``, ``optimizers``,
    ``lr_scheduler_configs``, ``strategy``, ``precision_plugin``, ``lightning_module``,
    ``datamodule``,
    ``training``/``validating``/``testing``/``predicting``, ``sanity_checking`` (always
    False: no sanity check runs), ``num_sanity_val_steps`` (0), ``should_stop`` (set it to
    stop `fit`), ``logger`` (None), ``loggers`` ([]), ``model`` (the module),
    ``callback_metrics`` (the latest epoch or evaluation logs, as tensors). Any other
    attribute is read from (and written to) the `Trainer` itself.
    """

    sanity_checking = False
    num_sanity_val_steps = 0
    max_steps = -1
    logger = None
    _OWN = frozenset(
        {"_trainer", "_kind", "stage", "max_epochs", "callback_metrics", "loggers",
         "epochs_completed", "num_training_batches", "_before_fit", "batch_index"}
    )  # fmt: skip

    def __init__(self, trainer: Trainer, kind: LightningKind) -> None:
        self._trainer = trainer
        self._kind = kind
        self.stage: str | None = None  # "train", "validate", "test" or "predict"
        self.max_epochs: int | None = None
        self.num_training_batches: float = math.inf  # batches per epoch, once fit knows
        self.epochs_completed: int | None = None  # set when fit ends, as Lightning counts
        self.callback_metrics: dict[str, Any] = {}
        self.loggers: list[Any] = []
        self._before_fit = False  # configure_optimizers at Trainer(model) time
        self.batch_index = -1  # of the training batch being run

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._OWN or isinstance(getattr(type(self), name, None), property):
            object.__setattr__(self, name, value)
        else:  # self.trainer.stop_training = True reaches the Trainer
            setattr(self._trainer, name, value)

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

    @contextlib.contextmanager
    def before_fit(self) -> Iterator[None]:
        """While ``Trainer(model)`` calls ``configure_optimizers``: reading the run's length
        raises `FitNotStarted`."""
        self._before_fit = True
        try:
            yield
        finally:
            self._before_fit = False

    def _fit_value(self, name: str, value: Any) -> Any:
        if self._before_fit:
            raise FitNotStarted(f"self.trainer.{name} is known once fit starts")
        return value

    @property
    def should_stop(self) -> bool:
        """Lightning's name for `Trainer.stop_training`: set it to end `fit` after this epoch."""
        return self._trainer.stop_training

    @should_stop.setter
    def should_stop(self, value: bool) -> None:
        self._trainer.stop_training = value

    @property
    def current_epoch(self) -> int:
        """The epoch's index during fit; after it (from ``on_train_end``), the number of
        epochs run, as in Lightning."""
        if self.epochs_completed is not None:
            return self.epochs_completed
        return self._trainer.current_epoch

    @property
    def global_step(self) -> int:
        """The number of optimizer steps taken (every optimizer's, under manual optimization)."""
        return self._trainer.global_step

    @property
    def max_epochs(self) -> int | None:  # noqa: F811 (an instance value behind a check)
        return self._fit_value("max_epochs", self.__dict__.get("max_epochs"))

    @max_epochs.setter
    def max_epochs(self, value: int | None) -> None:
        self.__dict__["max_epochs"] = value

    @property
    def estimated_stepping_batches(self) -> float:
        """The optimizer steps `fit` will take: ``ceil(batches per epoch /
        accumulate_grad_batches) * epochs``, as Lightning estimates them (inf when the data
        has no length)."""
        batches = self._fit_value("estimated_stepping_batches", self.num_training_batches)
        if batches == math.inf:
            return math.inf
        steps = math.ceil(batches / self._trainer.accumulate_grad_batches)
        return steps * max(self.max_epochs or 1, 1)

    @property
    def gradient_clip_val(self) -> float | None:
        trainer = self._trainer
        return (
            trainer.gradient_clip_norm
            if trainer.gradient_clip_norm is not None
            else (trainer.gradient_clip_value)
        )

    @property
    def gradient_clip_algorithm(self) -> str | None:
        trainer = self._trainer
        if trainer.gradient_clip_norm is not None:
            return "norm"
        return "value" if trainer.gradient_clip_value is not None else None

    @property
    def global_rank(self) -> int:
        return self._trainer.rank

    @property
    def local_rank(self) -> int:
        return int(os.environ.get("LOCAL_RANK", 0))

    @property
    def num_devices(self) -> int:
        """The processes on this machine (torchrun's ``--nproc_per_node``), 1 without it."""
        return int(os.environ.get("LOCAL_WORLD_SIZE", 1)) if self._trainer.world_size > 1 else 1

    @property
    def is_last_batch(self) -> bool:
        """Whether the training batch being run is the epoch's last (Lightning's manual
        optimization recipes step their schedulers on it)."""
        if self.num_training_batches == math.inf:
            raise TypeError(
                "self.trainer.is_last_batch is not known for training data without a length "
                "(an iterable or IterableDataset): pass steps_per_epoch= to fit, or step the "
                "schedulers in on_train_epoch_end."
            )
        return self.batch_index + 1 >= self.num_training_batches

    @property
    def is_global_zero(self) -> bool:
        return self._trainer.is_main_process

    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        return list(self._kind.optimizers)

    @property
    def lr_scheduler_configs(self) -> list[Any]:
        return list(self._kind.scheduler_configs)

    @property
    def strategy(self) -> Any:
        return self._kind.strategy

    @property
    def precision_plugin(self) -> Any:
        return self._kind.strategy.precision_plugin

    @property
    def lightning_module(self) -> torch.nn.Module:
        return self._kind.module

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
