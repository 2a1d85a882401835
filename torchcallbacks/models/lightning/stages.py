"""The runs of a LightningModule: what happens around the batches of `fit`, `evaluate` and
`predict`, in Lightning's order.

- the run's callbacks: the user's Lightning callbacks (and ``configure_callbacks``'s) go to
  `HookCalls`, this library's to the `CallbackList`; Lightning's built-in callbacks are
  refused with the name of this library's equivalent;
- entering a stage (``"fit"``, ``"validate"``, ``"test"``, ``"predict"``):
  ``prepare_data``, ``setup(stage)``, ``configure_model`` (and, for `fit`, a deferred
  ``configure_optimizers``); leaving it: the data module's and ``teardown(stage)``;
- an evaluation run: ``on_validation_model_zero_grad`` (inside `fit`),
  ``on_{stage}_model_eval``, ``on_{stage}_start``, ``on_{stage}_epoch_start``, the batches,
  ``on_{stage}_epoch_end``, ``on_{stage}_end``, ``on_{stage}_model_train``;
- full checkpoints: ``on_save_checkpoint`` / ``on_load_checkpoint`` of the callbacks and
  the module, the data module's ``state_dict``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch.nn.parallel import DistributedDataParallel

from torchcallbacks.callbacks.callback_list import flatten
from torchcallbacks.data.inputs import prepare_data
from torchcallbacks.distributed import process_group as distributed
from torchcallbacks.distributed.fsdp import is_sharded
from torchcallbacks.models.lightning.callbacks import check_lightning_callback
from torchcallbacks.models.lightning.calls import HookCalls, warn_uncalled
from torchcallbacks.models.lightning.hooks import ModuleHooks, as_tensors
from torchcallbacks.models.lightning.self_log import ACTIVE_LOG, ForbiddenLog, StepLog
from torchcallbacks.overrides import is_lightning_callback, user_method

if TYPE_CHECKING:
    from torchcallbacks.callbacks.base import Callback
    from torchcallbacks.models.lightning.kind import LightningKind

_EVALUATION = {"validate": "validation", "test": "test", "predict": "predict"}


class Stages:
    """The runs of `LightningKind` (see the module docstring)."""

    batch_hooks: tuple[Any, Any] = (None, None)  # this evaluation's batch start and end hooks
    pending_epoch_end: str | None = None  # the evaluation epoch-end hook to run
    opening_entries: list[tuple[str, Any, bool, bool, int | None]] = []  # what its start logged

    # -- the run's callbacks ---------------------------------------------------------------
    def callbacks(self: LightningKind, training: bool, given: list[Any]) -> list[Callback]:
        given = flatten(given)
        configure = user_method(self.module, "configure_callbacks")
        if configure is not None:  # they replace the given callbacks of the same types
            configured = flatten(list(configure() or []))
            types = {type(callback) for callback in configured}
            given = [c for c in given if type(c) not in types] + configured
        lightning = [c for c in given if is_lightning_callback(c)]
        for callback in lightning:
            check_lightning_callback(callback)
        datamodule = self.trainer.datamodule
        self.lightning_callbacks = lightning
        self.calls = HookCalls(self.module, self.view, lightning, datamodule)
        if training:
            self.require_training_step()
            warn_uncalled(self.module, lightning, datamodule)
        ours = [c for c in given if not is_lightning_callback(c)]
        return [ModuleHooks(self, training), *ours]

    def run_hook(
        self: LightningKind, name: str, logs: bool = True, **kwargs: Any
    ) -> list[tuple[str, Any, bool, bool, int | None]]:
        """Call hook ``name`` (the Lightning callbacks', then the module's); what it logs.
        ``logs=False``: a hook where Lightning does not allow ``self.log``."""
        hook = getattr(self.calls, name)
        if hook is None:
            return []
        log = StepLog(on_step=False, on_epoch=True) if logs else ForbiddenLog(name)
        token = ACTIVE_LOG.set(log)
        try:
            hook(**kwargs)
        finally:
            ACTIVE_LOG.reset(token)
        return log.entries

    # -- entering and leaving a stage ------------------------------------------------------
    def enter_stage(self: LightningKind, stage: str) -> None:
        """``prepare_data``, ``setup(stage)`` and ``configure_model``, as Lightning calls
        them when ``stage`` starts; new layers go to the device (and into DDP)."""
        module, trainer = self.module, self.trainer
        before = [id(p) for p in module.parameters()]
        if trainer._data_source is module:  # its prepare_data and setup ran with its loaders
            for callback in self.lightning_callbacks:
                hook = user_method(callback, "setup")
                if hook is not None:
                    hook(self.view, module, stage=stage)
        else:
            prepare = user_method(module, "prepare_data")
            if prepare is not None:
                prepare_data(prepare)
            self.run_hook("setup", logs=False, stage=stage)
        self.run_hook("configure_sharded_model", logs=False)
        self.run_hook("configure_model", logs=False)
        if [id(p) for p in module.parameters()] != before:
            self._place_new_layers()

    def _place_new_layers(self: LightningKind) -> None:
        """Layers built by ``setup``/``configure_model`` go to the device, and under torchrun
        into a new DDP wrapper (FSDP2 sharded the module before they existed)."""
        trainer, module = self.trainer, self.module
        module.to(trainer.device)
        if not distributed.is_active():
            return
        if is_sharded(module):
            raise ValueError(
                f"{type(module).__name__} builds layers in setup/configure_model, after "
                "strategy='fsdp' sharded the module when the Trainer was built: build them "
                "in __init__ under FSDP2 (or use strategy='ddp')."
            )
        if isinstance(trainer._module, DistributedDataParallel) or trainer._strategy in (
            "auto",
            "ddp",
        ):
            ids = [trainer.device.index] if trainer.device.type == "cuda" else None
            trainer._module = DistributedDataParallel(
                self.distributed_module(module), device_ids=ids
            )
            self.prepare_ddp(trainer._module)

    def prepare_ddp(self: LightningKind, wrapper: torch.nn.Module) -> None:
        """What the kind sets on the DDP wrapper it trains through (nothing here)."""

    def exit_stage(self: LightningKind, stage: str) -> None:
        """The data module's ``teardown(stage)``, then the callbacks' and the module's."""
        datamodule = self.trainer.datamodule
        teardown = None if datamodule is None else user_method(datamodule, "teardown")
        if teardown is not None:
            teardown(stage=stage)
        self.run_hook("teardown", logs=False, stage=stage)

    def begin_fit(
        self: LightningKind, params: Mapping[str, Any]
    ) -> list[tuple[str, Any, bool, bool, int | None]]:
        """Enter `fit` (see `enter_stage`), then ``on_fit_start`` and ``on_train_start``;
        what ``on_train_start`` logged."""
        view = self.view
        view.stage = "train"
        view.max_epochs = params.get("epochs")
        steps = params.get("steps")
        view.num_training_batches = math.inf if steps is None else steps
        view.epochs_completed = None
        self.enter_stage("fit")
        if self.configures_optimizer:
            self.configure_optimizers()
        self.run_hook("on_fit_start", logs=False)
        return self.run_hook("on_train_start")

    def end_fit(self: LightningKind) -> None:
        trainer, view = self.trainer, self.view
        view.epochs_completed = trainer.current_epoch + bool(trainer.history.epoch)
        self.run_hook("on_train_end", logs=False)
        self.run_hook("on_fit_end", logs=False)
        self.exit_stage("fit")
        view.stage = None

    # -- evaluation runs -------------------------------------------------------------------
    @contextlib.contextmanager
    def evaluation_mode(
        self: LightningKind, module: torch.nn.Module, stage: str, run: bool = False
    ) -> Iterator[None]:
        if not run:  # one batch (test_on_batch, predict_on_batch): the mode alone
            with super().evaluation_mode(module, stage):  # type: ignore[misc]
                yield
            return
        if self.view.stage == "train":  # fit's validation: fit reports its exceptions
            with self._stage_run(module, stage, in_fit=True):
                yield
            return
        try:
            with self._stage_run(module, stage, in_fit=False):
                yield
        except BaseException as error:  # from any hook of the run, as in Lightning
            self.on_exception(error)
            raise

    @contextlib.contextmanager
    def _stage_run(
        self: LightningKind, module: torch.nn.Module, stage: str, in_fit: bool
    ) -> Iterator[None]:
        """A validation, test or predict run: its stage, hooks and the module's modes."""
        view = self.view
        name = self.test_stage if stage == "test" else _EVALUATION[stage]
        lightning_stage = "validate" if name == "validation" else name
        if not in_fit:
            self.enter_stage(lightning_stage)
        calls, previous = self.calls, view.stage
        view.stage = lightning_stage
        self.batch_hooks = (
            getattr(calls, f"on_{name}_batch_start"),
            getattr(calls, f"on_{name}_batch_end"),
        )
        if in_fit:
            self.run_hook("on_validation_model_zero_grad", logs=False)
        modes = [(m, m.training) for m in module.modules()]
        restore = True
        try:
            if getattr(calls, f"on_{name}_model_eval") is not None:
                self.run_hook(f"on_{name}_model_eval", logs=False)
            else:
                module.eval()
            logs = name != "predict"  # Lightning's predict logs nothing
            self.opening_entries = self.run_hook(f"on_{name}_start", logs)
            self.opening_entries += self.run_hook(f"on_{name}_epoch_start", logs)
            self.pending_epoch_end = f"on_{name}_epoch_end"
            yield
            if not logs:  # (evaluation's epoch end ran when its logs were read)
                self.run_hook("on_predict_epoch_end", logs=False)
            self.run_hook(f"on_{name}_end", logs=False)
            if getattr(calls, f"on_{name}_model_train", None) is not None:
                restore = False
                self.run_hook(f"on_{name}_model_train", logs=False)
        finally:
            if restore:
                for submodule, training in modes:
                    submodule.train(training)
            self.batch_hooks = (None, None)
            self.pending_epoch_end = None
            self.opening_entries = []
            view.stage = previous
        if not in_fit:
            self.exit_stage(lightning_stage)

    def evaluation_epoch_end(
        self: LightningKind, current: Callable[[], dict[str, Any]]
    ) -> list[tuple[str, Any, bool, bool, int | None]]:
        """What the evaluation's start hooks and its epoch-end hook logged (read when the
        evaluation's logs are, ``current()`` giving them so far). When a hook reads them,
        ``callback_metrics`` holds this evaluation's values in its epoch-end and end hooks,
        as in Lightning (where they are read as they are logged)."""
        name, self.pending_epoch_end = self.pending_epoch_end, None
        opening, self.opening_entries = self.opening_entries, []
        if name is None:
            return opening
        calls, metrics = self.calls, self.view.callback_metrics
        end = name.replace("_epoch_end", "_end")
        reads = getattr(calls, name) is not None or getattr(calls, end) is not None
        if reads:
            metrics.update(as_tensors(current()))
        entries = opening + self.run_hook(name)
        if reads:  # what the epoch-end hook logged, for the end hook
            metrics.update(as_tensors({n: _read(value) for n, value, *_ in entries}))
        return entries

    def on_exception(self: LightningKind, error: BaseException) -> None:
        """The Lightning callbacks' and the data module's ``on_exception``, as Lightning calls
        them when a run fails."""
        for callback in self.lightning_callbacks:
            hook = user_method(callback, "on_exception")
            if hook is not None:
                hook(self.view, self.module, error)
        datamodule = self.trainer.datamodule
        hook = None if datamodule is None else user_method(datamodule, "on_exception")
        if hook is not None:
            hook(error)

    # -- full checkpoints ------------------------------------------------------------------
    def on_save_checkpoint(self: LightningKind, checkpoint: dict[str, Any]) -> None:
        datamodule = self.trainer.datamodule
        if datamodule is not None and user_method(datamodule, "state_dict") is not None:
            checkpoint[type(datamodule).__qualname__] = datamodule.state_dict()
        self.run_hook("on_save_checkpoint", logs=False, checkpoint=checkpoint)

    def on_load_checkpoint(self: LightningKind, checkpoint: Mapping[str, Any]) -> None:
        """The module's ``on_load_checkpoint`` (before its weights load, as in Lightning),
        the callbacks' and the data module's state."""
        token = ACTIVE_LOG.set(ForbiddenLog("on_load_checkpoint"))
        try:
            hook = user_method(self.module, "on_load_checkpoint")
            if hook is not None:
                hook(checkpoint)
            for callback in self.lightning_callbacks:
                hook = user_method(callback, "on_load_checkpoint")
                if hook is not None:
                    hook(self.view, self.module, checkpoint)
        finally:
            ACTIVE_LOG.reset(token)
        datamodule = self.trainer.datamodule
        key = None if datamodule is None else type(datamodule).__qualname__
        if key is not None and key in checkpoint and user_method(datamodule, "load_state_dict"):
            datamodule.load_state_dict(checkpoint[key])


def _read(value: Any) -> Any:
    """A logged value as ``callback_metrics`` holds it (a metric object: its ``compute()``)."""
    if isinstance(value, torch.Tensor):
        return value.detach()
    return value if isinstance(value, float) else value.compute()
