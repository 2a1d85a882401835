"""Lightning's ``self.log`` / ``self.log_dict``: what a module logs during a step or hook
call of the `Trainer` reaches the callbacks' logs."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any

import torch

from torchcallbacks.models.lightning.trainer_view import LightningTrainerView


class StepLog:
    """What the module logs during one step call, with the hook's on_step/on_epoch defaults."""

    __slots__ = ("on_step", "on_epoch", "entries")

    def __init__(self, on_step: bool, on_epoch: bool) -> None:
        self.on_step = on_step
        self.on_epoch = on_epoch
        self.entries: list[tuple[str, Any, bool, bool, int | None]] = []

    def add(
        self,
        name: str,
        value: Any,
        on_step: bool | None,
        on_epoch: bool | None,
        reduce_fx: str | Callable[..., Any],
        batch_size: int | None,
    ) -> None:
        on_step = self.on_step if on_step is None else on_step
        on_epoch = self.on_epoch if on_epoch is None else on_epoch
        if not (on_step or on_epoch):
            raise ValueError(
                f"self.log({name!r}, ..., on_step=False, on_epoch=False) has no effect; set "
                "on_step=True (value in the batch logs) and/or on_epoch=True (epoch mean)."
            )
        if reduce_fx not in ("mean", torch.mean):
            raise ValueError(
                f"self.log({name!r}, ..., reduce_fx={reduce_fx!r}) is not supported: "
                "torchcallbacks averages logged values over the epoch (reduce_fx='mean')."
            )
        self.entries.append((name, _loggable(name, value), on_step, on_epoch, batch_size))


class ForbiddenLog(StepLog):
    """In a hook where Lightning does not allow ``self.log`` (``on_fit_start``, ``setup``,
    ``on_validation_end``, ...): logging raises an error naming the hook."""

    __slots__ = ("hook",)

    def __init__(self, hook: str) -> None:
        super().__init__(on_step=False, on_epoch=False)
        self.hook = hook

    def add(self, name: str, *args: Any) -> None:
        raise ValueError(
            f"self.log({name!r}, ...) is not allowed in {self.hook}, as in Lightning: log in the "
            "step methods, the batch hooks, or the epoch start and end hooks."
        )


ACTIVE_LOG: ContextVar[StepLog | None] = ContextVar("torchcallbacks_step_log", default=None)


class LoggingMixin:
    """Lightning's ``self.log`` / ``self.log_dict`` for modules that do not use Lightning.

    Inside the step methods `Trainer` calls, logged values reach the callbacks' logs: in
    ``training_step`` by default ``on_step=True, on_epoch=False`` (the batch logs get the
    value, the epoch logs the last one); in ``validation_step``/``test_step``
    ``on_step=False, on_epoch=True`` (the epoch mean, weighted by ``batch_size``, which is
    read from the batch when not given). Outside a trainer step, ``log`` does nothing, so the
    step methods can be called directly in unit tests.

    Example::

        import torch
        from torchcallbacks import EarlyStopping, Trainer
        from torchcallbacks import LoggingMixin

        class Regressor(LoggingMixin, torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.layer = torch.nn.Linear(3, 1)

            def forward(self, x):
                return self.layer(x)

            def training_step(self, batch, batch_idx):
                x, y = batch
                loss = torch.nn.functional.mse_loss(self(x), y)
                self.log("train_mse", loss, on_epoch=True)
                return loss

            def validation_step(self, batch, batch_idx):
                x, y = batch
                self.log("val_loss", torch.nn.functional.mse_loss(self(x), y))

            def configure_optimizers(self):
                return torch.optim.SGD(self.parameters(), lr=0.1)

        x, y = torch.randn(64, 3), torch.randn(64, 1)
        history = Trainer(Regressor()).fit(x, y, epochs=3, validation_split=0.25,
                                           callbacks=[EarlyStopping(patience=1)], verbose=0)
        print(sorted(history.history))  # ['loss', 'train_mse', 'val_loss']

    ``prog_bar``, ``logger``, ``sync_dist`` and the other Lightning arguments are accepted
    and ignored: every logged value reaches every callback (and so the progress bar).
    """

    def log(
        self,
        name: str,
        value: Any,
        prog_bar: bool = False,
        logger: bool | None = None,
        on_step: bool | None = None,
        on_epoch: bool | None = None,
        reduce_fx: str | Callable[..., Any] = "mean",
        enable_graph: bool = False,
        sync_dist: bool = False,
        sync_dist_group: Any = None,
        add_dataloader_idx: bool = True,
        batch_size: int | None = None,
        metric_attribute: str | None = None,
        rank_zero_only: bool = False,
    ) -> None:
        """Log ``value`` (a scalar tensor, a number, or a metric object) under ``name``."""
        step_log = ACTIVE_LOG.get()
        if step_log is not None:
            step_log.add(name, value, on_step, on_epoch, reduce_fx, batch_size)

    def log_dict(
        self,
        dictionary: Mapping[str, Any],
        prog_bar: bool = False,
        logger: bool | None = None,
        on_step: bool | None = None,
        on_epoch: bool | None = None,
        reduce_fx: str | Callable[..., Any] = "mean",
        enable_graph: bool = False,
        sync_dist: bool = False,
        sync_dist_group: Any = None,
        add_dataloader_idx: bool = True,
        batch_size: int | None = None,
        rank_zero_only: bool = False,
    ) -> None:
        """`log` every item of ``dictionary`` with the same options."""
        for name, value in dictionary.items():
            self.log(
                name,
                value,
                on_step=on_step,
                on_epoch=on_epoch,
                reduce_fx=reduce_fx,
                batch_size=batch_size,
            )


class RoutedLog:
    """A LightningModule's ``log``/``log_dict``: ours during a Trainer step, Lightning's
    otherwise. An instance attribute, so it survives ``copy.deepcopy`` and pickling."""

    __slots__ = ("module", "name")

    def __init__(self, module: torch.nn.Module, name: str) -> None:
        self.module = module
        self.name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if ACTIVE_LOG.get() is None and isinstance(
            getattr(self.module, "_trainer", None), LightningTrainerView
        ):
            return None  # outside a step or hook of ours: nothing collects the value
        owner = LoggingMixin if ACTIVE_LOG.get() is not None else type(self.module)
        return getattr(owner, self.name)(self.module, *args, **kwargs)


def _loggable(name: str, value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(
                f"self.log({name!r}, ...) got a tensor of shape {tuple(value.shape)}; log a "
                "scalar (e.g. value.mean())."
            )
        return value.detach().reshape(())
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    if all(hasattr(value, attr) for attr in ("update", "compute", "reset")):
        return value
    raise ValueError(
        f"self.log({name!r}, ...) got {type(value).__name__}; log a scalar tensor, a number, "
        "or a metric object with update/compute/reset."
    )
