"""Manual optimization: a LightningModule with ``automatic_optimization = False`` drives its
own optimizers in ``training_step`` (GANs, several optimizers, reinforcement learning).

The kind calls ``training_step`` between the batch hooks and lets the module act through
Lightning's own methods, which reach this Trainer through ``self.trainer``:
``self.optimizers()`` (`LightningOptimizer` wrappers: ``opt.step()`` calls
``on_before_optimizer_step``, steps through AMP's scaler, and counts ``global_step`` once
per step, as in Lightning), ``self.lr_schedulers()``, ``self.manual_backward(loss)`` (scaled
under 16-bit AMP, with the backward hooks), ``self.toggle_optimizer`` /
``untoggle_optimizer`` and ``self.clip_gradients``. Every optimizer's and scheduler's state
is in full checkpoints. Under torchrun (DDP) the gradients of each ``manual_backward`` are
averaged over the processes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch.nn.parallel import DistributedDataParallel

from torchcallbacks.distributed import process_group as distributed
from torchcallbacks.distributed.fsdp import is_sharded
from torchcallbacks.models.lightning.batches import as_given, batch_size_of
from torchcallbacks.models.lightning.kind import LightningKind
from torchcallbacks.overrides import is_lightning_module

if TYPE_CHECKING:
    from torchcallbacks.trainer import Trainer


class ManualLightningKind(LightningKind):
    """The kind of model for LightningModules with ``automatic_optimization = False``
    (see the module docstring)."""

    automatic = False

    def __init__(self, trainer: Trainer) -> None:
        super().__init__(trainer)
        running = trainer._module
        if isinstance(running, DistributedDataParallel):
            self.prepare_ddp(running)

    def prepare_ddp(self, wrapper: torch.nn.Module) -> None:
        """DDP's reducer follows one backward pass per forward; ``manual_backward`` may run
        several (over changing parameters): the kind averages the gradients itself."""
        wrapper.require_backward_grad_sync = False
        self.averages_gradients = True

    def check_options(self) -> None:
        trainer, module = self.trainer, self.module
        owner = type(module).__name__
        if not is_lightning_module(module):
            raise ValueError(
                f"{owner} sets automatic_optimization = False: manual optimization uses "
                "lightning.LightningModule's self.optimizers() and self.manual_backward(); "
                "subclass lightning.LightningModule, or let the Trainer optimize (automatic "
                "optimization)."
            )
        refused = {
            "accumulate_grad_batches": trainer.accumulate_grad_batches != 1,
            "gradient_clip_norm": trainer.gradient_clip_norm is not None,
            "gradient_clip_value": trainer.gradient_clip_value is not None,
            "ema_momentum": trainer.ema is not None,
        }
        for option, given in refused.items():
            if given:
                raise ValueError(
                    f"{owner} uses manual optimization (automatic_optimization = False), where "
                    f"training_step steps the optimizers: Trainer({option}=...) cannot apply, as "
                    "in Lightning. Accumulate, clip (self.clip_gradients) or average the "
                    "weights in training_step instead."
                )
        if distributed.is_active() and is_sharded(module):
            raise ValueError(
                f"{owner} uses manual optimization, which runs under DDP (strategy='ddp' or "
                "'auto'), not strategy='fsdp'."
            )

    def run_batch(self, batch: Any, batch_index: int) -> tuple[dict[str, Any], Any]:
        """``training_step`` alone: it steps the optimizers itself."""
        self.in_training_step = True
        try:
            outputs = self._outputs(self.training_step(batch, batch_index))
        finally:
            self.in_training_step = False
        loss = outputs.get("loss")
        scalar = isinstance(loss, torch.Tensor) and loss.numel() == 1
        return outputs, loss.reshape(()) if scalar else None

    def epoch_cut(self, batch_index: int) -> None:
        pass  # training_step steps the schedulers, as in Lightning

    def _outputs(self, output: Any) -> dict[str, Any]:
        """Lightning's manual outputs: the dict ``training_step`` returned, or its tensor as
        ``{"loss": ...}`` (detached)."""
        if output is None:
            return {}
        if isinstance(output, torch.Tensor):
            return {"loss": output.detach()}
        if isinstance(output, Mapping):
            outputs = dict(output)
            if isinstance(outputs.get("loss"), torch.Tensor):
                outputs["loss"] = outputs["loss"].detach()
            return outputs
        raise ValueError(
            f"{type(self.module).__name__}.training_step returned {type(output).__name__}; under "
            "manual optimization it returns a tensor, a dict, or nothing, as in Lightning."
        )

    def end_epoch(self) -> None:
        pass  # training_step steps the optimizers and schedulers itself

    def train_single_batch(self, batch: Any) -> tuple[Any, int]:
        result = self.train_batch(batch, 0)
        return result if result is not None else ([], batch_size_of(as_given(batch)))
