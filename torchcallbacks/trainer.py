"""`Trainer`: Keras's fit / evaluate / predict around any ``nn.Module``.

The loop emits Keras's hook events in Keras's order. Per-step work
is kept to what a hand-written loop does: losses and metrics accumulate on the device, and
batch logs (one host sync) are built only when a callback implements batch hooks.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import timedelta
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from torchcallbacks import distributed, distributed_checkpoint
from torchcallbacks.callbacks.base import Callback, CallbackList, sanitize_logs
from torchcallbacks.callbacks.history import History
from torchcallbacks.checks import check_fit_arguments, check_weights_reach
from torchcallbacks.data import (
    LoaderBatches,
    TensorBatches,
    from_data_module,
    make_batches,
    split_validation,
)
from torchcallbacks.ema import ExponentialMovingAverage
from torchcallbacks.fsdp import Lockstep, is_sharded
from torchcallbacks.metrics import Objective
from torchcallbacks.optimizers import expose_on_module, resolve_optimizer
from torchcallbacks.resume_state import ResumeState
from torchcallbacks.rng import set_rng_state
from torchcallbacks.steps import ObjectiveSteps, concatenate_outputs, steps_for
from torchcallbacks.utils import expected_sync, preserved_modes
from torchcallbacks.weighting import ClassWeights, batch_from_arrays, class_weights_for

_PRECISIONS = {"32": None, "16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}


class Trainer:
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
    (``torch.compile``, falls back to eager with a warning), ``channels_last``,
    ``weighted_metrics`` (metrics weighted by ``sample_weight``/``class_weight``, as Keras's),
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
        wrapped = model if isinstance(model, DDP) else None
        self.model: torch.nn.Module = model.module if wrapped is not None else model
        requested = torch.device(device) if device is not None else None
        distributed.check_strategy(strategy)
        timeout = distributed.as_timeout(distributed_timeout)
        if wrapped is None:
            requested = distributed.setup(requested, timeout)
        if requested is None:
            requested = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.device: torch.device = requested
        if wrapped is None:
            self.model.to(self.device)
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        if wrapped is None:
            self._module, optimizer = distributed.prepare(
                self.model, optimizer, self.device, strategy, own_steps=loss is None
            )
        else:
            self._module = wrapped
        if wrapped is None and self._module is not self.model:
            distributed.release_at_exit(self)
        self.optimizer = resolve_optimizer(optimizer, self.model.parameters())
        self.objective = Objective(loss, metrics, weighted_metrics)
        self.class_weights: ClassWeights | None = None  # of the fit or train_on_batch running
        self._steps: ObjectiveSteps = steps_for(self)
        self._train_tracker = self._steps.tracker()
        self._eval_tracker = self._steps.tracker()
        self._active_tracker = self._train_tracker  # the loop now running, for running_logs

        self.precision = precision
        self._autocast_dtype = _PRECISIONS[precision]
        self.scaler = torch.amp.GradScaler(self.device.type) if precision == "16-mixed" else None
        self.accumulate_grad_batches = accumulate_grad_batches
        self.gradient_clip_norm = gradient_clip_norm
        self.gradient_clip_value = gradient_clip_value
        self.channels_last = channels_last
        self._compile_requested = compile
        self.ema = (
            None if ema_momentum is None else ExponentialMovingAverage(self.model, ema_momentum)
        )
        self.async_save = async_save

        self.history: History | None = None
        self._stop_training = False
        self.stop_evaluating = False
        self.stop_predicting = False
        self.global_step = 0
        self.global_train_batch = 0
        self.current_epoch = 0
        self.example_batch_inputs: Any = None
        self._callbacks: CallbackList | None = None
        self._resume = ResumeState(self)
        self._data_generator = self._resume.data_generator
        self._eager_module: torch.nn.Module | None = None  # set until compile is proven
        self._batch_logs = False
        self._stop_each_batch = False
        self.samples_per_epoch: int | None = None
        self.batch_size: int | None = None
        self.last_batch_size = 0

    # -- distributed view ------------------------------------------------------------------
    @property
    def rank(self) -> int:
        return distributed.rank()

    @property
    def world_size(self) -> int:
        return distributed.world_size()

    @property
    def is_main_process(self) -> bool:
        """Only the main process (rank 0) writes files, prints and posts."""
        return distributed.rank() == 0

    # -- stopping --------------------------------------------------------------------------
    @property
    def stop_training(self) -> bool:
        """Set to True (or ``model.stop_training = True``) to end `fit` after this batch."""
        return self._stop_training or getattr(self.model, "stop_training", False) is True

    @stop_training.setter
    def stop_training(self, value: bool) -> None:
        self._stop_training = bool(value)
        with contextlib.suppress(AttributeError, TypeError):
            self.model.stop_training = bool(value)

    # -- learning rate ---------------------------------------------------------------------
    def get_lr(self) -> float:
        """The learning rate of the optimizer's first parameter group."""
        return float(self._require_optimizer("read the learning rate").param_groups[0]["lr"])

    def set_lr(self, value: float) -> None:
        """Set the learning rate; other groups keep their ratio to the first group.

        The ratios are kept in the groups (``"lr_ratio"``), so they survive a warm-up
        from 0, where they cannot be computed, and go into checkpoints with the optimizer.
        """
        groups = self._require_optimizer("set the learning rate").param_groups
        first = float(groups[0]["lr"])
        for group in groups:
            if first:
                group["lr_ratio"] = float(group["lr"]) / first
            group["lr"] = float(value) * group.get("lr_ratio", 1.0)

    def _require_optimizer(self, action: str) -> torch.optim.Optimizer:
        if self.optimizer is None:
            raise ValueError(
                f"Cannot {action} without an optimizer: pass one to Trainer, e.g. "
                "Trainer(model, optimizer=torch.optim.Adam(model.parameters()), loss=...) "
                'or optimizer="adam".'
            )
        return self.optimizer

    # -- fit -------------------------------------------------------------------------------
    def fit(
        self,
        x: Any,
        y: Any = None,
        batch_size: int | None = 32,
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
    ) -> History:
        """Train for ``epochs`` epochs and return the `History` of the epoch logs."""
        self._require_optimizer("fit")
        x, validation_data = from_data_module(x, "fit", validation_data)
        check_fit_arguments(self, locals())
        if validation_split and validation_data is None:
            (x, y, sample_weight), validation_data = split_validation(
                x, y, validation_split, sample_weight
            )
        # once per fit: the seed, the class-weight table and in-memory data moved to the device
        with expected_sync():
            self.class_weights = class_weights_for(class_weight, sample_weight, self.device)
            self._data_generator.manual_seed(distributed.shared_seed(self.device))
            train = make_batches(
                x, y, batch_size, shuffle, self.device, self.rank, self.world_size,
                self._data_generator, training=True, sample_weight=sample_weight,
            )  # fmt: skip
            val = self._validation_batches(validation_data, validation_batch_size or batch_size)
        if val is not None and not self._steps.validates():
            val = None
        self._resume.track_data(train)
        steps = steps_per_epoch if steps_per_epoch is not None else _length(train)
        self.batch_size = batch_size
        self.samples_per_epoch = train.shard_size if isinstance(train, TensorBatches) else None
        callbacks = self._callback_list(callbacks, True, verbose, epochs, steps)
        self._callbacks = callbacks
        self.history = callbacks.history
        self.example_batch_inputs = None
        self.stop_training = False
        self.global_train_batch = 0
        if resume_from is not None:
            from torchcallbacks.checkpoint_io import is_full_checkpoint

            state = distributed_checkpoint.read_full(resume_from)
            if not is_full_checkpoint(state):
                raise ValueError(
                    f"resume_from={resume_from!r} holds weights only; resuming needs a full "
                    "checkpoint (trainer.save, or ModelCheckpoint(save_weights_only=False)). "
                    "To start from these weights, call trainer.load_weights(path) before fit."
                )
            self.request_resume(state)
        self._maybe_compile()

        distributed.check_same_callbacks(callbacks.callbacks)  # before any collective
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
                    self._train_epoch(epoch, train, callbacks, batch_hooks, steps, skip, resuming)
                    skip = 0
                    with expected_sync():
                        epoch_logs = self._train_tracker.logs(self._reduce)
                    if val is not None and _should_validate(epoch, validation_freq):
                        val_logs = self._run_evaluation(val, callbacks, validation_steps)
                        epoch_logs.update(self._steps.validation_logs(val_logs))
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
        distributed_checkpoint.finish_saves()
        self._callbacks = None
        return self.history  # type: ignore[return-value]

    def _train_epoch(
        self,
        epoch: int,
        train: TensorBatches | LoaderBatches,
        callbacks: CallbackList,
        batch_hooks: bool,
        steps: int | None,
        skip: int,
        resume: Mapping[str, Any] | None,
    ) -> None:
        optimizer = self.optimizer
        tracker = self._train_tracker
        accumulate = self.accumulate_grad_batches
        distributed_run = distributed.is_active()
        after_skip = (lambda: set_rng_state(resume["rng"])) if resume is not None else None
        position = self._resume
        # gradients accumulated but not yet stepped
        pending = position.restore_gradients(resume)
        position.finish_interrupted_hook()
        batch_logs = self._batch_logs
        first = True
        known = [n for n in (steps, _length(train)) if n is not None]
        last_batch = min(known) if known else None
        position.in_epoch = True
        for batch_index, batch in enumerate(
            train.epoch(epoch, self._data_generator, skip, after_skip), start=skip
        ):
            if steps is not None and batch_index >= steps:
                break
            position.batch_index = batch_index
            if batch_hooks:
                callbacks.on_train_batch_begin(batch_index, {})
            if not pending:
                optimizer.zero_grad(set_to_none=True)  # type: ignore[union-attr]
            boundary = (batch_index + 1) % accumulate == 0
            # The epoch's last batch synchronises too: the step after the loop uses it.
            if distributed_run and not boundary and batch_index + 1 != last_batch:
                with distributed.no_gradient_sync(self._module):  # synchronised at the step
                    values, size = self._forward_backward(batch, batch_index)
            else:
                values, size = self._forward_backward(batch, batch_index)
            pending = True
            if boundary:
                self._optimizer_step()
                pending = False
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
        if pending:
            self._optimizer_step()
        position.in_epoch = False

    def _forward_backward(
        self, batch: Any, batch_index: int, accumulate: int | None = None
    ) -> tuple[Any, int]:
        if self._eager_module is not None:
            return self._first_compiled_step(batch, batch_index)
        loss, values, size = self._steps.train_batch(batch, batch_index)
        accumulate = self.accumulate_grad_batches if accumulate is None else accumulate
        if accumulate > 1:
            loss = loss / accumulate
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()
        return values, size

    def _optimizer_step(self) -> None:
        optimizer = self.optimizer
        scaler = self.scaler
        if self.ema is not None:
            self.ema.watch(optimizer)  # steps the scaler skips are not averaged in
        if self.gradient_clip_norm is not None or self.gradient_clip_value is not None:
            if scaler is not None:
                scaler.unscale_(optimizer)
            parameters = [p for g in optimizer.param_groups for p in g["params"]]
            if self.gradient_clip_value is not None:
                torch.nn.utils.clip_grad_value_(parameters, self.gradient_clip_value)
            if self.gradient_clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(parameters, self.gradient_clip_norm)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        self.global_step += 1
        if self.ema is not None:
            self.ema.update()

    def _reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        return distributed.all_reduce_sum(tensor)

    def _first_compiled_step(self, batch: Any, batch_index: int) -> tuple[Any, int]:
        """Compilers fail at the first call (no C++ compiler, unsupported ops): fall back."""
        eager, self._eager_module = self._eager_module, None
        try:
            return self._forward_backward(batch, batch_index)
        except Exception as error:
            warnings.warn(
                f"torch.compile failed on the first batch ({type(error).__name__}: "
                f"{str(error).splitlines()[0] if str(error) else ''}); training without it.",
                stacklevel=2,
            )
            self._module = eager
            self.optimizer.zero_grad(set_to_none=True)
            return self._forward_backward(batch, batch_index)

    def _maybe_compile(self) -> None:
        if not self._compile_requested:
            return
        self._compile_requested = False
        try:
            self._eager_module = self._module
            self._module = torch.compile(self._module)
        except Exception as error:  # unsupported platform or Python version
            self._eager_module = None
            warnings.warn(
                f"torch.compile is not available here ({error}); training without it.",
                stacklevel=3,
            )

    # -- evaluate / predict ----------------------------------------------------------------
    def evaluate(
        self,
        x: Any,
        y: Any = None,
        batch_size: int | None = 32,
        verbose: int | str = "auto",
        steps: int | None = None,
        callbacks: Sequence[Callback] | None = None,
        return_dict: bool = False,
        sample_weight: Any = None,
    ) -> float | list[float] | dict[str, float]:
        """The loss (a float) without metrics, else ``[loss, *metrics]``, or a dict."""
        x = from_data_module(x, "test")[0]
        check_weights_reach(self, sample_weight)
        with expected_sync():
            batches = make_batches(
                x, y, batch_size, False, self.device, self.rank, self.world_size,
                sample_weight=sample_weight,
            )  # fmt: skip
        callback_list = self._callback_list(
            callbacks, False, verbose, 1, steps if steps is not None else _length(batches)
        )
        logs = self._run_evaluation(batches, callback_list, steps, test=True)
        return _results(logs, return_dict)

    def _run_evaluation(
        self,
        batches: TensorBatches | LoaderBatches,
        callbacks: CallbackList,
        steps: int | None,
        test: bool = False,
    ) -> dict[str, Any]:
        tracker = self._eval_tracker
        step = self._steps.test_batch if test else self._steps.eval_batch
        tracker.reset()
        self.stop_evaluating = False
        callbacks.on_test_begin({})
        batch_hooks = callbacks.implements_batch_hooks("test")
        batch_logs = callbacks.needs_batch_logs("test")
        training_tracker, self._active_tracker = self._active_tracker, tracker
        lockstep = Lockstep(self, batches, steps)
        step = lockstep.counted(step)
        try:
            with self._inference():
                for batch_index, batch in enumerate(batches.epoch(0, self._data_generator)):
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
                    if self.stop_evaluating:
                        break
                lockstep.finish()
        finally:
            self._active_tracker = training_tracker
        with expected_sync():
            logs = tracker.logs(self._reduce)
        callbacks.on_test_end(logs)
        return logs

    def predict(
        self,
        x: Any,
        batch_size: int | None = 32,
        verbose: int | str = "auto",
        steps: int | None = None,
        callbacks: Sequence[Callback] | None = None,
    ) -> Any:
        """Outputs of every batch concatenated on the CPU (tensors, tuples or dicts)."""
        x = from_data_module(x, "predict")[0]
        with expected_sync():
            batches = make_batches(
                x, None, batch_size, False, self.device, self.rank, self.world_size
            )  # fmt: skip
        callback_list = self._callback_list(
            callbacks, False, verbose, 1, steps if steps is not None else _length(batches)
        )
        self.stop_predicting = False
        callback_list.on_predict_begin({})
        batch_hooks = callback_list.implements_batch_hooks("predict")
        outputs: list[Any] = []
        lockstep = Lockstep(self, batches, steps)
        predict_batch = lockstep.counted(self._steps.predict_batch)
        with self._inference():
            for batch_index, batch in enumerate(batches.epoch(0, self._data_generator)):
                if steps is not None and batch_index >= steps:
                    break
                if batch_hooks:
                    callback_list.on_predict_batch_begin(batch_index, {})
                output = predict_batch(batch, batch_index)
                outputs.append(output)
                if batch_hooks:
                    callback_list.on_predict_batch_end(batch_index, {"outputs": output})
                if self.stop_predicting:
                    break
            lockstep.finish()
        callback_list.on_predict_end({})
        gather = distributed.is_active() and batches.sharded
        with expected_sync():  # once: the outputs come back to the CPU
            return concatenate_outputs(
                outputs, gather=gather, order=batches.sample_order() if gather else None
            )

    # -- single batches ----------------------------------------------------------------------
    def train_on_batch(
        self,
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
            self.optimizer.zero_grad(set_to_none=True)  # type: ignore[union-attr]
            values, size = self._forward_backward(batch, 0, accumulate=1)
            self._optimizer_step()
        self.class_weights = None
        self._train_tracker.update(values, size)
        return self._batch_results(self._train_tracker, return_dict)

    def test_on_batch(
        self, x: Any, y: Any = None, sample_weight: Any = None, return_dict: bool = False
    ) -> float | list[float] | dict[str, float]:
        """The loss (and metrics) of one batch in eval mode, as `evaluate` returns them."""
        batch = self._single_batch(x, y, sample_weight)
        self._eval_tracker.reset()
        with self._inference():
            values, size = self._steps.test_batch(batch, 0)
        self._eval_tracker.update(values, size)
        return self._batch_results(self._eval_tracker, return_dict)

    def predict_on_batch(self, x: Any) -> Any:
        """The module's outputs for one batch, in eval mode, on the CPU."""
        batch = self._single_batch(x, None, None)
        with self._inference():
            outputs = self._steps.predict_batch(batch, 0)
        with expected_sync():
            return concatenate_outputs([outputs], gather=False)

    def _single_batch(
        self, x: Any, y: Any, sample_weight: Any, class_weight: Any = None
    ) -> tuple[Any, ...]:
        check_weights_reach(self, sample_weight, class_weight)
        with expected_sync():
            self.class_weights = class_weights_for(class_weight, sample_weight, self.device)
            return batch_from_arrays(x, y, sample_weight, self.device)

    def _batch_results(self, tracker: Any, return_dict: bool) -> Any:
        with expected_sync():
            return _results(tracker.logs(self._reduce), return_dict)

    @contextlib.contextmanager
    def _inference(self) -> Iterator[None]:
        """Eval mode and ``no_grad`` for evaluation and prediction, on the module without
        its DDP wrapper: evaluation shards may differ in length between ranks, so no
        forward may hold a collective. Buffers (BatchNorm statistics) are first taken from
        rank 0, as DDP's next forward would, so every rank scores with the saved model."""
        running = self._module
        inner = getattr(running, "_orig_mod", running)  # under torch.compile
        if isinstance(inner, DDP):
            if inner.broadcast_buffers:
                distributed.broadcast_buffers(inner.module)
            self._module = self.model  # (DDP may hold a training_step wrapper of it)
        elif distributed.is_active() and is_sharded(inner):  # FSDP2 leaves buffers unsynced
            distributed.broadcast_buffers(inner)
        try:
            with preserved_modes(self._module), torch.no_grad():
                self._module.eval()
                yield
        finally:
            self._module = running

    # -- callbacks -------------------------------------------------------------------------
    def _callback_list(
        self,
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
        callbacks = [*self._steps.callbacks(training), *(callbacks or [])]
        # On every rank (it prints on rank 0 only): every rank holds the same callbacks.
        show_progress = verbose != 0
        expose_on_module(self.model, self.optimizer)  # Keras callbacks' self.model.optimizer
        return CallbackList(
            callbacks,
            trainer=self,
            params={"verbose": verbose, "epochs": epochs, "steps": steps},
            add_history=training,
            add_progbar=show_progress,
        )

    def _validation_batches(
        self, validation_data: Any, batch_size: int | None
    ) -> TensorBatches | LoaderBatches | None:
        if validation_data is None:
            return None
        if isinstance(validation_data, tuple) and len(validation_data) in (2, 3):
            x_val, y_val, weights = (*validation_data, None)[:3]
            return make_batches(
                x_val, y_val, batch_size, False, self.device, self.rank, self.world_size,
                sample_weight=weights,
            )  # fmt: skip
        if isinstance(validation_data, tuple):
            raise ValueError(
                "validation_data must be (x_val, y_val), (x_val, y_val, sample_weight), a "
                "DataLoader, a Dataset or an iterable of batches; got a tuple of "
                f"{len(validation_data)} items."
            )
        return make_batches(
            validation_data, None, batch_size, False, self.device, self.rank, self.world_size
        )

    # -- checkpoints and resume (the state itself lives in resume_state.py) ---------------
    def checkpoint_state(
        self,
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

    def load_checkpoint_state(self, state: Mapping[str, Any], resume: bool = False) -> None:
        """Load the module, optimizer and scaler of a checkpoint; ``resume`` also schedules
        an exact resume of training (see `request_resume`)."""
        self._resume.load_weights_and_optimizer(state)
        if resume:
            self.request_resume(state)

    def running_logs(self) -> dict[str, Any]:
        """The running means of the loop in progress (training epoch or evaluation), as
        floats: what batch logs hold. One host sync; for callbacks that read them rarely."""
        return sanitize_logs(self._active_tracker.logs())

    def request_resume(self, state: Mapping[str, Any]) -> None:
        """Resume from ``state`` once every callback has run ``on_train_begin``."""
        self._resume.pending = state

    # -- summary ---------------------------------------------------------------------------
    def summary(self, input_data: Any = None, print_fn: Callable[[str], Any] | None = print) -> str:
        """Print and return Keras's table of the module's layers, output shapes and parameter
        counts. The shapes come from ``input_data``, else from the last `fit`'s first batch
        (one forward pass in eval mode, without gradients)."""
        from torchcallbacks.summary import summarize

        inputs = self.example_batch_inputs if input_data is None else input_data
        text = summarize(self.model, inputs, self.device)
        if print_fn is not None and self.is_main_process:
            print_fn(text)
        return text

    # -- files -----------------------------------------------------------------------------
    def save_weights(self, path: str) -> None:
        """Save the module's full ``state_dict`` (``.h5``/``.hdf5``: HDF5, else
        ``torch.save``). Under torchrun call it on every rank: rank 0 writes."""
        distributed_checkpoint.save_weights(self, path)

    def load_weights(self, path: str) -> None:
        """Load weights saved by `save_weights`, `save` or ModelCheckpoint into the module."""
        distributed_checkpoint.load_weights(self, path)

    def save(self, path: str) -> None:
        """Save a full checkpoint: module, optimizer, epoch, callbacks' state, RNG (a
        directory of shards under ``strategy="fsdp"``; call it on every rank)."""
        distributed_checkpoint.save_full(self, path)
        distributed_checkpoint.finish_saves()


def _results(logs: dict[str, Any], return_dict: bool) -> Any:
    """What Keras's evaluate and *_on_batch return: the logs, the loss alone, or a list."""
    if return_dict:
        return logs
    values = list(logs.values())
    return values[0] if len(values) == 1 else values


def _length(batches: TensorBatches | LoaderBatches) -> int | None:
    if isinstance(batches, LoaderBatches) and not batches.has_len():
        return None
    return len(batches)


def _should_validate(epoch: int, validation_freq: int | Sequence[int]) -> bool:
    if isinstance(validation_freq, int):
        if validation_freq < 1:
            raise ValueError(f"validation_freq must be >= 1, got {validation_freq}")
        return (epoch + 1) % validation_freq == 0
    return epoch + 1 in validation_freq
