"""``configure_optimizers``: Lightning's return forms, its scheduler configs, and the
optimizer wrappers ``self.optimizers()`` returns."""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch.optim import lr_scheduler

_SCHEDULER_KEYS = {"scheduler", "interval", "frequency", "monitor", "strict", "name",
                   "reduce_on_plateau"}  # fmt: skip


@dataclass
class SchedulerConfig:
    """Lightning's ``LRSchedulerConfig``: what ``self.trainer.lr_scheduler_configs`` holds."""

    scheduler: Any
    name: str | None = None
    interval: str = "epoch"
    frequency: int = 1
    reduce_on_plateau: bool = False
    monitor: str | None = None
    strict: bool = True


def configure_optimizers(
    module: torch.nn.Module, automatic: bool
) -> tuple[list[torch.optim.Optimizer], list[SchedulerConfig]]:
    """The optimizers and scheduler configs from ``module.configure_optimizers()``.

    Accepts Lightning's return forms: an optimizer; a list/tuple of optimizers;
    ``([optimizers], [schedulers or configs])``; ``{"optimizer": ..., "lr_scheduler":
    scheduler or {"scheduler", "interval", "frequency", "monitor", "strict", "name"},
    "monitor": ...}``, or a list of such dicts. Automatic optimization takes one optimizer.
    """
    owner = type(module).__name__
    result = module.configure_optimizers()
    schedulers: list[Any] = []
    if isinstance(result, torch.optim.Optimizer):
        optimizers = [result]
    elif (
        isinstance(result, list | tuple)
        and len(result) == 2
        and isinstance(result[0], list | tuple)
        and all(isinstance(item, torch.optim.Optimizer) for item in result[0])
    ):
        optimizers = list(result[0])
        schedulers = list(result[1]) if isinstance(result[1], list | tuple) else [result[1]]
    elif isinstance(result, Mapping) or (
        isinstance(result, list | tuple) and result and all(isinstance(d, Mapping) for d in result)
    ):
        dicts = [result] if isinstance(result, Mapping) else list(result)
        for item in dicts:
            _check_dict(item, owner)
        optimizers = [item["optimizer"] for item in dicts]
        schedulers = [  # each dict's monitor goes with its own scheduler
            _with_monitor(item["lr_scheduler"], item.get("monitor"))
            for item in dicts
            if item.get("lr_scheduler") is not None
        ]
    elif isinstance(result, list | tuple) and result:
        optimizers = list(result)
    else:
        optimizers = []
    if not optimizers or not all(isinstance(o, torch.optim.Optimizer) for o in optimizers):
        raise ValueError(
            f"{owner}.configure_optimizers must return a torch.optim.Optimizer, a list of them, "
            "([optimizers], [schedulers]) or {'optimizer': ..., 'lr_scheduler': ...}; it returned "
            f"{result!r}."
        )
    if automatic and len(optimizers) > 1:
        raise ValueError(
            f"{owner}.configure_optimizers returned {len(optimizers)} optimizers: training with "
            "several optimizers needs manual optimization, as in Lightning. Set "
            "self.automatic_optimization = False and step them in training_step with "
            "opt1, opt2 = self.optimizers()."
        )
    configs = [_config(s, owner, automatic) for s in schedulers]
    for config in configs:
        if getattr(config.scheduler, "optimizer", None) not in optimizers:
            raise ValueError(
                f"{owner}.configure_optimizers returned a {type(config.scheduler).__name__} built "
                "on an optimizer it did not return; build it on one of the returned optimizers."
            )
    return optimizers, configs


def _check_dict(item: Mapping[str, Any], owner: str) -> None:
    unknown = set(item) - {"optimizer", "lr_scheduler", "monitor"}
    if "optimizer" not in item or unknown:
        raise ValueError(
            f"{owner}.configure_optimizers returned a dict with keys {sorted(item)}; use "
            "{'optimizer': ..., 'lr_scheduler': ..., 'monitor': ...}."
        )


