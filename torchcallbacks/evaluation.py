"""The evaluation loops: `fit`'s validation, `Trainer.evaluate` and `Trainer.predict`.

Like the training loop, they emit Keras's hook events and hand each batch to the kind of
model (``eval_batch``, ``test_batch`` or ``predict_batch``), in the kind's evaluation mode and
under ``no_grad``, on the module evaluation runs on (`evaluation_module`: the module itself
rather than its DDP wrapper).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch

from torchcallbacks.data.batches import concatenate_outputs
from torchcallbacks.distributed import process_group as distributed
from torchcallbacks.distributed.fsdp import Lockstep
from torchcallbacks.distributed.wrapping import evaluation_module
from torchcallbacks.utils import expected_sync

if TYPE_CHECKING:
    from torchcallbacks.callbacks.callback_list import CallbackList
    from torchcallbacks.trainer import Trainer


class EvaluationLoop:
    """The trainer's evaluation and prediction loops, and their accumulator."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.tracker = trainer._kind.tracker()

    def evaluate(
        self, batches: Any, callbacks: CallbackList, steps: int | None, stage: str
    ) -> dict[str, Any]:
        """The logs of one pass over ``batches``: ``stage`` is "validate" (inside `fit`) or
        "test" (`Trainer.evaluate`)."""
        trainer, tracker = self.trainer, self.tracker
        kind = trainer._kind
        step = kind.test_batch if stage == "test" else kind.eval_batch
        tracker.reset()
        trainer.stop_evaluating = False
        callbacks.on_test_begin({})
        batch_hooks = callbacks.implements_batch_hooks("test")
        batch_logs = callbacks.needs_batch_logs("test")
        training_tracker, trainer._active_tracker = trainer._active_tracker, tracker
        lockstep = Lockstep(trainer, batches, steps)
        step = lockstep.counted(step)
        try:
            with self.inference(stage, run=True):
                for batch_index, batch in enumerate(batches.epoch(0, trainer._data_generator)):
                    if steps is not None and batch_index >= steps:
                        break
                    if batch_hooks:
                        callbacks.on_test_batch_begin(batch_index, {})
                    values, size = step(batch, batch_index)
                    tracker.update(values, size)
                    if batch_hooks:
                        callbacks.on_test_batch_end(
                            batch_index, tracker.logs() if batch_logs else {}
                        )
                    if trainer.stop_evaluating:
                        break
                lockstep.finish()
                with expected_sync():  # in eval mode: the epoch-end hooks run here
                    logs = tracker.logs(trainer._reduce)
        finally:
            trainer._active_tracker = training_tracker
        callbacks.on_test_end(logs)
        return logs

    def predict(self, batches: Any, callbacks: CallbackList, steps: int | None) -> Any:
        """Every batch's outputs, concatenated on the CPU (every process's rows, in input
        order, under torchrun)."""
        trainer = self.trainer
        trainer.stop_predicting = False
        callbacks.on_predict_begin({})
        batch_hooks = callbacks.implements_batch_hooks("predict")
        outputs: list[Any] = []
        lockstep = Lockstep(trainer, batches, steps)
        predict_batch = lockstep.counted(trainer._kind.predict_batch)
        with self.inference("predict", run=True):
            for batch_index, batch in enumerate(batches.epoch(0, trainer._data_generator)):
                if steps is not None and batch_index >= steps:
                    break
                if batch_hooks:
                    callbacks.on_predict_batch_begin(batch_index, {})
                output = predict_batch(batch, batch_index)
                outputs.append(output)
                if batch_hooks:
                    callbacks.on_predict_batch_end(batch_index, {"outputs": output})
                if trainer.stop_predicting:
                    break
            lockstep.finish()
        callbacks.on_predict_end({})
        gather = distributed.is_active() and batches.sharded
        with expected_sync():  # once: the outputs come back to the CPU
            return concatenate_outputs(
                outputs, gather=gather, order=batches.sample_order() if gather else None
            )

    @contextlib.contextmanager
    def inference(self, stage: str, run: bool = False) -> Iterator[None]:
        """``no_grad`` and the kind's evaluation mode for ``stage`` ("validate", "test" or
        "predict"), on the module evaluation runs on; ``run``: around a whole loop."""
        trainer = self.trainer
        running = trainer._module
        trainer._module = evaluation_module(running, trainer.model)
        try:
            with torch.no_grad(), trainer._kind.evaluation_mode(trainer._module, stage, run):
                yield
        finally:
            trainer._module = running
