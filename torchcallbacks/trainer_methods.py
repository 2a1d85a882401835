"""`Trainer`'s methods outside its loops: Keras's Model methods besides fit, evaluate and
predict (``train_on_batch``, ``test_on_batch``, ``predict_on_batch``, ``summary``, the weights
and checkpoint files), Lightning's ``validate`` and ``test``, the set-up of a run (its data,
callbacks and compiled module), and what callbacks ask of the trainer (the process, the
learning rate, the checkpoint state, the running logs)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from torchcallbacks.callbacks.base import Callback, sanitize_logs
from torchcallbacks.callbacks.callback_list import CallbackList
from torchcallbacks.checks import check_weights_reach
from torchcallbacks.data.batches import concatenate_outputs
from torchcallbacks.data.inputs import batch_count, from_data_module, make_batches
from torchcallbacks.distributed import checkpoint as distributed_checkpoint
from torchcallbacks.distributed import process_group as distributed
from torchcallbacks.distributed.wrapping import compiled_module
from torchcallbacks.optimizers import expose_on_module, set_learning_rate
from torchcallbacks.overrides import user_method
from torchcallbacks.utils import expected_sync, preserved_modes
from torchcallbacks.weighting import batch_from_arrays, class_weights_for

if TYPE_CHECKING:
    from torchcallbacks.trainer import Trainer


# What `_data_of` says when a method is given no data (`evaluate` runs the "test" stage).
_MISSING_DATA = {
    "fit": "fit needs the training data: fit(x, y, ...) or fit(datamodule=...).",
    "test": "evaluate needs the data: evaluate(x, y, ...) or evaluate(loader).",
    "predict": "predict needs the inputs: predict(x) or predict(loader).",
}


class TrainerMethods:
    """`Trainer`'s methods outside its loops (see the module docstring)."""

    def train_on_batch(
        self: Trainer,
        x: Any,
        y: Any = None,
        sample_weight: Any = None,
        class_weight: Mapping[int, float] | None = None,
        return_dict: bool = False,
    ) -> float | list[float] | dict[str, float]:
        """One optimizer step on one batch. Returns that batch's loss (and metrics) as
        `evaluate` does; metrics restart at each call, as in Keras 3."""
        self._require_optimizer("train_on_batch")
        batch = self._single_batch(x, y, sample_weight, class_weight)
        self._train_tracker.reset()
        with preserved_modes(self._module):
            if not self._module.training:
                self._module.train()
            values, size = self._kind.train_single_batch(batch)
        self.class_weights = None
        self._train_tracker.update(values, size)
        return self._batch_results(self._train_tracker, return_dict)

    def test_on_batch(
        self: Trainer, x: Any, y: Any = None, sample_weight: Any = None, return_dict: bool = False
    ) -> float | list[float] | dict[str, float]:
        """The loss (and metrics) of one batch in eval mode, as `evaluate` returns them."""
        batch = self._single_batch(x, y, sample_weight)
        tracker = self._evaluation.tracker
        tracker.reset()
        with self._evaluation.inference("test"):
            values, size = self._kind.test_batch(batch, 0)
        tracker.update(values, size)
        return self._batch_results(tracker, return_dict)

    def predict_on_batch(self: Trainer, x: Any) -> Any:
        """The module's outputs for one batch, in eval mode, on the CPU."""
        batch = self._single_batch(x, None, None)
        with self._evaluation.inference("predict"):
            outputs = self._kind.predict_batch(batch, 0)
        with expected_sync():
            return concatenate_outputs([outputs], gather=False)

    # -- Lightning's names ---------------------------------------------------------------------
    def validate(
        self: Trainer,
        model: torch.nn.Module | None = None,
        dataloaders: Any = None,
        ckpt_path: str | None = None,
        verbose: bool = True,
        datamodule: Any = None,
    ) -> list[dict[str, float]]:
        """Lightning's ``trainer.validate``: `evaluate` with ``validation_step`` and the
        validation hooks, on ``dataloaders`` or the data module's ``val_dataloader()``;
        ``[logs]`` (one dict, as Lightning returns for one loader)."""
        return self._lightning_evaluation("validate", model, dataloaders, ckpt_path, verbose,
                                          datamodule)  # fmt: skip

    def test(
        self: Trainer,
        model: torch.nn.Module | None = None,
        dataloaders: Any = None,
        ckpt_path: str | None = None,
        verbose: bool = True,
        datamodule: Any = None,
    ) -> list[dict[str, float]]:
        """Lightning's ``trainer.test``: `evaluate` (``test_step`` and the test hooks) on
        ``dataloaders`` or the data module's ``test_dataloader()``; ``[logs]``."""
        return self._lightning_evaluation("test", model, dataloaders, ckpt_path, verbose,
                                          datamodule)  # fmt: skip

    def _lightning_evaluation(
        self: Trainer,
        stage: str,
        model: Any,
        dataloaders: Any,
        ckpt_path: str | None,
        verbose: bool,
        datamodule: Any,
    ) -> list[dict[str, float]]:
        if model is not None and model is not self.model:
            raise ValueError(
                "This Trainer evaluates the module it was built with; pass no model (or "
                "that module): trainer.validate(dataloaders=...)."
            )
        if dataloaders is not None and datamodule is not None:
            raise ValueError("Pass either dataloaders= or datamodule=, not both.")
        data = next((d for d in (dataloaders, datamodule, model) if d is not None), None)
        if data is None:
            raise ValueError(f"trainer.{stage} needs data: dataloaders=... or datamodule=...")
        # evaluate() falls back to validation_step; Lightning's trainer.test does not
        if stage == "test" and getattr(self._kind, "test_stage", "test") != "test":
            raise ValueError(
                f"{type(self.model).__name__} defines no test_step(batch, batch_idx), which "
                "trainer.test runs (as Lightning's does); define it, or call "
                "trainer.validate(...) to run validation_step."
            )
        loaders = [user_method(data, name) for name in ("test_dataloader", "val_dataloader")]
        if stage == "test" and loaders[0] is None and loaders[1] is not None:
            raise ValueError(  # evaluate(data) falls back to val_dataloader(); Lightning does not
                f"{type(data).__name__} defines no test_dataloader(), which trainer.test uses "
                "(as Lightning's does); define it, or call trainer.validate(...) to run on "
                "val_dataloader()."
            )
        if ckpt_path in ("best", "last", "hpc", "registry"):
            raise ValueError(
                f"ckpt_path={ckpt_path!r} is Lightning's name for a file its own callbacks "
                "track; pass the file: ckpt_path=checkpoint.best_model_path, with checkpoint "
                "the torchcallbacks ModelCheckpoint of the fit."
            )
        if ckpt_path is not None:
            self.load_weights(ckpt_path)
        verbosity = "auto" if verbose else 0
        return [self._evaluate(data, None, None, verbosity, None, None, None, stage)]

    def _data_of(
        self: Trainer, x: Any, stage: str, validation_data: Any = None, datamodule: Any = None
    ) -> tuple[Any, Any]:
        """`from_data_module` for ``stage``, noting Lightning's ``trainer.datamodule`` (the
        data module given, None for a module that gives its own loaders)."""
        if datamodule is not None:
            if x is not None and x is not self.model:
                raise ValueError("Pass either the data (x) or datamodule=, not both.")
            x = datamodule
        if x is None:
            raise TypeError(_MISSING_DATA[stage])
        data, validation_data = from_data_module(x, stage, validation_data)
        self._data_source = x if data is not x else None
        self.datamodule = None if self._data_source is self.model else self._data_source
        return data, validation_data

    def _evaluate(
        self: Trainer,
        x: Any,
        y: Any,
        batch_size: int | None,
        verbose: int | str,
        steps: int | None,
        callbacks: Any,
        sample_weight: Any,
        stage: str,
    ) -> dict[str, Any]:
        """The logs of `evaluate` (``stage`` "test") or `validate` ("validate")."""
        x = self._data_of(x, stage)[0]
        check_weights_reach(self, sample_weight)
        with expected_sync():
            batches = make_batches(
                x, y, batch_size, False, self.device, self.rank, self.world_size,
                sample_weight=sample_weight,
            )  # fmt: skip
        total = steps if steps is not None else batch_count(batches)
        callback_list = self._callback_list(callbacks, False, verbose, 1, total)
        return self._evaluation.evaluate(batches, callback_list, steps, stage)

    def _predict(
        self: Trainer,
        x: Any,
        batch_size: int | None,
        verbose: int | str,
        steps: int | None,
        callbacks: Any,
    ) -> Any:
        """`predict`'s outputs."""
        x = self._data_of(x, "predict")[0]
        with expected_sync():
            batches = make_batches(
                x, None, batch_size, False, self.device, self.rank, self.world_size
            )  # fmt: skip
        total = steps if steps is not None else batch_count(batches)
        callback_list = self._callback_list(callbacks, False, verbose, 1, total)
        return self._evaluation.predict(batches, callback_list, steps)

    def _callback_list(
        self: Trainer,
        callbacks: Sequence[Callback] | None,
        training: bool,
        verbose: int | str,
        epochs: int,
        steps: int | None,
    ) -> CallbackList:
        if callbacks is not None and not isinstance(callbacks, list | tuple | CallbackList):
            raise TypeError(
                f"callbacks must be a list of Callback instances, got {type(callbacks).__name__}"
            )
        if isinstance(callbacks, CallbackList):
            callbacks = callbacks.callbacks
        expose_on_module(self.model, self.optimizer)  # Keras callbacks' self.model.optimizer
        # On every rank (it prints on rank 0 only): every rank holds the same callbacks.
        return CallbackList(
            self._kind.callbacks(training, list(callbacks or [])),
            trainer=self,
            params={"verbose": verbose, "epochs": epochs, "steps": steps},
            add_history=training,
            add_progbar=verbose != 0,
        )

    def _reduce(self: Trainer, tensor: torch.Tensor) -> torch.Tensor:
        return distributed.all_reduce_sum(tensor)

    def _maybe_compile(self: Trainer) -> None:
        if self._compile_requested:
            self._compile_requested = False
            compiled = compiled_module(self._module)
            if compiled is not None:  # `AutomaticOptimization` falls back if it fails
                self._eager_module, self._module = self._module, compiled

    def _single_batch(
        self: Trainer, x: Any, y: Any, sample_weight: Any, class_weight: Any = None
    ) -> tuple[Any, ...]:
        check_weights_reach(self, sample_weight, class_weight)
        with expected_sync():
            self.class_weights = class_weights_for(class_weight, sample_weight, self.device)
            return batch_from_arrays(x, y, sample_weight, self.device)

    def _batch_results(self: Trainer, tracker: Any, return_dict: bool) -> Any:
        with expected_sync():
            return results(tracker.logs(self._reduce), return_dict)

    def summary(
        self: Trainer, input_data: Any = None, print_fn: Callable[[str], Any] | None = print
    ) -> str:
        """Print and return Keras's table of the module's layers, output shapes and parameter
        counts. The shapes come from ``input_data``, else from the last `fit`'s first batch
        (one forward pass in eval mode, without gradients)."""
        from torchcallbacks.summary import summarize

        inputs = self.example_batch_inputs if input_data is None else input_data
        text = summarize(self.model, inputs, self.device)
        if print_fn is not None and self.is_main_process:
            print_fn(text)
        return text

    def save_weights(self: Trainer, path: str) -> None:
        """Save the module's full ``state_dict`` (``.h5``/``.hdf5``: HDF5, ``.safetensors``:
        safetensors, else ``torch.save``). Under torchrun call it on every rank: rank 0
        writes."""
        distributed_checkpoint.save_weights(self, path)

    def load_weights(self: Trainer, path: str) -> None:
        """Load weights saved by `save_weights`, `save` or ModelCheckpoint (any format, a
        ``.safetensors`` file too) into the module."""
        distributed_checkpoint.load_weights(self, path)

    def save(self: Trainer, path: str) -> None:
        """Save a full checkpoint: module, optimizer, epoch, callbacks' state, RNG (a
        directory of shards under ``strategy="fsdp"``; call it on every rank). ``.pt`` or
        ``.h5``: a ``.safetensors`` path raises a ``ValueError`` (it holds weights only)."""
        distributed_checkpoint.save_full(self, path)
        distributed_checkpoint.finish_saves()

    # -- for callbacks ----------------------------------------------------------------------
    @property
    def rank(self: Trainer) -> int:
        return distributed.rank()

    @property
    def world_size(self: Trainer) -> int:
        return distributed.world_size()

    @property
    def is_main_process(self: Trainer) -> bool:
        """Only the main process (rank 0) writes files, prints and posts."""
        return distributed.rank() == 0

    def get_lr(self: Trainer) -> float:
        """The learning rate of the optimizer's first parameter group."""
        return float(self._require_optimizer("read the learning rate").param_groups[0]["lr"])

    def set_lr(self: Trainer, value: float) -> None:
        """Set the learning rate; other parameter groups keep their ratio to the first."""
        set_learning_rate(self._require_optimizer("set the learning rate"), value)

    def _require_optimizer(self: Trainer, action: str) -> torch.optim.Optimizer:
        if self.optimizer is None:  # the kind of model raises, or gives one when fit starts
            self._kind.missing_optimizer(action)
        return self.optimizer

    def running_logs(self: Trainer) -> dict[str, Any]:
        """The running means of the loop in progress (training epoch or evaluation), as
        floats: what batch logs hold. One host sync; for callbacks that read them rarely."""
        return sanitize_logs(self._active_tracker.logs())

    def checkpoint_state(
        self: Trainer,
        epoch: int | None = None,
        logs: Mapping[str, Any] | None = None,
        saved_by: Callback | None = None,
    ) -> dict[str, Any]:
        """Everything needed to reload or resume, as plain containers and tensors.

        The tensors are the live ones (no copies): save the dict at once, or deep-copy it.
        A callback saving from its batch-end or epoch-end hook passes itself as ``saved_by``
        (see `ResumeState.checkpoint`).
        """
        return self._resume.checkpoint(epoch, logs, saved_by)

    def load_checkpoint_state(
        self: Trainer, state: Mapping[str, Any], resume: bool = False
    ) -> None:
        """Load the module, optimizer and scaler of a checkpoint; ``resume`` also schedules
        an exact resume of training (see `request_resume`)."""
        self._resume.load_weights_and_optimizer(state)
        if resume:
            self.request_resume(state)

    def request_resume(self: Trainer, state: Mapping[str, Any]) -> None:
        """Resume from ``state`` once every callback has run ``on_train_begin``."""
        self._resume.pending = state


def results(logs: dict[str, Any], return_dict: bool) -> Any:
    """What Keras's evaluate and *_on_batch return: the logs, the loss alone, or a list."""
    if return_dict:
        return logs
    values = list(logs.values())
    return values[0] if len(values) == 1 else values
