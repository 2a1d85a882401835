"""Checkpoint and resume state: what a full checkpoint holds and how training resumes from it.

`ResumeState` belongs to one `Trainer`. It records where the loop is (epoch, batch, the
epoch's data order and the gradients accumulated since the last optimizer step), builds
the dict that full checkpoints and backups save (`checkpoint`), and puts a saved dict back
(`apply`, then `begin_epoch`) so that the resumed run continues as if never interrupted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from torchcallbacks import __version__
from torchcallbacks.callbacks.base import Callback, CallbackList
from torchcallbacks.checkpoint_io import FORMAT
from torchcallbacks.distributed_checkpoint import SHARDED_KEY, load_in_place
from torchcallbacks.rng import get_rng_state, set_rng_state

if TYPE_CHECKING:
    from torchcallbacks.trainer import Trainer


class ResumeState:
    """The trainer's position in `fit` and the state a checkpoint needs to resume it."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        # Decides the order of in-memory data each epoch; seeded identically on every rank.
        self.data_generator = torch.Generator()
        self.batch_index = -1
        self.in_epoch = False
        self.pending: Mapping[str, Any] | None = None  # a checkpoint to resume from
        self._epoch_start: dict[str, Any] | None = None

    # -- saving ----------------------------------------------------------------------------
    def checkpoint(
        self, epoch: int | None = None, logs: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Everything needed to reload or resume, as plain containers and live tensors."""
        trainer = self.trainer
        running = trainer._callbacks
        callbacks = running.callbacks if running is not None else []
        optimizer, scaler = trainer.optimizer, trainer.scaler
        return {
            "format": FORMAT,
            "version": __version__,
            "model": trainer.model.state_dict(),
            "optimizer": None if optimizer is None else optimizer.state_dict(),
            "scaler": None if scaler is None else scaler.state_dict(),
            "ema": None if trainer.ema is None else trainer.ema.state_dict(),
            "epoch": trainer.current_epoch if epoch is None else epoch,
            "global_step": trainer.global_step,
            "callbacks": {_callback_key(i, c): c.state_dict() for i, c in enumerate(callbacks)},
            "rng": get_rng_state(),
            "training": self._position(),
            "logs": dict(logs or {}),
        }

    def _position(self) -> dict[str, Any]:
        trainer = self.trainer
        if self.in_epoch:  # called from a batch hook: resume at the next batch
            return {
                "epoch": trainer.current_epoch,
                "batch": self.batch_index + 1,
                "global_train_batch": trainer.global_train_batch,
                "tracker": trainer._train_tracker.state_dict(),
                "epoch_start": self._epoch_start,
                "gradients": self._pending_gradients(),
            }
        return {
            "epoch": trainer.current_epoch + 1,
            "batch": 0,
            "global_train_batch": trainer.global_train_batch,
            "tracker": None,
            "epoch_start": None,
            "data_generator": self.data_generator.get_state(),
        }

    def _parameters(self) -> list[torch.nn.Parameter]:
        optimizer = self.trainer.optimizer
        return [p for group in optimizer.param_groups for p in group["params"]]

    def _pending_gradients(self) -> list[torch.Tensor | None] | None:
        """Gradients accumulated since the last optimizer step (None when there are none)."""
        trainer = self.trainer
        if (
            trainer.optimizer is None
            or (self.batch_index + 1) % trainer.accumulate_grad_batches == 0
        ):
            return None
        return [
            None if p.grad is None else p.grad.detach().cpu().clone() for p in self._parameters()
        ]

    # -- loading ---------------------------------------------------------------------------
    def load_weights_and_optimizer(self, state: Mapping[str, Any]) -> None:
        """Load the module, optimizer, scaler and step count of a checkpoint."""
        trainer = self.trainer
        if SHARDED_KEY in state:  # a DCP directory: loaded (and resharded) in place
            load_in_place(trainer.model, trainer.optimizer, state[SHARDED_KEY])
        else:
            trainer.model.load_state_dict(state["model"])
            if trainer.optimizer is not None and state.get("optimizer") is not None:
                trainer.optimizer.load_state_dict(state["optimizer"])
        if trainer.scaler is not None and state.get("scaler"):
            trainer.scaler.load_state_dict(state["scaler"])
        if trainer.ema is not None and state.get("ema") is not None:
            trainer.ema.load_state_dict(state["ema"])  # after the module: it may swap weights
        trainer.global_step = int(state.get("global_step", trainer.global_step))

    def apply(self, state: Mapping[str, Any], callbacks: CallbackList) -> tuple[int, int]:
        """Load a checkpoint into the trainer and its callbacks (after their
        ``on_train_begin``); return the epoch and the batch to resume at."""
        self.load_weights_and_optimizer(state)
        saved = state.get("callbacks", {})
        for index, callback in enumerate(callbacks.callbacks):
            key = _callback_key(index, callback)
            if key in saved:
                callback.load_state_dict(saved[key])
        position = state["training"]
        self.trainer.global_train_batch = int(position["global_train_batch"])
        if position["batch"] == 0:
            set_rng_state(state["rng"])
            if position.get("data_generator") is not None:
                self.data_generator.set_state(position["data_generator"])
        return int(position["epoch"]), int(position["batch"])

    def begin_epoch(self, resume: Mapping[str, Any] | None) -> None:
        """Reset the epoch accumulators, or restore them and the epoch's data order."""
        tracker = self.trainer._train_tracker
        if resume is None:
            tracker.reset()
            self._epoch_start = {
                "data_generator": self.data_generator.get_state(),
                "torch": torch.get_rng_state(),
            }
            return
        position = resume["training"]
        self._epoch_start = position["epoch_start"]
        self.data_generator.set_state(self._epoch_start["data_generator"])
        torch.set_rng_state(self._epoch_start["torch"])
        # Metric objects keep their own state, which is not saved: they restart empty and
        # cover the batches after the resume.
        tracker.reset()
        tracker.load_state_dict(position["tracker"], self.trainer.device)

    def restore_gradients(self, resume: Mapping[str, Any] | None) -> bool:
        """Put back the gradients accumulated before the checkpoint; True if there were."""
        gradients = None if resume is None else resume["training"].get("gradients")
        if gradients is None:
            return False
        for parameter, gradient in zip(self._parameters(), gradients):
            parameter.grad = None if gradient is None else gradient.to(parameter.device)
        return True


def _callback_key(index: int, callback: Callback) -> str:
    return f"{index}:{type(callback).__name__}"
