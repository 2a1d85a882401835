"""The kind of model for modules that define ``training_step``: Lightning style."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch.nn.parallel import DistributedDataParallel

from torchcallbacks.models.lightning.automatic import AutomaticSteps
from torchcallbacks.models.lightning.batches import as_given, batch_size_of, is_pair
from torchcallbacks.models.lightning.calls import HookCalls
from torchcallbacks.models.lightning.ddp import TrainingStepForward, step_methods
from torchcallbacks.models.lightning.optimizers import (
    LightningOptimizer,
    SchedulerConfig,
    configure_optimizers,
)
from torchcallbacks.models.lightning.self_log import ACTIVE_LOG, ForbiddenLog, RoutedLog, StepLog
from torchcallbacks.models.lightning.stages import Stages
from torchcallbacks.models.lightning.strategy import Strategy
from torchcallbacks.models.lightning.tracker import LoggedTracker
from torchcallbacks.models.lightning.trainer_view import FitNotStarted, LightningTrainerView
from torchcallbacks.models.plain import PlainKind
from torchcallbacks.overrides import is_lightning_module, user_method

if TYPE_CHECKING:
    from torchcallbacks.trainer import Trainer

# A module that builds layers in these hooks gets its optimizers once they have run.
_BUILDING_HOOKS = ("setup", "configure_model", "configure_sharded_model")


class LightningKind(Stages, AutomaticSteps, PlainKind):
    """The kind of model for modules that define ``training_step`` (automatic optimization).

    Chosen by ``Trainer(model)`` when ``model`` defines ``training_step`` and no ``loss`` is
    given. ``training_step(batch, batch_idx)`` returns the loss (or a dict with ``"loss"``,
    or None to skip the batch); `fit` validates with ``validation_step``, `evaluate` uses
    ``test_step`` (else ``validation_step``), `predict` uses ``predict_step`` (else the
    module's forward). Batches are passed as the data yields them (in-memory inputs given
    without targets: the inputs alone). Validation keys are the logged names. Every hook
    Lightning calls is called, in Lightning's order (see `Stages` and `AutomaticSteps`).
    """

    takes_weights = False  # the module computes its loss in training_step
    automatic = True
    averages_gradients = False  # manual optimization under torchrun: see `Strategy.backward`
    in_training_step = False

    @classmethod
    def distributed_module(cls, module: torch.nn.Module) -> torch.nn.Module:
        return TrainingStepForward(module)

    @classmethod
    def sharded_methods(cls, module: torch.nn.Module) -> list[str]:
        return step_methods(module)

    def __init__(self, trainer: Trainer) -> None:
        super().__init__(trainer)
        module = trainer.model
        owner = type(module).__name__
        if trainer.objective.metric_spec:
            raise ValueError(
                f"metrics= is used with loss=; {owner} defines training_step, so log its metrics "
                "with self.log(...) in training_step/validation_step instead."
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
        legacy = user_method(module, "configure_sharded_model")
        if legacy is not None and user_method(module, "configure_model") is not None:
            raise ValueError(
                f"{owner} overrides both configure_model and configure_sharded_model; the "
                "latter is deprecated: move its code into configure_model (as Lightning asks)."
            )
        self.module = module
        self.view = LightningTrainerView(trainer, self)
        self.strategy = Strategy(self)
        self.calls = HookCalls(module, self.view)
        self.lightning_callbacks: list[Any] = []
        self.check_options()
        if is_lightning_module(module):
            module.log = RoutedLog(module, "log")
            module.log_dict = RoutedLog(module, "log_dict")
            module.trainer = self.view  # before configure_optimizers, which may read it
        self.optimizers: list[torch.optim.Optimizer] = []
        self.lightning_optimizers: list[LightningOptimizer] = []
        self.scheduler_configs: list[SchedulerConfig] = []
        self.configures_optimizer = False  # True: configure_optimizers runs when fit starts
        if trainer.optimizer is not None:
            if user_method(module, "configure_optimizers") is not None:
                warnings.warn(
                    f"{owner}.configure_optimizers is not called: the optimizer given to "
                    "Trainer takes its place, and the schedulers it returns are not used. "
                    "Leave optimizer= out to train with what configure_optimizers returns.",
                    stacklevel=3,
                )
            self.use_optimizers([trainer.optimizer], [])
        elif user_method(module, "configure_optimizers") is not None:
            self.configures_optimizer = True
            if not any(user_method(module, name) for name in _BUILDING_HOOKS):
                try:
                    with self.view.before_fit():
                        self.configure_optimizers()
                except FitNotStarted:  # it reads the run's length: fit will call it
                    pass
        self.validation_step = user_method(module, "validation_step")
        self.test_step = user_method(module, "test_step")
        # evaluate runs test_step with the test hooks, else validation_step with the
        # validation hooks (Lightning's trainer.test / trainer.validate)
        self.test_stage = "test" if self.test_step is not None else "validation"
        self.test_step = self.test_step or self.validation_step
        self.predict_step = user_method(module, "predict_step")
        self._forward_takes_one_input = _takes_one_input(module)

    def check_options(self) -> None:
        """Refuse Trainer options this kind cannot honour, naming the fix."""
        trainer = self.trainer
        clips = trainer.gradient_clip_norm is not None and trainer.gradient_clip_value is not None
        if clips and user_method(self.module, "configure_gradient_clipping") is not None:
            raise ValueError(
                f"{type(self.module).__name__} overrides configure_gradient_clipping, which gets "
                "one gradient_clip_val and algorithm as in Lightning: pass gradient_clip_norm or "
                "gradient_clip_value to the Trainer, not both."
            )

    def tracker(self) -> LoggedTracker:
        return LoggedTracker(self.trainer.device, epoch_end=self.evaluation_epoch_end)

    # -- optimizers ------------------------------------------------------------------------
    def configure_optimizers(self) -> None:
        """Call the module's ``configure_optimizers`` and take what it returns."""
        self.use_optimizers(*configure_optimizers(self.module, self.automatic))
        self.configures_optimizer = False

    def use_optimizers(
        self, optimizers: list[torch.optim.Optimizer], configs: list[SchedulerConfig]
    ) -> None:
        self.trainer.optimizer = optimizers[0]
        self.optimizers = optimizers
        self.scheduler_configs = configs
        step = self.strategy.optimizer_step
        self.lightning_optimizers = [LightningOptimizer(o, step, self.module) for o in optimizers]

    def all_optimizers(self) -> list[torch.optim.Optimizer]:
        return list(self.optimizers)

    def require_training_step(self) -> None:
        """A module with evaluation or prediction steps alone cannot be fitted."""
        if user_method(self.module, "training_step") is None:
            raise ValueError(
                f"{type(self.module).__name__} defines no training_step(batch, batch_idx), "
                "which fit runs (as Lightning's does): define it and return the loss, or use "
                "this module with evaluate, validate, test and predict only."
            )

    def missing_optimizer(self, action: str) -> None:
        if action == "fit":
            self.require_training_step()
        if action == "fit" and self.configures_optimizer:
            return  # configure_optimizers runs when fit starts
        if self.configures_optimizer:
            raise ValueError(
                f"Cannot {action} before fit: {type(self.module).__name__}.configure_optimizers "
                "runs when fit starts (after setup and configure_model, or because it reads "
                "the run's length, such as self.trainer.estimated_stepping_batches)."
            )
        super().missing_optimizer(action)

    # -- the step methods ------------------------------------------------------------------
    def _autocast(self, step: Callable[..., Any], *args: Any) -> Any:
        dtype = self.trainer._autocast_dtype
        if dtype is None:
            return step(*args)
        with torch.autocast(self.trainer.device.type, dtype=dtype):
            return step(*args)

    def training_step(self, batch: Any, batch_index: int) -> Any:
        """The module's ``training_step``: under torchrun through DDP around
        `TrainingStepForward` (its reducer synchronises the step's gradients); eager as in one
        process, where `compile` leaves the steps alone."""
        running = self.trainer._module
        running = getattr(running, "_orig_mod", running)
        step = (
            running if isinstance(running, DistributedDataParallel) else self.module.training_step
        )
        return self._autocast(step, batch, batch_index)

    def _example_inputs(self, batch: Any) -> Any:
        """What `Trainer.summary` and TensorBoard's graph run the forward on: Lightning's
        ``example_input_array``, else a pair's inputs when the forward takes one input."""
        example = getattr(self.module, "example_input_array", None)
        if example is None and is_pair(batch) and self._forward_takes_one_input:
            return batch[0]
        return example

    def transfer(self, batch: Any) -> Any:
        """The batch through the batch-transfer hooks (the data module's, else the module's):
        the data layer has put it on the device already."""
        calls = self.calls
        if calls.on_before_batch_transfer is not None:
            batch = calls.on_before_batch_transfer(batch, 0)
        if calls.transfer_batch_to_device is not None:
            batch = calls.transfer_batch_to_device(batch, self.trainer.device, 0)
        if calls.on_after_batch_transfer is not None:
            batch = calls.on_after_batch_transfer(batch, 0)
        return batch

    # -- evaluation and prediction ---------------------------------------------------------
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

    def validation_logs(self, logs: Mapping[str, Any]) -> dict[str, Any]:
        return dict(logs)

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
        log = StepLog(on_step=False, on_epoch=True)
        token = ACTIVE_LOG.set(log)
        try:
            batch = self.transfer(as_given(batch))
            start, end = self.batch_hooks
            if start is not None:
                start(batch, batch_index)
            output = self._autocast(step, batch, batch_index)
            if end is not None:
                end(output, batch, batch_index)
        finally:
            ACTIVE_LOG.reset(token)
        return log.entries, batch_size_of(batch)

    def predict_batch(self, batch: Any, batch_index: int) -> Any:
        token = ACTIVE_LOG.set(ForbiddenLog("predict_step and the predict hooks"))
        try:
            batch = self.transfer(as_given(batch))
            start, end = self.batch_hooks
            if start is not None:
                start(batch, batch_index)
            if self.predict_step is None:
                output = super().predict_batch(batch, batch_index)
            else:
                output = self._autocast(self.predict_step, batch, batch_index)
            if end is not None:
                end(output, batch, batch_index)
        finally:
            ACTIVE_LOG.reset(token)
        return output


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
