"""``configure_optimizers``: Lightning's return forms, and its schedulers as callbacks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from torchcallbacks.callbacks.learning_rate_scheduler import LearningRateScheduler


class _ConfiguredScheduler(LearningRateScheduler):
    """A scheduler from ``configure_optimizers``: stepped every ``frequency`` epochs, or every
    ``frequency`` optimizer steps with ``interval="step"`` (gradient accumulation respected)."""

    def __init__(self, scheduler: Any, interval: str, frequency: int, monitor: str) -> None:
        super().__init__(
            scheduler, interval="batch" if interval == "step" else "epoch", monitor=monitor
        )
        self.frequency = frequency
        self.last_step = 0

    def on_train_begin(self, logs: dict | None = None) -> None:
        super().on_train_begin(logs)
        self.last_step = self.trainer.global_step

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        step = self.trainer.global_step
        if step != self.last_step:
            self.last_step = step
            if step % self.frequency == 0:
                super().on_train_batch_end(batch, logs)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.interval == "batch" or (epoch + 1) % self.frequency == 0:
            super().on_epoch_end(epoch, logs)
        elif logs is not None:
            logs["lr"] = self.trainer.get_lr()

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "last_step": self.last_step}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.last_step = int(state.get("last_step", self.last_step))


def configure_optimizers(
    module: torch.nn.Module,
) -> tuple[torch.optim.Optimizer, list[LearningRateScheduler]]:
    """The optimizer and scheduler callbacks from ``module.configure_optimizers()``.

    Accepts Lightning's return forms: an optimizer; a list/tuple with one optimizer;
    ``([optimizer], [scheduler or config, ...])``; ``{"optimizer": ..., "lr_scheduler":
    scheduler or {"scheduler", "interval", "frequency", "monitor"}, "monitor": ...}``.
    """
    owner = type(module).__name__
    result = module.configure_optimizers()
    optimizers: list[Any] = []
    schedulers: list[LearningRateScheduler] = []
    if isinstance(result, Mapping):
        result = [result]
    if isinstance(result, torch.optim.Optimizer):
        optimizers = [result]
    elif (
        isinstance(result, list | tuple)
        and len(result) == 2
        and all(isinstance(part, list | tuple) for part in result)
    ):
        optimizers = list(result[0])
        schedulers = [_scheduler_callback(s, None, owner) for s in result[1]]
    elif isinstance(result, list | tuple):
        for item in result:
            if isinstance(item, Mapping):
                if "optimizer" not in item:
                    raise ValueError(
                        f"{owner}.configure_optimizers returned a dict without an 'optimizer' "
                        f"key (keys: {sorted(item)}); return {{'optimizer': ..., "
                        "'lr_scheduler': ...}."
                    )
                optimizers.append(item["optimizer"])
                if item.get("lr_scheduler") is not None:
                    schedulers.append(
                        _scheduler_callback(item["lr_scheduler"], item.get("monitor"), owner)
                    )
            else:
                optimizers.append(item)
    if len(optimizers) != 1 or not isinstance(optimizers[0], torch.optim.Optimizer):
        raise ValueError(
            f"{owner}.configure_optimizers must return one torch.optim.Optimizer (alone, in a "
            "list, or in Lightning's dict form with 'lr_scheduler'); it returned "
            f"{result!r}. Several optimizers need manual optimization, which the Trainer "
            "does not do."
        )
    return optimizers[0], schedulers


def _scheduler_callback(config: Any, monitor: str | None, owner: str) -> LearningRateScheduler:
    if not isinstance(config, Mapping):
        config = {"scheduler": config}
    unknown = set(config) - {"scheduler", "interval", "frequency", "monitor", "strict", "name"}
    interval = config.get("interval", "epoch")
    frequency = config.get("frequency", 1)
    if "scheduler" not in config or unknown or interval not in ("epoch", "step"):
        raise ValueError(
            f"{owner}.configure_optimizers: bad lr_scheduler config {dict(config)!r}; use "
            "{'scheduler': <torch lr_scheduler>, 'interval': 'epoch' or 'step', "
            "'frequency': int, 'monitor': 'val_loss'}."
        )
    if not isinstance(frequency, int) or frequency < 1:
        raise ValueError(f"{owner}.configure_optimizers: frequency must be an int >= 1.")
    monitor = config.get("monitor", monitor) or "val_loss"
    return _ConfiguredScheduler(config["scheduler"], interval, frequency, monitor)
