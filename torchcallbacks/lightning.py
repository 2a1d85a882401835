"""Lightning-style modules: ``training_step``, ``configure_optimizers`` and ``self.log``.

A module that defines ``training_step(batch, batch_idx)`` is trained by `Trainer` without a
``loss`` or ``optimizer``: the trainer calls its step methods, takes the optimizer (and
learning-rate schedulers) from ``configure_optimizers``, and turns what the module logs with
``self.log`` into the callbacks' logs. Plain modules get ``self.log`` from `LoggingMixin`;
a real ``lightning.LightningModule`` works as it is (Lightning is never imported here).
"""

from __future__ import annotations

import functools
import inspect
import numbers
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import torch
from torch.nn.parallel import DistributedDataParallel

from torchcallbacks import distributed
from torchcallbacks.callbacks.base import Callback, to_float
from torchcallbacks.callbacks.learning_rate_scheduler import LearningRateScheduler
from torchcallbacks.steps import ObjectiveSteps

if TYPE_CHECKING:
    from torchcallbacks.trainer import Trainer


class _StepLog:
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


_ACTIVE_LOG: ContextVar[_StepLog | None] = ContextVar("torchcallbacks_step_log", default=None)


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
        from torchcallbacks.lightning import LoggingMixin

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
        step_log = _ACTIVE_LOG.get()
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


class _RoutedLog:
    """A LightningModule's ``log``/``log_dict``: ours during a Trainer step, Lightning's
    otherwise. An instance attribute, so it survives ``copy.deepcopy`` and pickling."""

    __slots__ = ("module", "name")

    def __init__(self, module: torch.nn.Module, name: str) -> None:
        self.module = module
        self.name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if _ACTIVE_LOG.get() is None and isinstance(
            getattr(self.module, "_trainer", None), LightningTrainerView
        ):
            return None  # outside a step or hook of ours: nothing collects the value
        owner = LoggingMixin if _ACTIVE_LOG.get() is not None else type(self.module)
        return getattr(owner, self.name)(self.module, *args, **kwargs)


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


_LIGHTNING_BASES = {
    "lightning.pytorch.core.module.LightningModule",
    "lightning.pytorch.core.datamodule.LightningDataModule",
    "pytorch_lightning.core.module.LightningModule",
    "pytorch_lightning.core.datamodule.LightningDataModule",
}


def _is_lightning_base(cls: type) -> bool:
    """Lightning's own ``LightningModule``/``LightningDataModule``: by identity when Lightning
    is loaded (a subclass of it can only exist then), else by qualified name."""
    for package in ("lightning.pytorch", "pytorch_lightning"):
        loaded = sys.modules.get(package)
        if loaded is not None and cls in (loaded.LightningModule, loaded.LightningDataModule):
            return True
    return f"{cls.__module__}.{cls.__qualname__}" in _LIGHTNING_BASES


@functools.lru_cache(maxsize=256)
def _library_classes(owner: type) -> frozenset[type]:
    """The classes of ``owner``'s MRO whose methods are library stubs, not the user's: torch's
    ``nn.Module``, `LoggingMixin`, and Lightning's base classes with everything they inherit.
    Every other class counts as the user's, whatever package it comes from (Lightning's demo
    modules included)."""
    library: set[type] = {object, LoggingMixin, *torch.nn.Module.__mro__}
    for cls in owner.__mro__:
        if _is_lightning_base(cls):
            library.update(cls.__mro__)
    return frozenset(library)


def is_lightning_module(module: Any) -> bool:
    """Whether ``module`` is a ``lightning`` / ``pytorch_lightning`` LightningModule."""
    classes = type(module).__mro__
    return any(cls.__name__ == "LightningModule" and _is_lightning_base(cls) for cls in classes)


def user_method(obj: Any, name: str) -> Callable[..., Any] | None:
    """``obj.<name>`` when its class or a user-level ancestor defines it; None when only
    Lightning's or torch's base classes do (their stubs do nothing or raise)."""
    owner = type(obj)
    library = _library_classes(owner)
    for cls in owner.__mro__:
        if name in vars(cls):
            return None if cls in library else getattr(obj, name)
    return None


