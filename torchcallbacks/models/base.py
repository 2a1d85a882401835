"""The seam between the loop and the model: `ModelKind`.

`Trainer` knows no kind of model by name. `torchcallbacks.models.kind_for` picks the kind for
a module, and the loop calls it once per batch: `ModelKind.train_batch` owns the forward
pass, the backward pass, the optimizer step and that kind's own hooks;
`ModelKind.eval_batch`, `ModelKind.test_batch` and `ModelKind.predict_batch` the forward
passes of validation, `evaluate` and `predict`. The rest says what the loop needs around
the batches: the epoch accumulator, the callbacks the kind runs before the user's, how
validation results are named, and the module's evaluation mode.

A new kind of model is a new subclass chosen in `kind_for`: the loop does not change, and the
layers below (data, distributed, checkpoints) never import a kind.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import torch

from torchcallbacks.utils import preserved_modes

if TYPE_CHECKING:
    from torchcallbacks.trainer import Trainer


class ModelKind:
    """How the loop runs the batches of one kind of model (see the module docstring)."""

    takes_weights = True  # sample_weight and class_weight reach the loss
    computes_own_loss = False  # fit(x) without y: the targets may sit inside x
    configures_optimizer = False  # the optimizer comes from the model when fit starts

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer

    # -- before the kind exists: how several processes run the module ----------------------
    @classmethod
    def distributed_module(cls, module: torch.nn.Module) -> torch.nn.Module:
        """What DDP wraps: a module whose forward is what a training batch runs."""
        return module

    @classmethod
    def sharded_methods(cls, module: torch.nn.Module) -> list[str]:
        """Methods besides ``forward`` that FSDP2 gathers the sharded parameters around."""
        return []

    # -- around the batches ----------------------------------------------------------------
    def tracker(self) -> Any:
        """A new epoch accumulator for the values the batch methods return: ``reset()``,
        ``update(values, size)``, ``logs(reduce=None)``, ``state_dict()``/``load_state_dict``,
        ``metric_objects()`` (the names of those whose state is not saved)."""
        raise NotImplementedError

    def callbacks(self, training: bool, given: list[Any]) -> list[Any]:
        """The callbacks of a run of `fit` (``training``), `evaluate` or `predict`: the
        kind's own first, then those ``given`` (the kind may take out those it calls
        itself)."""
        return given

    def all_optimizers(self) -> list[torch.optim.Optimizer]:
        """Every optimizer, the trainer's first (full checkpoints save each one)."""
        optimizer = self.trainer.optimizer
        return [] if optimizer is None else [optimizer]

    def missing_optimizer(self, action: str) -> None:
        """``action`` needs an optimizer and the trainer has none: raise what to do."""
        raise ValueError(
            f"Cannot {action} without an optimizer: pass one to Trainer, e.g. "
            "Trainer(model, optimizer=torch.optim.Adam(model.parameters()), loss=...) "
            'or optimizer="adam".'
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Add the kind's own state to a full checkpoint being written."""

    def on_load_checkpoint(self, checkpoint: Mapping[str, Any]) -> None:
        """Called with a full checkpoint before the trainer loads it."""

    def on_exception(self, error: BaseException) -> None:
        """Called when an exception (or Ctrl-C) ends `fit`, before it propagates."""

    def validates(self) -> bool:
        """Whether `fit` can run the validation data it was given."""
        return True

    def validation_logs(self, logs: Mapping[str, Any]) -> dict[str, Any]:
        """Validation results as epoch-log entries (Keras's ``val_`` prefix)."""
        return {f"val_{k}": v for k, v in logs.items()}

    # -- training --------------------------------------------------------------------------
    def begin_epoch(self, last_batch: int | None, pending: bool) -> None:
        """Called before an epoch's first batch: ``last_batch`` is the number of batches it
        will run, when known; ``pending``: gradients accumulated before a resume are back."""

    def train_batch(self, batch: Any, batch_index: int) -> tuple[Any, int] | None:
        """Train on one batch: the values for the tracker and the batch size, or None to
        end the epoch here."""
        raise NotImplementedError

    def end_epoch(self) -> None:
        """Called after an epoch's last batch (an optimizer step still due is taken here)."""

    def train_single_batch(self, batch: Any) -> tuple[Any, int]:
        """`Trainer.train_on_batch`: one complete optimizer step on one batch."""
        raise NotImplementedError

    # -- evaluation and prediction ---------------------------------------------------------
    @contextlib.contextmanager
    def evaluation_mode(
        self, module: torch.nn.Module, stage: str, run: bool = False
    ) -> Iterator[None]:
        """``module`` in eval mode for ``stage`` ("validate", "test" or "predict"); every
        submodule gets its own mode back afterwards. ``run``: around a whole evaluation or
        prediction loop (its epoch logs are read inside), not one batch."""
        with preserved_modes(module):
            module.eval()
            yield

    def eval_batch(self, batch: Any, batch_index: int) -> tuple[Any, int]:
        """Values and batch size of a validation batch (under ``no_grad``)."""
        raise NotImplementedError

    def test_batch(self, batch: Any, batch_index: int) -> tuple[Any, int]:
        """Values and batch size of an `evaluate` batch (under ``no_grad``)."""
        return self.eval_batch(batch, batch_index)

    def predict_batch(self, batch: Any, batch_index: int) -> Any:
        """The outputs `predict` collects for one batch (under ``no_grad``)."""
        raise NotImplementedError
