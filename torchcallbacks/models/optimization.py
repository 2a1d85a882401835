"""Automatic optimization: the loop's backward pass and optimizer step for the kinds of model
that only say what a batch's loss is.

`AutomaticOptimization.train_batch` zeroes the gradients, runs the subclass's
`AutomaticOptimization.training_loss`, backpropagates it (scaled under 16-bit AMP, divided
over ``accumulate_grad_batches``) and steps the optimizer every ``accumulate_grad_batches``
batches and at the epoch's end, clipping the gradients first and updating the moving average
of the weights after. Under DDP or FSDP2 the gradients are synchronised only for the batches
that end with a step.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from torchcallbacks.distributed import process_group as distributed
from torchcallbacks.models.base import ModelKind


class AutomaticOptimization(ModelKind):
    """A `ModelKind` whose loss the loop backpropagates and steps (see the module docstring);
    subclasses give `training_loss`."""

    pending = False  # gradients accumulated since the last optimizer step
    last_batch: int | None = None
    several_processes = False

    def training_loss(self, batch: Any, batch_index: int) -> tuple[torch.Tensor, Any, int]:
        """The loss to backpropagate, the values for the tracker and the batch size."""
        raise NotImplementedError

    def begin_epoch(self, last_batch: int | None, pending: bool) -> None:
        self.last_batch = last_batch
        self.pending = pending
        self.several_processes = distributed.is_active()

    def train_batch(self, batch: Any, batch_index: int) -> tuple[Any, int]:
        trainer = self.trainer
        if not self.pending:
            trainer.optimizer.zero_grad(set_to_none=True)  # type: ignore[union-attr]
        boundary = (batch_index + 1) % trainer.accumulate_grad_batches == 0
        # The epoch's last batch synchronises too: `end_epoch` steps on it.
        if self.several_processes and not boundary and batch_index + 1 != self.last_batch:
            with distributed.no_gradient_sync(trainer._module):  # synchronised at the step
                values, size = self.forward_backward(batch, batch_index)
        else:
            values, size = self.forward_backward(batch, batch_index)
        self.pending = not boundary
        if boundary:
            self.optimizer_step()
        return values, size

    def end_epoch(self) -> None:
        if self.pending:
            self.optimizer_step()
            self.pending = False

    def train_single_batch(self, batch: Any) -> tuple[Any, int]:
        self.trainer.optimizer.zero_grad(set_to_none=True)  # type: ignore[union-attr]
        values, size = self.forward_backward(batch, 0, accumulate=1)
        self.optimizer_step()
        return values, size

    def forward_backward(
        self, batch: Any, batch_index: int, accumulate: int | None = None
    ) -> tuple[Any, int]:
        trainer = self.trainer
        if trainer._eager_module is not None:
            return self._first_compiled_step(batch, batch_index, accumulate)
        loss, values, size = self.training_loss(batch, batch_index)
        accumulate = trainer.accumulate_grad_batches if accumulate is None else accumulate
        if accumulate > 1:
            loss = loss / accumulate
        if trainer.scaler is not None:
            trainer.scaler.scale(loss).backward()
        else:
            loss.backward()
        return values, size

    def optimizer_step(self) -> None:
        trainer = self.trainer
        optimizer = trainer.optimizer
        scaler = trainer.scaler
        if trainer.ema is not None:
            trainer.ema.watch(optimizer)  # steps the scaler skips are not averaged in
        if trainer.gradient_clip_norm is not None or trainer.gradient_clip_value is not None:
            if scaler is not None:
                scaler.unscale_(optimizer)
            parameters = [p for g in optimizer.param_groups for p in g["params"]]
            if trainer.gradient_clip_value is not None:
                torch.nn.utils.clip_grad_value_(parameters, trainer.gradient_clip_value)
            if trainer.gradient_clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(parameters, trainer.gradient_clip_norm)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        trainer.global_step += 1
        if trainer.ema is not None:
            trainer.ema.update()

    def _first_compiled_step(
        self, batch: Any, batch_index: int, accumulate: int | None
    ) -> tuple[Any, int]:
        """Compilers fail at the first call (no C++ compiler, unsupported ops): fall back."""
        trainer = self.trainer
        eager, trainer._eager_module = trainer._eager_module, None
        try:
            return self.forward_backward(batch, batch_index, accumulate)
        except Exception as error:
            warnings.warn(
                f"torch.compile failed on the first batch ({type(error).__name__}: "
                f"{str(error).splitlines()[0] if str(error) else ''}); training without it.",
                stacklevel=2,
            )
            trainer._module = eager
            trainer.optimizer.zero_grad(set_to_none=True)
            return self.forward_backward(batch, batch_index, accumulate)
