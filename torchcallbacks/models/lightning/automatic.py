"""Lightning's automatic optimization of one batch, with every hook in Lightning's order.

For each training batch::

    on_before_batch_transfer, transfer_batch_to_device, on_after_batch_transfer
    on_train_batch_start                      (returning -1 ends the epoch)
    optimizer_step(epoch, batch_idx, optimizer, closure)   (at an accumulation boundary)
        closure: training_step, [on_before_zero_grad, optimizer_zero_grad],
                 on_before_backward, backward, on_after_backward
        on_before_optimizer_step, configure_gradient_clipping, the step
    lr_scheduler_step                         (schedulers due after this batch)
    on_train_batch_end(outputs, batch, batch_idx)

Between boundaries the closure runs alone (under DDP's ``no_sync``). The gradients are
zeroed in the closure of the first batch of each accumulation window; the epoch's last
batch always steps. Schedulers with ``interval="step"`` step when ``(batch_idx + 1) %
frequency == 0`` after an optimizer step, those with ``interval="epoch"`` (but
``ReduceLROnPlateau``) after the epoch's last batch, as Lightning does.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from torchcallbacks.distributed import process_group as distributed
from torchcallbacks.models.lightning.batches import as_given, batch_size_of, loss_of
from torchcallbacks.models.lightning.optimizers import SchedulerConfig
from torchcallbacks.models.lightning.self_log import ACTIVE_LOG, StepLog

if TYPE_CHECKING:
    from torchcallbacks.models.lightning.kind import LightningKind


class Closure:
    """Lightning's closure: ``training_step``, the gradients zeroed at the start of an
    accumulation window, and the backward pass of the loss (divided over the window)."""

    __slots__ = ("kind", "batch", "batch_index", "zero_grad", "ran", "loss", "outputs")

    def __init__(self, kind: LightningKind, batch: Any, batch_index: int, zero_grad: bool) -> None:
        self.kind = kind
        self.batch = batch
        self.batch_index = batch_index
        self.zero_grad = zero_grad
        self.ran = False
        self.loss: torch.Tensor | None = None  # the step's loss, for the epoch's "loss"
        self.outputs: dict[str, Any] = {}  # what on_train_batch_end receives

    def __call__(self) -> torch.Tensor | None:
        kind = self.kind
        output = kind.training_step(self.batch, self.batch_index)
        loss = loss_of(output, type(kind.module).__name__)
        self.ran = True
        if loss is None:
            kind.skipped_batch()
        accumulate = kind.trainer.accumulate_grad_batches
        closure_loss = loss / accumulate if loss is not None and accumulate > 1 else loss
        if closure_loss is not None:
            self.loss = loss.detach()
            extra = {}
            if isinstance(output, Mapping):
                extra = {k: v for k, v in output.items() if k not in ("loss", "hiddens")}
            self.outputs = {"loss": closure_loss.detach(), **extra}
        if self.zero_grad:
            kind.zero_grad(self.batch_index)
        if closure_loss is None:
            return None
        kind.strategy.backward(closure_loss, kind.optimizers[0])
        return closure_loss.detach()


class AutomaticSteps:
    """The training batches of `LightningKind` (see the module docstring)."""

    epoch_lr: float | None = None  # the learning rate before the epoch-end scheduler steps
    epoch_stepped = False
    _warned_skip = False

    def begin_epoch(self: LightningKind, last_batch: int | None, pending: bool) -> None:
        super().begin_epoch(last_batch, pending)  # type: ignore[misc]
        self.epoch_lr = None
        self.epoch_stepped = False

    def train_batch(self: LightningKind, batch: Any, batch_index: int) -> tuple[Any, int] | None:
        trainer = self.trainer
        if trainer.example_batch_inputs is None:
            trainer.example_batch_inputs = self._example_inputs(batch)
        self.view.batch_index = batch_index
        log = StepLog(on_step=True, on_epoch=False)
        token = ACTIVE_LOG.set(log)
        try:
            batch = self.transfer(as_given(batch))
            start = self.calls.on_train_batch_start
            if start is not None and start(batch, batch_index) == -1:
                self.epoch_cut(batch_index)
                return None
            outputs, loss = self.run_batch(batch, batch_index)
            end = self.calls.on_train_batch_end
            if end is not None:
                self.step_metrics()
                end(outputs, batch, batch_index)
        finally:
            ACTIVE_LOG.reset(token)
        entries = log.entries
        if loss is not None and not any(entry[0] == "loss" for entry in entries):
            entries.insert(0, ("loss", loss, False, True, None))
        return entries, batch_size_of(batch)

    def run_batch(
        self: LightningKind, batch: Any, batch_index: int
    ) -> tuple[dict[str, Any], torch.Tensor | None]:
        """What ``on_train_batch_end`` receives, and the loss for the epoch's logs."""
        return self.optimize(batch, batch_index, self.trainer.accumulate_grad_batches)

    def step_metrics(self: LightningKind) -> dict[str, Any]:
        """``callback_metrics`` with the values this step logged ``on_step``, as Lightning's
        hold them during a batch."""
        metrics = self.view.callback_metrics
        log = ACTIVE_LOG.get()
        if log is not None:
            metrics.update(
                (name, torch.as_tensor(value))
                for name, value, on_step, *_ in log.entries
                if on_step and isinstance(value, torch.Tensor | float)
            )
        return metrics

    def epoch_cut(self: LightningKind, batch_index: int) -> None:
        """``on_train_batch_start`` returned -1: the schedulers due step, as in Lightning."""
        self.step_schedulers(batch_index, last=True)

    def optimize(
        self: LightningKind, batch: Any, batch_index: int, accumulate: int, schedulers: bool = True
    ) -> tuple[dict[str, Any], torch.Tensor | None]:
        """The closure, and the optimizer step and schedulers at a window's end: what
        ``on_train_batch_end`` receives and the step's loss."""
        last = self.last_batch
        boundary = (batch_index + 1) % accumulate == 0 or (
            last is not None and batch_index + 1 == last
        )
        closure = Closure(self, batch, batch_index, zero_grad=batch_index % accumulate == 0)
        if not boundary:
            if self.several_processes:  # synchronised at the step
                with distributed.no_gradient_sync(self.trainer._module):
                    closure()
            else:
                closure()
            self.pending = True
            return closure.outputs, closure.loss
        self.step(batch_index, closure)
        self.pending = False
        if schedulers:
            self.step_schedulers(batch_index, last is not None and batch_index + 1 == last)
        return closure.outputs, closure.loss

    def step(self: LightningKind, batch_index: int, closure: Any) -> None:
        """``optimizer_step`` (the module's, else Lightning's: ``optimizer.step(closure)``)."""
        trainer = self.trainer
        hook = self.calls.optimizer_step
        if hook is not None:
            epoch = trainer.current_epoch
            hook(epoch, batch_index, self.lightning_optimizers[0], closure)
        else:
            self.strategy.optimizer_step(self.optimizers[0], closure)
        if not closure.ran:
            raise ValueError(
                f"{type(self.module).__name__}.optimizer_step did not run the closure it was "
                "given (training_step and the backward pass): call "
                "optimizer.step(closure=optimizer_closure) in it, as in Lightning."
            )
        trainer.global_step += 1

    def zero_grad(self: LightningKind, batch_index: int) -> None:
        optimizer = self.optimizers[0]
        calls = self.calls
        if calls.on_before_zero_grad is not None:
            calls.on_before_zero_grad(optimizer)
        if calls.optimizer_zero_grad is not None:
            calls.optimizer_zero_grad(self.trainer.current_epoch, batch_index, optimizer)
        else:
            optimizer.zero_grad(set_to_none=True)

    def clip_gradients(self: LightningKind, optimizer: torch.optim.Optimizer) -> None:
        """The Trainer's ``gradient_clip_value`` then ``gradient_clip_norm`` (Lightning's
        ``configure_gradient_clipping`` when the module does not override it)."""
        trainer = self.trainer
        if trainer.gradient_clip_value is not None:
            self.strategy.precision_plugin.clip_gradients(
                optimizer, trainer.gradient_clip_value, "value"
            )
        if trainer.gradient_clip_norm is not None:
            self.strategy.precision_plugin.clip_gradients(
                optimizer, trainer.gradient_clip_norm, "norm"
            )

    def skipped_batch(self: LightningKind) -> None:
        """``training_step`` returned None: the batch is skipped (no backward pass)."""
        if distributed.world_size() > 1:
            raise RuntimeError(
                f"{type(self.module).__name__}.training_step returned None, which skips the "
                "batch; under several processes that is not supported (as in Lightning): the "
                "other processes would wait for its gradients. Return a loss on every rank."
            )
        if not self._warned_skip:
            self._warned_skip = True
            warnings.warn(
                f"{type(self.module).__name__}.training_step returned None: the batch is "
                "skipped, as in Lightning.",
                stacklevel=6,
            )

    def end_epoch(self: LightningKind) -> None:
        if self.pending:  # data without a length ended inside an accumulation window
            self.strategy.optimizer_step(self.optimizers[0])
            self.trainer.global_step += 1
            self.pending = False
        if self.last_batch is None and not self.trainer.stop_training:
            self.step_epoch_schedulers()

    def train_single_batch(self: LightningKind, batch: Any) -> tuple[Any, int]:
        log = StepLog(on_step=True, on_epoch=False)
        token = ACTIVE_LOG.set(log)
        try:
            self.last_batch = None
            _, loss = self.optimize(self.transfer(as_given(batch)), 0, 1, schedulers=False)
        finally:
            ACTIVE_LOG.reset(token)
        if loss is not None and not any(entry[0] == "loss" for entry in log.entries):
            log.entries.insert(0, ("loss", loss, False, True, None))
        return log.entries, batch_size_of(as_given(batch))

    # -- learning-rate schedulers ----------------------------------------------------------
    def step_schedulers(self: LightningKind, batch_index: int, last: bool) -> None:
        """After an optimizer step (or the batch that ends the epoch): the step-interval
        schedulers due, then at the epoch's last batch the epoch-interval ones."""
        for config in self.scheduler_configs:
            if config.interval == "step" and (batch_index + 1) % config.frequency == 0:
                self.scheduler_step(config)
        if last:
            self.step_epoch_schedulers()

    def step_epoch_schedulers(self: LightningKind) -> None:
        """Step the epoch-interval schedulers (but ReduceLROnPlateau) due this epoch."""
        if self.epoch_stepped:
            return
        self.epoch_stepped = True
        epoch = self.trainer.current_epoch
        due = [
            config
            for config in self.scheduler_configs
            if config.interval == "epoch"
            and not config.reduce_on_plateau
            and (epoch + 1) % config.frequency == 0
        ]
        if due:
            self.epoch_lr = self.trainer.get_lr()  # the epoch's, for its logs
        for config in due:
            self.scheduler_step(config)

    def scheduler_step(
        self: LightningKind, config: SchedulerConfig, logs: Mapping[str, Any] | None = None
    ) -> None:
        """``lr_scheduler_step(scheduler, metric)`` (the module's, else ``scheduler.step()``);
        a ReduceLROnPlateau gets its monitored value from ``logs`` (else the latest
        ``callback_metrics``, this step's values included)."""
        metric = None
        if config.reduce_on_plateau:
            logs = self.step_metrics() if logs is None else logs
            metric = logs.get(config.monitor)
            if metric is None:
                message = (
                    f"ReduceLROnPlateau conditioned on metric {config.monitor!r}, which is not "
                    f"available (available: {sorted(logs)})"
                )
                if config.strict:
                    raise ValueError(
                        message + ". Log it, or set 'strict': False in the lr_scheduler config "
                        "to skip the step when it is missing, as in Lightning."
                    )
                warnings.warn(message + ": skipping the learning-rate update.", stacklevel=4)
                return
        hook = self.calls.lr_scheduler_step
        if hook is not None:
            hook(config.scheduler, metric)
        elif metric is None:
            config.scheduler.step()
        else:
            config.scheduler.step(metric)
