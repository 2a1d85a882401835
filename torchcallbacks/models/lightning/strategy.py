"""``self.trainer.strategy`` and ``self.trainer.precision_plugin``: Lightning's backward
pass and optimizer step, with the module's hooks around them.

A LightningModule's own methods reach the trainer through these two objects (its
``manual_backward``, ``optimizers()``, ``clip_gradients``, ``LightningOptimizer.step``), and
the kinds of model use them for the same steps, so both paths call the same hooks in
Lightning's order:

- `Strategy.backward`: the loss scaled under 16-bit AMP, ``on_before_backward(loss)``, the
  module's ``backward(loss)`` (``loss.backward()`` unless overridden), under manual
  optimization with several processes the gradients averaged over them, then
  ``on_after_backward()``;
- `Strategy.optimizer_step`: the closure (training step and backward pass), AMP's
  unscaling, ``on_before_optimizer_step(optimizer)``, gradient clipping
  (``configure_gradient_clipping``, automatic optimization only), the step (skipped by the
  scaler on inf/NaN gradients), the moving average of the weights.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from torchcallbacks.distributed import process_group as distributed

if TYPE_CHECKING:
    from collections.abc import Callable

    from torchcallbacks.models.lightning.kind import LightningKind


def _nothing() -> None:
    return None


class Precision:
    """Lightning's precision plugin, as far as a module reaches it: ``clip_gradients`` and
    the 16-bit AMP ``scaler``."""

    def __init__(self, kind: LightningKind) -> None:
        self.kind = kind

    @property
    def scaler(self) -> torch.amp.GradScaler | None:
        return self.kind.trainer.scaler

    def clip_gradients(
        self,
        optimizer: torch.optim.Optimizer,
        clip_val: float = 0.0,
        gradient_clip_algorithm: str = "norm",
    ) -> None:
        """Clip the gradients of ``optimizer``'s parameters by norm or by value."""
        if not clip_val or clip_val <= 0:
            return
        parameters = [p for group in optimizer.param_groups for p in group["params"]]
        if gradient_clip_algorithm == "value":
            torch.nn.utils.clip_grad_value_(parameters, clip_val)
        else:
            torch.nn.utils.clip_grad_norm_(parameters, clip_val)


class Strategy:
    """Lightning's strategy, as far as a module reaches it (see the module docstring)."""

    def __init__(self, kind: LightningKind) -> None:
        self.kind = kind
        self.precision_plugin = Precision(kind)

    @property
    def _lightning_optimizers(self) -> list[Any]:
        return self.kind.lightning_optimizers

    @property
    def lightning_module(self) -> torch.nn.Module:
        return self.kind.module

    @property
    def model(self) -> torch.nn.Module:
        return self.kind.trainer._module

    @property
    def root_device(self) -> torch.device:
        return self.kind.trainer.device

    @property
    def world_size(self) -> int:
        return distributed.world_size()

    @property
    def global_rank(self) -> int:
        return distributed.rank()

    @property
    def is_global_zero(self) -> bool:
        return distributed.rank() == 0

    def barrier(self, name: str | None = None) -> None:
        if distributed.is_active():
            torch.distributed.barrier()

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        if not distributed.is_active():
            return obj
        holder = [obj]
        torch.distributed.broadcast_object_list(holder, src=src)
        return holder[0]

    def all_gather(self, tensor: torch.Tensor, group: Any = None, sync_grads: bool = False) -> Any:
        """Every rank's ``tensor`` stacked along a new first dimension (the tensor itself in
        one process), as Lightning's ``self.all_gather``."""
        if not distributed.is_active():
            return tensor
        parts = [torch.empty_like(tensor) for _ in range(distributed.world_size())]
        torch.distributed.all_gather(parts, tensor.contiguous(), group=group)
        return torch.stack(parts)

    def reduce(self, tensor: Any, group: Any = None, reduce_op: str | None = "mean") -> Any:
        if not distributed.is_active() or not isinstance(tensor, torch.Tensor):
            return tensor
        total = distributed.all_reduce_sum(tensor)
        mean = reduce_op in (None, "mean", "avg")
        return total / distributed.world_size() if mean else total

    # -- the backward pass and the optimizer step --------------------------------------------
    def backward(
        self,
        loss: torch.Tensor,
        optimizer: torch.optim.Optimizer | None,
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        kind = self.kind
        calls = kind.calls
        scaler = kind.trainer.scaler
        if scaler is not None:
            loss = scaler.scale(loss)
        if calls.on_before_backward is not None:
            calls.on_before_backward(loss)
        if calls.backward is not None:
            calls.backward(loss, *args, **kwargs)
        else:
            loss.backward(*args, **kwargs)
        if kind.averages_gradients:  # several backward passes a step: DDP's reducer cannot
            distributed.average_gradients(kind.module.parameters())
        if calls.on_after_backward is not None:
            calls.on_after_backward()
        return loss.detach()

    def optimizer_step(
        self,
        optimizer: torch.optim.Optimizer,
        closure: Callable[[], Any] | None = None,
        model: Any = None,
        **kwargs: Any,
    ) -> Any:
        kind = self.kind
        trainer = kind.trainer
        closure = closure or _nothing
        ema = trainer.ema
        if ema is not None:
            ema.watch(optimizer)  # steps the scaler skips are not averaged in
        scaler = trainer.scaler
        if scaler is None:

            def wrapped() -> Any:
                result = closure()
                self._after_closure(optimizer)
                return result

            output = optimizer.step(closure=wrapped, **kwargs)
        else:
            output = closure()
            skipped = output is None and kind.automatic  # training_step returned None
            if not skipped:
                scaler.unscale_(optimizer)
            self._after_closure(optimizer)
            if not skipped:
                output = scaler.step(optimizer, **kwargs)
                scaler.update()
        if not kind.automatic and kind.in_training_step:
            trainer.global_step += 1  # as Lightning counts manual steps
        if ema is not None:
            ema.update()
        return output

    def _after_closure(self, optimizer: torch.optim.Optimizer) -> None:
        kind = self.kind
        calls = kind.calls
        if calls.on_before_optimizer_step is not None:
            calls.on_before_optimizer_step(optimizer)
        if kind.automatic:
            view = kind.view
            if calls.configure_gradient_clipping is not None:
                calls.configure_gradient_clipping(
                    optimizer,
                    gradient_clip_val=view.gradient_clip_val,
                    gradient_clip_algorithm=view.gradient_clip_algorithm,
                )
            else:
                kind.clip_gradients(optimizer)