def _with_monitor(scheduler: Any, monitor: str | None) -> Any:
    if monitor is None:
        return scheduler
    config = dict(scheduler) if isinstance(scheduler, Mapping) else {"scheduler": scheduler}
    config.setdefault("monitor", monitor)
    return config


def _config(scheduler: Any, owner: str, automatic: bool) -> SchedulerConfig:
    config = dict(scheduler) if isinstance(scheduler, Mapping) else {"scheduler": scheduler}
    unknown = set(config) - _SCHEDULER_KEYS
    interval = config.get("interval", "epoch")
    frequency = config.get("frequency", 1)
    if "scheduler" not in config or unknown or interval not in ("epoch", "step"):
        raise ValueError(
            f"{owner}.configure_optimizers: bad lr_scheduler config {config!r}; use "
            "{'scheduler': <torch lr_scheduler>, 'interval': 'epoch' or 'step', "
            "'frequency': int, 'monitor': 'val_loss'}."
        )
    if not isinstance(frequency, int) or isinstance(frequency, bool) or frequency < 1:
        raise ValueError(f"{owner}.configure_optimizers: frequency must be an int >= 1.")
    plateau = isinstance(config["scheduler"], lr_scheduler.ReduceLROnPlateau)
    config.setdefault("reduce_on_plateau", plateau)
    if not automatic:
        ignored = sorted(set(config) & {"monitor", "strict"})
        if ignored:
            warnings.warn(
                f"{owner}.configure_optimizers: the lr_scheduler config's {ignored} are ignored "
                "under manual optimization, where training_step steps the schedulers "
                "(self.lr_schedulers()), as in Lightning.",
                stacklevel=5,
            )
    config.setdefault("monitor", None)
    if config["reduce_on_plateau"] and config["monitor"] is None:
        config["monitor"] = "val_loss"
    return SchedulerConfig(**config)


class LightningOptimizer:
    """Lightning's ``LightningOptimizer``: what ``self.optimizers()`` returns.

    ``step(closure)`` goes through the trainer (the closure's backward pass, the hook
    ``on_before_optimizer_step`` and gradient clipping, AMP's unscaling and skipped steps,
    the step count); every other attribute is the optimizer's (``zero_grad``,
    ``param_groups``, ``state_dict``...). ``isinstance`` holds for the optimizer's class, and
    for Lightning's own ``LightningOptimizer`` when Lightning is installed.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        step: Callable[..., Any],
        module: torch.nn.Module,
    ) -> None:
        self._optimizer = optimizer
        self._step = step
        self._module = module
        bases: tuple[type, ...] = (LightningOptimizer,)
        lightning = sys.modules.get("lightning.pytorch.core.optimizer")
        if lightning is not None:
            bases += (lightning.LightningOptimizer,)
        name = f"Lightning{type(optimizer).__name__}"
        self.__class__ = type(name, (*bases, type(optimizer)), {})

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self._optimizer

    def step(self, closure: Callable[[], Any] | None = None, **kwargs: Any) -> Any:
        """One optimizer step through the trainer; ``closure`` (e.g. the training step and
        its backward pass) runs first."""
        if closure is not None and not callable(closure):
            raise TypeError("optimizer.step(closure): the closure must be callable.")
        return self._step(self._optimizer, closure, **kwargs)

    @contextlib.contextmanager
    def toggle_model(self, sync_grad: bool = True) -> Iterator[None]:
        """Lightning's ``toggle_model``: inside, only this optimizer's parameters require
        gradients (``module.toggle_optimizer``)."""
        self._module.toggle_optimizer(self)
        yield
        self._module.untoggle_optimizer(self)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self._optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return self._optimizer.state_dict()

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        self._optimizer.load_state_dict(state_dict)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self._optimizer.add_param_group(param_group)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._optimizer, name)
