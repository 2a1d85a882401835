"""Checkpoint and resume state: what a full checkpoint holds and how training resumes from it.

`ResumeState` belongs to one `Trainer`. It records where the loop is (epoch, batch, the
epoch's data order and the gradients accumulated since the last optimizer step), builds
the dict that full checkpoints and backups save (`checkpoint`), and puts a saved dict back
(`apply`, then `begin_epoch`) so that the resumed run continues as if never interrupted.

The data order comes from the trainer's own generator (in-memory data) and from every
``torch.Generator`` of the training DataLoader and its samplers: all are saved at the start
of each epoch (for a resume mid-epoch) and at its end.

A callback that saves during a hook (BackupAndRestore, ModelCheckpoint) writes at once, in
its own hook, as Keras does. The callbacks listed after it have not handled that batch or
epoch end yet: their states are marked ``replay`` with the hook's logs, and a resumed run
first calls that hook on them, so they end up as if the run had never stopped (a
ModelCheckpoint listed after a backup writes its file then: no best file is lost).

Callback states are matched to the rerun's callbacks by type, and in order among callbacks
of the same type; a saved state that matches nothing is named in a warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader

from torchcallbacks._version import __version__
from torchcallbacks.callbacks.base import Callback
from torchcallbacks.callbacks.callback_list import CallbackList
from torchcallbacks.checkpoints.files import FORMAT, is_full_checkpoint, load_states
from torchcallbacks.distributed import checkpoint as distributed_checkpoint
from torchcallbacks.distributed import process_group as distributed
from torchcallbacks.distributed.checkpoint import SHARDED_KEY, load_in_place
from torchcallbacks.distributed.fsdp import is_sharded
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
        self.loader_generators: list[torch.Generator] = []
        # The hook to finish on the callbacks that had not handled it when the resumed
        # checkpoint was written: (hook, argument, logs, callbacks).
        self._replay: tuple[str, int, dict[str, Any], list[Callback]] | None = None

    def track_data(self, data: Any) -> None:
        """Note the training data of this fit: the generators of a DataLoader decide its order."""
        loader = getattr(data, "loader", data)
        self.loader_generators = loader_generators(loader) if isinstance(loader, DataLoader) else []

    def _data_order_state(self) -> dict[str, Any]:
        return {
            "data_generator": self.data_generator.get_state(),
            "loader_generators": [g.get_state() for g in self.loader_generators],
        }

    def _set_data_order_state(self, state: Mapping[str, Any]) -> None:
        if state.get("data_generator") is not None:
            self.data_generator.set_state(state["data_generator"])
        saved = state.get("loader_generators") or []
        if saved and len(saved) != len(self.loader_generators):
            warnings.warn(
                f"The checkpoint holds the state of {len(saved)} DataLoader generator(s) but "
                f"this fit's DataLoader has {len(self.loader_generators)}: its order is not "
                "restored, so the resumed epochs see the data in another order.",
                stacklevel=4,
            )
            return
        for generator, generator_state in zip(self.loader_generators, saved):
            generator.set_state(generator_state)

    # -- saving ----------------------------------------------------------------------------
    def checkpoint(
        self,
        epoch: int | None = None,
        logs: Mapping[str, Any] | None = None,
        saved_by: Callback | None = None,
    ) -> dict[str, Any]:
        """Everything needed to reload or resume, as plain containers and live tensors.

        ``saved_by``: the callback writing it from its batch-end or epoch-end hook; the
        callbacks listed after it are saved for a replay of that hook with ``logs``.
        """
        trainer = self.trainer
        running = trainer._callbacks
        callbacks = running.callbacks if running is not None else []
        states = callback_states(callbacks, saved_by)
        position = self._position()
        if any(entry["replay"] for entry in states):
            if self.in_epoch:
                position["replay"] = ["on_train_batch_end", self.batch_index, dict(logs or {})]
            else:
                position["replay"] = ["on_epoch_end", trainer.current_epoch, dict(logs or {})]
        optimizer, scaler = trainer.optimizer, trainer.scaler
        state = {
            "format": FORMAT,
            "version": __version__,
            "model": trainer.model.state_dict(),
            "optimizer": None if optimizer is None else optimizer.state_dict(),
            # checked when loading (older files lack it: the class is inferred)
            "optimizer_class": None if optimizer is None else type(optimizer).__name__,
            "scaler": None if scaler is None else scaler.state_dict(),
            "ema": None if trainer.ema is None else trainer.ema.state_dict(),
            "epoch": trainer.current_epoch if epoch is None else epoch,
            "global_step": trainer.global_step,
            "callbacks": states,
            "rng": get_rng_state(),
            "training": position,
            "logs": dict(logs or {}),
        }
        others = trainer._kind.all_optimizers()[1:]  # several (manual optimization)
        if others:
            state["extra_optimizers"] = [other.state_dict() for other in others]
        trainer._kind.on_save_checkpoint(state)  # e.g. a LightningModule's on_save_checkpoint
        return state

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
            **self._data_order_state(),
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
    def load_weights_and_optimizer(
        self, state: Mapping[str, Any], source: str = "the checkpoint"
    ) -> None:
        """Load the module, optimizer, scaler, EMA and step count of a checkpoint, all or
        nothing (``source`` names the file in errors)."""
        trainer = self.trainer
        trainer._kind.on_load_checkpoint(state)  # e.g. a LightningModule's on_load_checkpoint
        optimizer, scaler = trainer.optimizer, trainer.scaler
        others = list(zip(trainer._kind.all_optimizers()[1:], state.get("extra_optimizers") or []))
        scaler_state = None if scaler is None else state.get("scaler") or None
        ema = None if trainer.ema is None or state.get("ema") is None else trainer.ema
        if SHARDED_KEY in state:  # a DCP directory: loaded (and resharded) in place
            load_in_place(
                trainer.model,
                optimizer,
                state[SHARDED_KEY],
                state.get("optimizer_class"),
                scaler=None if scaler_state is None else (scaler, scaler_state),
                ema=None if ema is None else (ema, state["ema"]),
            )
        elif distributed.is_active() and is_sharded(trainer.model):
            raise ValueError(
                f"{source} is a single-file checkpoint, written without FSDP2 sharding: it "
                "cannot be resumed into a sharded module. Resume it with strategy='ddp' (or in "
                "one process), or start from its weights with trainer.load_weights(path) "
                "before fit."
            )
        else:
            load_states(
                source,
                model=(trainer.model, state["model"]),
                optimizer=None
                if optimizer is None or state.get("optimizer") is None
                else (optimizer, state["optimizer"]),
                scaler=None if scaler_state is None else (scaler, scaler_state),
                others=others,
                ema=None if ema is None else (ema, state["ema"]),
                optimizer_class=state.get("optimizer_class"),
            )
        trainer.global_step = int(state.get("global_step", trainer.global_step))

    def request_from_file(self, path: str) -> None:
        """Resume from the full checkpoint at ``path`` (`fit`'s ``resume_from``)."""
        state = distributed_checkpoint.read_full(path)
        if not is_full_checkpoint(state):
            raise ValueError(
                f"resume_from={path!r} holds weights only; resuming needs a full checkpoint "
                "(trainer.save, or ModelCheckpoint(save_weights_only=False)). To start from "
                "these weights, call trainer.load_weights(path) before fit."
            )
        self.pending = {**state, "source": path, "source_kind": "checkpoint"}  # named in errors

    def apply(self, state: Mapping[str, Any], callbacks: CallbackList) -> tuple[int, int]:
        """Load a checkpoint into the trainer and its callbacks (after their
        ``on_train_begin``); return the epoch and the batch to resume at."""
        self.load_weights_and_optimizer(state, state.get("source", "the checkpoint"))
        position = state["training"]
        epoch, batch = int(position["epoch"]), int(position["batch"])
        self._announce(state, epoch, batch, callbacks.params.get("epochs"))
        replay = []
        for callback, entry in match_callback_states(state.get("callbacks"), callbacks.callbacks):
            callback.load_state_dict(entry["state"])
            if entry.get("replay"):
                replay.append(callback)
        self.trainer.global_train_batch = int(position["global_train_batch"])
        if batch == 0:
            set_rng_state(state["rng"])
            self._set_data_order_state(position)
        hook = position.get("replay")
        self._replay = None if hook is None or not replay else (*hook, replay)
        if batch == 0:
            self.finish_interrupted_hook()
            if self.trainer.stop_training:  # the replayed epoch end stopped training
                epoch = max(epoch, int(callbacks.params.get("epochs", epoch)))
        return epoch, batch

    def _announce(
        self, state: Mapping[str, Any], epoch: int, batch: int, epochs: int | None
    ) -> None:
        """Print (rank 0, whatever ``verbose``) where training resumes, before any bar:
        ``epoch`` 0-based (printed as the progress bar numbers it), ``batch`` the batches
        of it already trained (where its bar continues)."""
        if not self.trainer.is_main_process:
            return
        source = state.get("source")
        kind = state.get("source_kind", "checkpoint")
        where = f" ({kind} {source!r})" if isinstance(source, str) else ""
        if batch:
            done = f"epoch {epoch + 1} goes on after its first {batch} batch(es)"
        elif epochs is not None and epoch >= epochs:
            done = f"all {epochs} epoch(s) are done"
        else:
            done = f"{epoch}{'' if epochs is None else f' of {epochs}'} epoch(s) done"
        print(f"Resuming from epoch {epoch + 1}, batch {batch}{where}: {done}.", flush=True)

    def finish_interrupted_hook(self) -> None:
        """Call the hook the checkpoint was written in on the callbacks that had not
        handled it yet (after the resumed epoch's ``on_epoch_begin`` for a batch end)."""
        if self._replay is None:
            return
        hook, argument, logs, callbacks = self._replay
        self._replay = None
        logs = dict(logs)  # one dict for them all, as in a dispatch: "lr" reaches CSVLogger
        for callback in callbacks:
            if hook == "on_train_batch_end":
                callback.on_train_batch_end(argument, logs=logs)
            else:
                getattr(callback, hook)(argument, logs)

    def begin_epoch(self, resume: Mapping[str, Any] | None) -> None:
        """Reset the epoch accumulators, or restore them and the epoch's data order."""
        tracker = self.trainer._train_tracker
        self.trainer.epoch_start_batch = 0 if resume is None else int(resume["training"]["batch"])
        if resume is None:
            tracker.reset()
            self._epoch_start = {**self._data_order_state(), "torch": torch.get_rng_state()}
            return
        position = resume["training"]
        self._epoch_start = position["epoch_start"]
        self._set_data_order_state(self._epoch_start)
        torch.set_rng_state(self._epoch_start["torch"])
        # Metric objects keep their own state, which is not saved: they restart empty and
        # cover the batches after the resume.
        tracker.reset()
        tracker.load_state_dict(position["tracker"], self.trainer.device)
        objects = tracker.metric_objects()
        if objects and self.trainer.epoch_start_batch:
            warnings.warn(
                f"Resuming inside epoch {self.trainer.current_epoch + 1}: the metric objects "
                f"{objects} restart empty, so this epoch's training value of each leaves out "
                f"its first {self.trainer.epoch_start_batch} batches (the loss, the "
                "built-in metrics and the validation values are exact). A backup at each "
                "epoch end (BackupAndRestore(save_freq='epoch')) resumes them exactly.",
                stacklevel=2,
            )

    def restore_gradients(self, resume: Mapping[str, Any] | None) -> bool:
        """Put back the gradients accumulated before the checkpoint; True if there were."""
        gradients = None if resume is None else resume["training"].get("gradients")
        if gradients is None:
            return False
        for parameter, gradient in zip(self._parameters(), gradients):
            parameter.grad = None if gradient is None else gradient.to(parameter.device)
        return True


def loader_generators(loader: DataLoader) -> list[torch.Generator]:
    """The distinct ``torch.Generator`` objects that decide a DataLoader's order and worker
    seeds: its own ``generator`` and those of its sampler and batch sampler (and theirs)."""
    found: list[torch.Generator] = []
    objects: list[Any] = [loader]
    for owner in (loader, getattr(loader, "batch_sampler", None)):
        objects.append(getattr(owner, "sampler", None))
    objects.append(getattr(loader, "batch_sampler", None))
    for owner in objects:
        generator = getattr(owner, "generator", None)
        if isinstance(generator, torch.Generator) and all(generator is not g for g in found):
            found.append(generator)
    return found


def callback_states(callbacks: Iterable[Callback], saved_by: Callback | None) -> list[dict]:
    """``{"type", "state", "replay"}`` for each callback that has a state, in list order;
    ``replay`` marks those listed after ``saved_by``."""
    entries = []
    after = False
    for callback in callbacks:
        state = callback.state_dict()
        if state:
            entries.append({"type": type(callback).__name__, "state": state, "replay": after})
        after = after or callback is saved_by
    return entries


def match_callback_states(
    saved: Any, callbacks: Iterable[Callback]
) -> list[tuple[Callback, Mapping[str, Any]]]:
    """Pair saved states with callbacks by type, in order among callbacks of one type, and
    warn about every saved state that matched nothing (it is not restored)."""
    if isinstance(saved, Mapping):  # older checkpoints: {"<index>:<type>": state}
        ordered = sorted(saved.items(), key=lambda item: int(str(item[0]).split(":", 1)[0]))
        saved = [
            {"type": str(key).split(":", 1)[1], "state": state, "replay": False}
            for key, state in ordered
            if state
        ]
    queues: dict[str, list[Mapping[str, Any]]] = {}
    for entry in saved or []:
        queues.setdefault(entry["type"], []).append(entry)
    taken: dict[str, int] = {}
    pairs = []
    for callback in callbacks:
        name = type(callback).__name__
        index = taken.get(name, 0)
        if index < len(queues.get(name, [])):
            pairs.append((callback, queues[name][index]))
            taken[name] = index + 1
    unmatched = [
        f"{name} #{index + 1}"
        for name, entries in queues.items()
        for index in range(taken.get(name, 0), len(entries))
    ]
    if unmatched:
        warnings.warn(
            f"The checkpoint holds the state of {', '.join(unmatched)} (numbered in order among "
            "the callbacks of that type), which no callback of this fit matches: that state "
            "is not restored. Pass the same callbacks as the run that wrote the checkpoint to "
            "continue them.",
            stacklevel=4,
        )
    return pairs