class LoggedTracker:
    """Epoch accumulators of what a module logs: the Lightning-style `MetricTracker`.

    ``logs()`` (batch hooks) gives running means, with values logged ``on_step`` at this
    step's value; ``logs(reduce)`` (epoch end) gives epoch means for values logged
    ``on_epoch`` and the last value for the others. Metric objects give ``compute()`` and
    are reset with the tracker. Keys keep the order in which they were first logged.
    """

    def __init__(self, device: torch.device, epoch_end: Callable[[], list] | None = None) -> None:
        self.device = device
        self.series: dict[str, _Series] = {}
        # Called when the epoch's logs are read (``logs(reduce)``): what the module logs in
        # its epoch-end hook joins the epoch's values before they are reduced.
        self.epoch_end = epoch_end

    def reset(self) -> None:
        for series in self.series.values():
            if series.metric is not None:
                series.metric.reset()
        self.series = {}

    def update(self, values: list[tuple[str, Any, bool, bool, int | None]], size: int) -> None:
        for name, value, on_step, on_epoch, batch_size in values:
            series = self.series.get(name)
            if series is None:
                series = self.series[name] = _Series()
            if not isinstance(value, torch.Tensor | float):  # a metric object
                series.metric = value
                continue
            series.step = value if on_step else None
            if on_epoch:
                weight = size if batch_size is None else batch_size
                series.total = series.total + value * weight
                series.weight += weight
                series.epoch_mean = True
            elif not series.epoch_mean:
                series.total, series.weight = value, 1.0

    def logs(self, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict:
        if reduce is not None and self.epoch_end is not None:
            self.update(self.epoch_end(), 1)
        names, totals, weights = [], [], []
        for name, series in self.series.items():
            if series.metric is not None:
                continue
            names.append(name)
            if reduce is None and series.step is not None:
                totals.append(series.step)
                weights.append(1.0)
            else:
                totals.append(series.total)
                weights.append(series.weight)
        logs: dict[str, Any] = {}
        if names:
            sums = torch.stack(
                [torch.as_tensor(v, device=self.device).float() for v in [*totals, *weights]]
            )
            if reduce is not None:
                sums = reduce(sums)
            flat = sums.tolist()
            count = len(names)
            logs = {name: flat[i] / flat[count + i] for i, name in enumerate(names)}
        # torchmetrics objects synchronise the processes in compute(): under torchrun they
        # are read only at the end of an epoch, where every rank reads them together.
        if reduce is None and distributed.is_active():
            return logs
        for name, series in self.series.items():
            if series.metric is not None:
                logs[name] = to_float(series.metric.compute())
        return logs

    def state_dict(self) -> dict[str, Any]:
        return {
            name: {
                "total": s.total.cpu() if isinstance(s.total, torch.Tensor) else s.total,
                "weight": s.weight,
                "epoch_mean": s.epoch_mean,
            }
            for name, s in self.series.items()
            if s.metric is None
        }

    def load_state_dict(self, state: Mapping[str, Any], device: torch.device) -> None:
        self.series = {}
        for name, saved in state.items():
            series = self.series[name] = _Series()
            total = saved["total"]
            series.total = total.to(device) if isinstance(total, torch.Tensor) else total
            series.weight = float(saved["weight"])
            series.epoch_mean = bool(saved["epoch_mean"])


class _Series:
    __slots__ = ("total", "weight", "epoch_mean", "step", "metric")

    def __init__(self) -> None:
        self.total: torch.Tensor | float = 0.0
        self.weight = 0.0
        self.epoch_mean = False
        self.step: torch.Tensor | float | None = None
        self.metric: Any = None


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


class TrainingStepForward(torch.nn.Module):
    """What DDP wraps for a module trained through its ``training_step``: a forward that
    is the training step, so that DDP's reducer sees the step's graph and synchronises the
    gradients (Lightning's own strategy wrapper does the same). `Trainer.model` stays the
    module itself: checkpoints hold its keys without prefixes."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, batch: Any, batch_idx: int) -> Any:
        return self.module.training_step(batch, batch_idx)


def step_methods(module: torch.nn.Module) -> list[str]:
    """The step methods the Trainer calls on ``module`` instead of its forward (none when
    it defines no ``training_step``)."""
    if user_method(module, "training_step") is None:
        return []
    names = ("training_step", "validation_step", "test_step", "predict_step")
    return [name for name in names if user_method(module, name) is not None]


def training_step_forward(module: torch.nn.Module) -> torch.nn.Module:
    """`TrainingStepForward` of ``module`` when it defines ``training_step``, else itself."""
    return TrainingStepForward(module) if user_method(module, "training_step") else module


class LightningSteps(ObjectiveSteps):
    """The `Trainer`'s batch strategy for modules that define ``training_step``.

    Chosen by ``Trainer(model)`` when ``model`` defines ``training_step`` and no ``loss`` is
    given. ``training_step(batch, batch_idx)`` returns the loss (or a dict with ``"loss"``);
    `fit` validates with ``validation_step``, `evaluate` uses ``test_step`` (else
    ``validation_step``), `predict` uses ``predict_step`` (else the module's forward).
    Batches are passed as the data yields them (in-memory inputs given without targets: the
    inputs alone). Validation keys are the logged names.
    """

    takes_weights = False  # the module computes its loss in training_step

    def __init__(self, trainer: Trainer) -> None:
        super().__init__(trainer)
        module = trainer.model
        owner = type(module).__name__
        if trainer.objective.metric_spec:
            raise ValueError(
                f"metrics= is used with loss=; {owner} defines training_step, so log its metrics "
                "with self.log(...) in training_step/validation_step instead."
            )
        if getattr(module, "automatic_optimization", True) is False:
            raise ValueError(
                f"{owner} sets automatic_optimization = False; the Trainer does the backward "
                "pass and optimizer step itself. Remove the manual optimization, or pass "
                "loss= and optimizer= to train the module's forward instead."
            )
        if isinstance(trainer._module, DistributedDataParallel) and not isinstance(
            trainer._module.module, TrainingStepForward
        ):
            raise ValueError(
                f"{owner} defines training_step, but it came wrapped in "
                "DistributedDataParallel, whose forward is the module's forward: its "
                "training_step would skip gradient synchronisation. Pass the module itself; "
                "under torchrun the Trainer wraps it so that DDP runs training_step."
            )
        self.view = LightningTrainerView(trainer)
        if is_lightning_module(module):
            module.log = _RoutedLog(module, "log")
            module.log_dict = _RoutedLog(module, "log_dict")
            module.trainer = self.view  # before configure_optimizers, which may read it
        self.module = module
        self.schedulers: list[LearningRateScheduler] = []
        if trainer.optimizer is None and user_method(module, "configure_optimizers"):
            trainer.optimizer, self.schedulers = configure_optimizers(module)
        self.validation_step = user_method(module, "validation_step")
        self.test_step = user_method(module, "test_step")
        # evaluate runs test_step with the test hooks, else validation_step with the
        # validation hooks (Lightning's trainer.test / trainer.validate)
        self.test_stage = "test" if self.test_step is not None else "validation"
        self.test_step = self.test_step or self.validation_step
        self.predict_step = user_method(module, "predict_step")
        self.pending_epoch_end: str | None = None  # the evaluation epoch-end hook to run
        self.opening_entries: list[tuple[str, Any, bool, bool, int | None]] = []  # its start's
        self._forward_takes_one_input = _takes_one_input(module)

    def tracker(self) -> LoggedTracker:
        return LoggedTracker(self.trainer.device, epoch_end=self._evaluation_epoch_end)

    def callbacks(self, training: bool) -> list[Callback]:
        hooks = _ModuleHooks(self, training)
        return [hooks, *self.schedulers] if training else [hooks]

    def run_hook(self, name: str) -> list[tuple[str, Any, bool, bool, int | None]]:
        """Call the module's hook ``name`` when the user defines it; what it logs."""
        hook = user_method(self.module, name)
        if hook is None:
            return []
        log = _StepLog(on_step=False, on_epoch=True)
        token = _ACTIVE_LOG.set(log)
        try:
            hook()
        finally:
            _ACTIVE_LOG.reset(token)
        return log.entries

    def _evaluation_epoch_end(self) -> list[tuple[str, Any, bool, bool, int | None]]:
        """What the evaluation's start hooks and its epoch-end hook logged."""
        name, self.pending_epoch_end = self.pending_epoch_end, None
        opening, self.opening_entries = self.opening_entries, []
        return opening + ([] if name is None else self.run_hook(name))

    def validation_logs(self, logs: Mapping[str, Any]) -> dict[str, Any]:
        return dict(logs)

    def _call(self, step: Callable[..., Any], log: _StepLog | None, *args: Any) -> Any:
        token = _ACTIVE_LOG.set(log)
        try:
            dtype = self.trainer._autocast_dtype
            if dtype is None:
                return step(*args)
            with torch.autocast(self.trainer.device.type, dtype=dtype):
                return step(*args)
        finally:
            _ACTIVE_LOG.reset(token)

    def train_batch(self, batch: Any, batch_index: int) -> tuple[torch.Tensor, list, int]:
        trainer = self.trainer
        if trainer.example_batch_inputs is None:
            trainer.example_batch_inputs = self._example_inputs(batch)
        batch = _as_given(batch)
        log = _StepLog(on_step=True, on_epoch=False)
        # Under torchrun, DDP around `TrainingStepForward` (its reducer synchronises the
        # step's gradients); eager as in one process, where `compile` leaves steps alone.
        running = self.trainer._module
        running = getattr(running, "_orig_mod", running)
        if isinstance(running, DistributedDataParallel):
            step = running
        else:
            step = self.module.training_step
        output = self._call(step, log, batch, batch_index)
        loss = _loss_of(output, type(self.module).__name__)
        if not any(entry[0] == "loss" for entry in log.entries):
            log.entries.insert(0, ("loss", loss.detach(), False, True, None))
        return loss, log.entries, _batch_size_of(batch)

    def _example_inputs(self, batch: Any) -> Any:
        """What `Trainer.summary` and TensorBoard's graph run the forward on: Lightning's
        ``example_input_array``, else a pair's inputs when the forward takes one input."""
        example = getattr(self.module, "example_input_array", None)
        if example is None and _is_pair(batch) and self._forward_takes_one_input:
            return batch[0]
        return example

    def validates(self) -> bool:
        """Without a ``validation_step``, `fit` skips the validation data with a warning, as
        Lightning does."""
        if self.validation_step is not None:
            return True
        warnings.warn(
            f"You passed validation data but {type(self.module).__name__} defines no "
            "validation_step: skipping validation. Define validation_step(batch, batch_idx) "
            "and log with self.log('val_loss', loss) to validate.",
            stacklevel=4,
        )
        return False

    def eval_batch(self, batch: Any, batch_index: int) -> tuple[list, int]:
        return self._evaluate(self.validation_step, "validation_step", batch, batch_index)

    def test_batch(self, batch: Any, batch_index: int) -> tuple[list, int]:
        return self._evaluate(self.test_step, "test_step", batch, batch_index)

    def _evaluate(
        self, step: Callable[..., Any] | None, name: str, batch: Any, batch_index: int
    ) -> tuple[list, int]:
        if step is None:
            raise ValueError(
                f"{type(self.module).__name__} defines no {name}(batch, batch_idx), which "
                "validation/evaluate need; define it and log the metrics with self.log, "
                "e.g. self.log('val_loss', loss)."
            )
        log = _StepLog(on_step=False, on_epoch=True)
        batch = _as_given(batch)
        self._call(step, log, batch, batch_index)
        return log.entries, _batch_size_of(batch)

    def predict_batch(self, batch: Any, batch_index: int) -> Any:
        if self.predict_step is None:
            return super().predict_batch(batch, batch_index)
        return self._call(self.predict_step, None, _as_given(batch), batch_index)


class _ModuleHooks(Callback):
    """Calls the LightningModule's own hooks at the matching events of `fit`, `evaluate`
    and `predict`, in Lightning's order relative to the loop. Values the module logs in
    ``on_train_epoch_end`` join the epoch logs (after validation, as in Lightning); those
    logged in ``on_validation_epoch_end``/``on_test_epoch_end`` join the evaluation's."""

    def __init__(self, steps: LightningSteps, training: bool) -> None:
        super().__init__()
        self.steps = steps
        self.training = training
        self.view = steps.view
        # What on_train_start/on_train_epoch_start log joins the epoch's logs, as in Lightning.
        self._opening: list[tuple[str, Any, bool, bool, int | None]] = []

    def _evaluation_stage(self) -> str:
        return "validation" if self.training else self.steps.test_stage

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.view.stage = "train"
        self.view.max_epochs = (self.params or {}).get("epochs")
        self.view.epochs_completed = None
        self._opening = self.steps.run_hook("on_fit_start") + self.steps.run_hook("on_train_start")

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.view.stage = "train"
        self._opening += self.steps.run_hook("on_train_epoch_start")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.view.stage = "train"
        entries = self._opening + self.steps.run_hook("on_train_epoch_end")
        self._opening = []
        if logs is not None:
            logs.update(_epoch_values(entries))  # the dict every later callback receives
            self.view.callback_metrics = _as_tensors(logs)

    def on_train_end(self, logs: dict | None = None) -> None:
        trainer = self.steps.trainer
        self.view.epochs_completed = trainer.current_epoch + bool(trainer.history.epoch)
        self.steps.run_hook("on_train_end")
        self.steps.run_hook("on_fit_end")
        self.view.stage = None

    def on_test_begin(self, logs: dict | None = None) -> None:
        stage = self._evaluation_stage()
        self.view.stage = "validate" if stage == "validation" else "test"
        self.steps.opening_entries = self.steps.run_hook(f"on_{stage}_start")
        self.steps.opening_entries += self.steps.run_hook(f"on_{stage}_epoch_start")
        self.steps.pending_epoch_end = f"on_{stage}_epoch_end"

    def on_test_end(self, logs: dict | None = None) -> None:
        self.view.callback_metrics.update(_as_tensors(logs or {}))  # validation or evaluate's
        self.steps.pending_epoch_end = None
        self.steps.run_hook(f"on_{self._evaluation_stage()}_end")
        self.view.stage = "train" if self.training else None

    def on_predict_begin(self, logs: dict | None = None) -> None:
        self.view.stage = "predict"
        self.steps.run_hook("on_predict_start")
        self.steps.run_hook("on_predict_epoch_start")

    def on_predict_end(self, logs: dict | None = None) -> None:
        self.steps.run_hook("on_predict_epoch_end")
        self.steps.run_hook("on_predict_end")
        self.view.stage = None


def _as_tensors(logs: Mapping[str, Any]) -> dict[str, Any]:
    """Logs as Lightning's ``callback_metrics`` holds them: numbers as scalar tensors."""
    return {
        name: torch.tensor(value) if isinstance(value, numbers.Real) else value
        for name, value in logs.items()
    }


def _epoch_values(entries: list[tuple[str, Any, bool, bool, int | None]]) -> dict[str, Any]:
    """Floats of what an epoch-end hook logged (metric objects: their ``compute()``)."""
    values: dict[str, Any] = {}
    for name, value, *_ in entries:
        if isinstance(value, torch.Tensor | float):
            values[name] = to_float(value)
        else:  # a metric object: read, then reset for the next epoch (as Lightning does)
            values[name] = to_float(value.compute())
            value.reset()
    return values


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


def _loss_of(output: Any, owner: str) -> torch.Tensor:
    loss = output.get("loss") if isinstance(output, Mapping) else output
    if isinstance(loss, torch.Tensor) and loss.numel() == 1 and loss.requires_grad:
        return loss.reshape(())
    if isinstance(loss, torch.Tensor) and loss.numel() == 1:
        problem = "a loss that does not require grad (detached, or computed under no_grad)"
    else:
        problem = f"{type(output).__name__}"
    raise ValueError(
        f"{owner}.training_step must return the loss (a scalar tensor with grad) or a dict "
        f"with 'loss'; it returned {problem}."
    )


def _is_pair(batch: Any) -> bool:
    return isinstance(batch, tuple | list) and len(batch) == 2


def _takes_one_input(module: torch.nn.Module) -> bool:
    """Whether ``module``'s forward can be called with one positional input."""
    try:
        parameters = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    required = [p for p in parameters if p.kind in positional and p.default is p.empty]
    variadic = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters)
    return len(required) == 1 or (len(required) == 0 and variadic)


def _as_given(batch: Any) -> Any:
    """The batch as the user's data holds it: in-memory inputs given without targets
    (``fit(x)``, ``train_on_batch(x)``) come as ``(x, None)`` and go to the steps as ``x``."""
    return batch[0] if _is_pair(batch) and batch[1] is None else batch


def _tensors(batch: Any) -> Iterator[torch.Tensor]:
    if isinstance(batch, torch.Tensor):
        yield batch
    elif isinstance(batch, Mapping):
        for value in batch.values():
            yield from _tensors(value)
    elif isinstance(batch, Sequence) and not isinstance(batch, str):
        for value in batch:
            yield from _tensors(value)


def _batch_size_of(batch: Any) -> int:
    """Lightning's rule: the first dimension of the first tensor in the batch (else 1)."""
    for tensor in _tensors(batch):
        return tensor.shape[0] if tensor.ndim else 1
    return 1
