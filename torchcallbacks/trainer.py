"""`Trainer`: Keras's fit / evaluate / predict around any ``nn.Module``.

The loop emits Keras's hook events in Keras's order and hands every batch to the kind of
model (`torchcallbacks.models`), which owns the forward and backward passes and the optimizer
step. Per-step work is kept to what a hand-written loop does: losses and metrics accumulate on
the device, and batch logs (one host sync) are built only when a callback implements batch
hooks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from torchcallbacks.callbacks.base import Callback
from torchcallbacks.callbacks.callback_list import CallbackList
from torchcallbacks.callbacks.history import History
from torchcallbacks.checkpoints.resume import ResumeState
from torchcallbacks.checks import (
    check_fit_arguments,
    check_not_given_a_module,
    warn_unused_batch_size,
)
from torchcallbacks.data.inputs import (
    batch_count,
    make_batches,
    split_validation,
    validation_batches,
)
from torchcallbacks.distributed import checkpoint as distributed_checkpoint
from torchcallbacks.distributed import process_group as distributed
from torchcallbacks.distributed.wrapping import place
from torchcallbacks.ema import ExponentialMovingAverage
from torchcallbacks.evaluation import EvaluationLoop
from torchcallbacks.metrics import Objective
from torchcallbacks.models import kind_for
from torchcallbacks.optimizers import resolve_optimizer
from torchcallbacks.rng import data_order_seed, set_rng_state
from torchcallbacks.trainer_methods import TrainerMethods, results
from torchcallbacks.utils import expected_sync, original_module, preserved_modes
from torchcallbacks.weighting import ClassWeights, class_weights_for

_PRECISIONS = {"32": None, "16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}


class Trainer(TrainerMethods):
    """Trains, evaluates and predicts with an existing module, Keras style.

    Example::

        model = torch.nn.Sequential(torch.nn.Linear(20, 64), torch.nn.ReLU(),
                                    torch.nn.Linear(64, 3))
        trainer = Trainer(model, optimizer="adam", loss="cross_entropy",
                          metrics=["accuracy"])
        history = trainer.fit(x, y, epochs=5, validation_split=0.2,
                              callbacks=[EarlyStopping(patience=2)])
        trainer.evaluate(x_test, y_test)
        probabilities = trainer.predict(x_new).softmax(-1)

    Options (keywords): ``precision`` ("32", "16-mixed", "bf16-mixed"),
    ``accumulate_grad_batches`` (step every N batches and at each epoch end),
    ``gradient_clip_norm`` / ``gradient_clip_value`` (after unscaling), ``compile``
    (``torch.compile``, falls back to eager with a warning; a module given already compiled,
    ``torch.compile(model)``, runs compiled as it is, while ``trainer.model``, checkpoints
    and `summary` are the original module's), ``channels_last``,
    ``weighted_metrics`` (metrics weighted by ``sample_weight``/``class_weight``, as Keras's),
    ``loss_weights`` as in Keras 3 (a number, a list in the order of the losses, or a dict
    keyed like the outputs: the loss trained and logged is the weighted sum of the outputs'
    losses; the per-output losses ``<output>_loss`` are logged unweighted),
    ``ema_momentum`` (keep ``trainer.ema``, a moving average of the weights updated after each
    optimizer step and copied into the module when `fit` ends, as Keras's ``use_ema``).

    Under torchrun: ``strategy`` ("auto": DDP when several processes run, "ddp", "fsdp":
    FSDP2 ``fully_shard``, None: the module as it is) and ``distributed_timeout`` (seconds or
    a timedelta a collective may wait, default 300). ``async_save``: sharded checkpoints
    written during `fit` (ModelCheckpoint, BackupAndRestore) are written in the background
    (``torch.distributed.checkpoint.async_save``), at most one at a time.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer | str | None = None,
        loss: Any = None,
        metrics: Sequence[Any] | Mapping[str, Any] | None = None,
        device: str | torch.device | None = None,
        *,
        precision: str = "32",
        accumulate_grad_batches: int = 1,
        gradient_clip_norm: float | None = None,
        gradient_clip_value: float | None = None,
        compile: bool = False,
        channels_last: bool = False,
        weighted_metrics: Sequence[Any] | Mapping[str, Any] | None = None,
        loss_weights: float | Sequence[float] | Mapping[str, float] | None = None,
        ema_momentum: float | None = None,
        strategy: str | None = "auto",
        distributed_timeout: float | timedelta | None = None,
        async_save: bool = False,
    ) -> None:
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if precision not in _PRECISIONS:
            raise ValueError(
                f"Unknown precision {precision!r}; use one of {', '.join(_PRECISIONS)}"
            )
        if accumulate_grad_batches < 1:
            raise ValueError("accumulate_grad_batches must be an integer >= 1")
        distributed.check_strategy(strategy)
        timeout = distributed.as_timeout(distributed_timeout)
        inner = model.module if isinstance(model, DDP) else model
        original = original_module(inner)  # the module inside a torch.compile wrapper
        kind = kind_for(original, loss)
        # `_module`: what forward passes run on (DDP or FSDP2 around the module under torchrun)
        self.model, self.device, self._module, optimizer = place(
            model, optimizer, device, strategy, timeout, kind.distributed_module,
            kind.sharded_methods,
        )  # fmt: skip
        if self._module is not self.model and self._module is not model:
            distributed.release_at_exit(self)
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.optimizer = resolve_optimizer(optimizer, self.model.parameters())
        self.objective = Objective(loss, metrics, weighted_metrics, loss_weights)
        self.class_weights: ClassWeights | None = None  # of the fit or train_on_batch running
        self.precision = precision
        self._autocast_dtype = _PRECISIONS[precision]
        self.scaler = torch.amp.GradScaler(self.device.type) if precision == "16-mixed" else None
        self.accumulate_grad_batches = accumulate_grad_batches
        self.gradient_clip_norm = gradient_clip_norm
        self.gradient_clip_value = gradient_clip_value
        self.channels_last = channels_last
        self.ema = (
            None if ema_momentum is None else ExponentialMovingAverage(self.model, ema_momentum)
        )
        self.async_save = async_save
        self._strategy = strategy
        self._compile_requested = compile and original is inner  # not compiled twice
        self._eager_module: torch.nn.Module | None = None  # set until compile is proven

        self.history: History | None = None
        self._stop_training = False
        self.stop_evaluating = False
        self.stop_predicting = False
        self.global_step = 0
        self.global_train_batch = 0
        self.current_epoch = 0
        self.example_batch_inputs: Any = None
        self.datamodule: Any = None  # the data module of the run (see `_data_of`)
        self._data_source: Any = None
        self.samples_per_epoch: int | None = None
        self.batch_size: int | None = None
        self.last_batch_size = 0
        self.epoch_start_batch = 0  # > 0 in an epoch resumed mid-way: the batches it skips
        self._callbacks: CallbackList | None = None
        self._batch_logs = False
        self._stop_each_batch = False
        self._resume = ResumeState(self)
        self._data_generator = self._resume.data_generator
        self._fits = 0  # each fit shuffles in an order of its own (`data_order_seed`)
        self._kind = kind(self)  # may take the optimizer from the module (Lightning)
        self._train_tracker = self._kind.tracker()
        self._evaluation = EvaluationLoop(self)  # validation, evaluate and predict
        self._active_tracker = self._train_tracker  # the loop now running, for running_logs

    @property
    def stop_training(self) -> bool:
        """Set to True (or ``model.stop_training = True``) to end `fit` after this batch."""
        return self._stop_training or getattr(self.model, "stop_training", False) is True

    @stop_training.setter
    def stop_training(self, value: bool) -> None:
        self._stop_training = bool(value)
        with contextlib.suppress(AttributeError, TypeError):
            self.model.stop_training = bool(value)

    # -- fit -------------------------------------------------------------------------------
    def fit(
        self,
        x: Any = None,
        y: Any = None,
        batch_size: int | None = None,
        epochs: int = 1,
        verbose: int | str = "auto",
        callbacks: Sequence[Callback] | None = None,
        validation_split: float = 0.0,
        validation_data: Any = None,
        shuffle: bool = True,
        initial_epoch: int = 0,
        steps_per_epoch: int | None = None,
        validation_steps: int | None = None,
        validation_batch_size: int | None = None,
        validation_freq: int | Sequence[int] = 1,
        resume_from: str | None = None,
        class_weight: Mapping[int, float] | None = None,
        sample_weight: Any = None,
        datamodule: Any = None,
    ) -> History:
        """Train for ``epochs`` epochs and return the `History` of the epoch logs.

        ``batch_size=None`` means 32 for tensors, arrays and Datasets, as in Keras 3; data
        that comes in batches (a DataLoader, a data module) keeps its own, and a
        ``batch_size`` given with it warns that it is not used. ``datamodule=``: a data module
        given by name, as in Lightning.
        """
        self._require_optimizer("fit")
        check_not_given_a_module("fit", x, y)
        warn_unused_batch_size(x if datamodule is None else datamodule, batch_size)
        x, validation_data = self._data_of(x, "fit", validation_data, datamodule)
        check_fit_arguments(self, locals())
        if validation_split and validation_data is None:
            (x, y, sample_weight), validation_data = split_validation(
                x, y, validation_split, sample_weight
            )
        # once per fit: the seed, the class-weight table and in-memory data moved to the device
        with expected_sync():
            self.class_weights = class_weights_for(class_weight, sample_weight, self.device)
            seed = data_order_seed(distributed.shared_seed(self.device), self._fits)
            self._data_generator.manual_seed(seed)
            self._fits += 1
            train = make_batches(
                x, y, batch_size, shuffle, self.device, self.rank, self.world_size,
                self._data_generator, training=True, sample_weight=sample_weight,
            )  # fmt: skip
            val = validation_batches(
                validation_data, validation_batch_size or batch_size, self.device, self.rank,
                self.world_size,
            )  # fmt: skip
        if val is not None and not self._kind.validates():
            val = None
        self._resume.track_data(train)
        steps = steps_per_epoch if steps_per_epoch is not None else batch_count(train)
        self.batch_size = getattr(train, "batch_size", batch_size)
        self.samples_per_epoch = getattr(train, "shard_size", None)
        callbacks = self._callback_list(callbacks, True, verbose, epochs, steps)
        self._callbacks = callbacks
        self.history = callbacks.history
        self.example_batch_inputs = None
        self.stop_training = False
        self.global_train_batch = 0
        if resume_from is not None:
            self._resume.request_from_file(resume_from)
        self._maybe_compile()

        distributed.check_same_callbacks(callbacks.callbacks)  # before any collective
        try:  # on_exception for a failure in any hook of the run, as in Lightning
            callbacks.on_train_begin({})
            start_epoch, skip = initial_epoch, 0
            resume, self._resume.pending = self._resume.pending, None
            if resume is not None:
                resume = distributed_checkpoint.for_this_rank(resume)  # its own RNG, accumulators
                start_epoch, skip = self._resume.apply(resume, callbacks)
            batch_hooks = callbacks.implements_batch_hooks("train")
            self._batch_logs = callbacks.needs_batch_logs("train")
            with expected_sync():  # once per fit: the ranks agree on per-batch stop checks
                self._stop_each_batch = distributed.checks_stop_each_batch(callbacks, self.device)
            epoch_logs: dict[str, Any] = {}
            with preserved_modes(self._module):
                if not self._module.training:  # else parts set to eval() (frozen) stay so
                    self._module.train()
                try:
                    for epoch in range(start_epoch, epochs):
                        self.current_epoch = epoch
                        resuming = resume if skip else None
                        self._resume.begin_epoch(resuming)
                        callbacks.on_epoch_begin(epoch, {})
                        self._train_epoch(
                            epoch, train, callbacks, batch_hooks, steps, skip, resuming
                        )
                        skip = 0
                        with expected_sync():
                            epoch_logs = self._train_tracker.logs(self._reduce)
                        if val is not None and _should_validate(epoch, validation_freq):
                            val_logs = self._evaluation.evaluate(
                                val, callbacks, validation_steps, "validate"
                            )
                            epoch_logs.update(self._kind.validation_logs(val_logs))
                        callbacks.on_epoch_end(epoch, epoch_logs)
                        with expected_sync():
                            stop = distributed.agree_stop(self.stop_training, self.device)
                        if stop:
                            self.stop_training = True
                            break
                finally:
                    self._resume.in_epoch = False
                    self.class_weights = None
            if self.ema is not None:
                self.ema.copy_to_module()
            callbacks.on_train_end(epoch_logs)
        except BaseException as error:
            self._kind.on_exception(error)
            raise
        distributed_checkpoint.finish_saves()
        self._callbacks = None
        return self.history  # type: ignore[return-value]

    def _train_epoch(
        self,
        epoch: int,
        train: Any,
        callbacks: CallbackList,
        batch_hooks: bool,
        steps: int | None,
        skip: int,
        resume: Mapping[str, Any] | None,
    ) -> None:
        kind = self._kind
        tracker = self._train_tracker
        distributed_run = distributed.is_active()
        after_skip = (lambda: set_rng_state(resume["rng"])) if resume is not None else None
        position = self._resume
        pending = position.restore_gradients(resume)  # accumulated before the checkpoint
        position.finish_interrupted_hook()
        known = [n for n in (steps, batch_count(train)) if n is not None]
        kind.begin_epoch(min(known) if known else None, pending)
        batch_logs = self._batch_logs
        first = True
        position.in_epoch = True
        for batch_index, batch in enumerate(
            train.epoch(epoch, self._data_generator, skip, after_skip), start=skip
        ):
            if steps is not None and batch_index >= steps:
                break
            position.batch_index = batch_index
            if batch_hooks:
                callbacks.on_train_batch_begin(batch_index, {})
            result = kind.train_batch(batch, batch_index)
            if result is None:  # the kind ends the epoch here
                break
            values, size = result
            tracker.update(values, size)
            self.last_batch_size = size
            self.global_train_batch += 1
            if batch_hooks:
                callbacks.on_train_batch_end(batch_index, tracker.logs() if batch_logs else {})
            stop = self.stop_training
            if distributed_run and (self._stop_each_batch or first):  # the same on every rank
                stop = distributed.agree_stop(stop, self.device)
            first = False
            if stop:
                self.stop_training = True
                break
        kind.end_epoch()
        position.in_epoch = False

    # -- evaluate / predict ----------------------------------------------------------------
    def evaluate(
        self,
        x: Any,
        y: Any = None,
        batch_size: int | None = None,
        verbose: int | str = "auto",
        steps: int | None = None,
        callbacks: Sequence[Callback] | None = None,
        return_dict: bool = False,
        sample_weight: Any = None,
    ) -> float | list[float] | dict[str, float]:
        """The loss (a float) without metrics, else ``[loss, *metrics]``, or a dict."""
        check_not_given_a_module("evaluate", x, y)
        warn_unused_batch_size(x, batch_size)
        logs = self._evaluate(x, y, batch_size, verbose, steps, callbacks, sample_weight, "test")
        return results(logs, return_dict)

    def predict(
        self,
        x: Any,
        batch_size: int | None = None,
        verbose: int | str = "auto",
        steps: int | None = None,
        callbacks: Sequence[Callback] | None = None,
    ) -> Any:
        """Outputs of every batch concatenated on the CPU (tensors, tuples or dicts), one
        row per example. Batches of different lengths (sequences padded per batch) are
        padded at the end of the ragged dimensions to the longest with -100, as
        HuggingFace's Trainer pads them (False for booleans, 0 for unsigned integers);
        outputs whose number of dimensions differs between batches come back as a list of
        one tensor per example."""
        check_not_given_a_module("predict", x, batch_size)
        warn_unused_batch_size(x, batch_size)
        return self._predict(x, batch_size, verbose, steps, callbacks)


def _should_validate(epoch: int, validation_freq: int | Sequence[int]) -> bool:
    if isinstance(validation_freq, int):
        if validation_freq < 1:
            raise ValueError(f"validation_freq must be >= 1, got {validation_freq}")
        return (epoch + 1) % validation_freq == 0
    return epoch + 1 in validation_freq
