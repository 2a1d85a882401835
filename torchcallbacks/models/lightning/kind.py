"""The kind of model for modules that define ``training_step``: Lightning style."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch.nn.parallel import DistributedDataParallel

from torchcallbacks.callbacks.base import Callback
from torchcallbacks.callbacks.learning_rate_scheduler import LearningRateScheduler
from torchcallbacks.models.lightning.ddp import TrainingStepForward, step_methods
from torchcallbacks.models.lightning.hooks import ModuleHooks
from torchcallbacks.models.lightning.optimizers import configure_optimizers
from torchcallbacks.models.lightning.self_log import ACTIVE_LOG, RoutedLog, StepLog
from torchcallbacks.models.lightning.tracker import LoggedTracker
from torchcallbacks.models.lightning.trainer_view import LightningTrainerView
from torchcallbacks.models.plain import PlainKind
from torchcallbacks.overrides import is_lightning_module, user_method

if TYPE_CHECKING:
    from torchcallbacks.trainer import Trainer


class LightningKind(PlainKind):
    """The kind of model for modules that define ``training_step``.

    Chosen by ``Trainer(model)`` when ``model`` defines ``training_step`` and no ``loss`` is
    given. ``training_step(batch, batch_idx)`` returns the loss (or a dict with ``"loss"``);
    `fit` validates with ``validation_step``, `evaluate` uses ``test_step`` (else
    ``validation_step``), `predict` uses ``predict_step`` (else the module's forward).
    Batches are passed as the data yields them (in-memory inputs given without targets: the
    inputs alone). Validation keys are the logged names.
    """

    takes_weights = False  # the module computes its loss in training_step

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
            module.log = RoutedLog(module, "log")
            module.log_dict = RoutedLog(module, "log_dict")
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
        hooks = ModuleHooks(self, training)
        return [hooks, *self.schedulers] if training else [hooks]

    def run_hook(self, name: str) -> list[tuple[str, Any, bool, bool, int | None]]:
        """Call the module's hook ``name`` when the user defines it; what it logs."""
        hook = user_method(self.module, name)
        if hook is None:
            return []
        log = StepLog(on_step=False, on_epoch=True)
        token = ACTIVE_LOG.set(log)
        try:
            hook()
        finally:
            ACTIVE_LOG.reset(token)
        return log.entries

    def _evaluation_epoch_end(self) -> list[tuple[str, Any, bool, bool, int | None]]:
        """What the evaluation's start hooks and its epoch-end hook logged."""
        name, self.pending_epoch_end = self.pending_epoch_end, None
        opening, self.opening_entries = self.opening_entries, []
        return opening + ([] if name is None else self.run_hook(name))

    def validation_logs(self, logs: Mapping[str, Any]) -> dict[str, Any]:
        return dict(logs)

    def _call(self, step: Callable[..., Any], log: StepLog | None, *args: Any) -> Any:
        token = ACTIVE_LOG.set(log)
        try:
            dtype = self.trainer._autocast_dtype
            if dtype is None:
                return step(*args)
            with torch.autocast(self.trainer.device.type, dtype=dtype):
                return step(*args)
        finally:
            ACTIVE_LOG.reset(token)

    def training_loss(self, batch: Any, batch_index: int) -> tuple[torch.Tensor, list, int]:
        trainer = self.trainer
        if trainer.example_batch_inputs is None:
            trainer.example_batch_inputs = self._example_inputs(batch)
        batch = _as_given(batch)
        log = StepLog(on_step=True, on_epoch=False)
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
        log = StepLog(on_step=False, on_epoch=True)
        batch = _as_given(batch)
        self._call(step, log, batch, batch_index)
        return log.entries, _batch_size_of(batch)

    def predict_batch(self, batch: Any, batch_index: int) -> Any:
        if self.predict_step is None:
            return super().predict_batch(batch, batch_index)
        return self._call(self.predict_step, None, _as_given(batch), batch_index)


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
