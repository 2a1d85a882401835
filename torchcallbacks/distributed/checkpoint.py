"""Checkpoints of distributed runs: each rank's resume state, the same-backup check, and
``torch.distributed.checkpoint`` (DCP) directories for sharded (FSDP2) modules.

Every function here is called on every rank at the same point (they hold collectives);
only rank 0 writes single files.

- Weights files (`save_weights`) always hold the full ``state_dict``: gathered from the
  shards of a sharded module (CPU-offloaded), written by rank 0.
- Full checkpoints and backups (`save_full`) of a plain or DDP module are one file written
  by rank 0. Of a sharded module they are a DCP directory: every rank writes its shards
  of the module and optimizer, and rank 0 adds ``state.pt`` with the rest (epoch, callbacks,
  position). `load_sharded_checkpoint` loads such a directory into a plain module in one
  process, and `load_in_place` into a sharded module on any number of ranks.
- Both hold each rank's own RNG states, epoch accumulators and accumulated gradients
  (``"ranks"``), so that a resumed group continues exactly (`for_this_rank`).
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from torchcallbacks.checkpoints import files as checkpoint_io
from torchcallbacks.distributed import process_group as distributed
from torchcallbacks.distributed.fsdp import is_sharded
from torchcallbacks.rng import get_rng_state

if TYPE_CHECKING:
    from torchcallbacks.callbacks.base import Callback
    from torchcallbacks.trainer import Trainer

STATE_FILE = "state.pt"  # inside a DCP directory: everything but the module and optimizer
SHARDED_KEY = "sharded_checkpoint"  # in a loaded state: the DCP directory it came from


# -- each rank's part --------------------------------------------------------------------------
def _local_state(trainer: Trainer) -> dict[str, Any]:
    """What differs between ranks: RNG states, epoch accumulators, accumulated gradients."""
    position = trainer._resume._position()
    if position.get("gradients") is not None and is_sharded(trainer.model):
        raise ValueError(
            "A checkpoint between two optimizer steps of gradient accumulation cannot be "
            "resumed exactly under strategy='fsdp' (the accumulated gradients are sharded "
            "state of FSDP's own): make BackupAndRestore's or ModelCheckpoint's save_freq a "
            "multiple of accumulate_grad_batches."
        )
    return {
        "rng": get_rng_state(),
        "tracker": position.get("tracker"),
        "epoch_start": position.get("epoch_start"),
        "gradients": position.get("gradients"),
    }


def _gather_local_states(trainer: Trainer) -> list[dict[str, Any]] | None:
    """Every rank's `_local_state`, on rank 0 (None elsewhere and in a single process)."""
    if not distributed.is_active():
        return None
    gathered: list[Any] | None = None
    if trainer.is_main_process:
        gathered = [None] * distributed.world_size()
    dist.gather_object(_local_state(trainer), gathered, dst=0)
    return gathered


def for_this_rank(state: Mapping[str, Any]) -> Mapping[str, Any]:
    """The checkpoint as this rank resumes it: its own RNG states, accumulators and
    gradients. Saved by another number of ranks, the position mid-epoch is converted to
    global samples and the accumulators are summed on rank 0 (a warning says what is
    not exact)."""
    rank, world_size = distributed.rank(), distributed.world_size()
    position = dict(state["training"])
    ranks = state.get("ranks")
    if not ranks and world_size > 1:  # written by a single process
        ranks = [{"rng": state["rng"], "gradients": position.get("gradients")}]
        ranks[0].update(tracker=position.get("tracker"), epoch_start=position.get("epoch_start"))
    if not ranks:
        return state
    saved_size = len(ranks)
    state = copy.copy(dict(state))
    if saved_size == world_size:
        own = ranks[rank]
        state["rng"] = own["rng"]
        if position["batch"]:
            position.update(tracker=own["tracker"], epoch_start=own["epoch_start"])
            position["gradients"] = own["gradients"]
        state["training"] = position
        return state
    state["rng"] = ranks[rank % saved_size]["rng"]
    message = (
        f"Resuming on {world_size} process(es) a checkpoint written by {saved_size}: the "
        "weights, optimizer and callbacks resume exactly, but random numbers (dropout, "
        "augmentation) differ from an uninterrupted run"
    )
    if position["batch"]:
        # The position in global samples (with the same per-process batch size): the
        # samples the saved processes had seen are skipped, each once.
        seen = position["batch"] * saved_size
        batch = seen // world_size
        message += f"; the epoch continues at batch {batch}, after the samples already seen"
        if seen % world_size:
            message += (
                f" (rounded down: {seen} batches of one process do not divide by "
                f"{world_size}, so a few samples are seen twice this epoch)"
            )
        message += ", and the epoch's logs sum the saved ranks' accumulators"
        position["batch"] = batch
        position["tracker"] = _summed_trackers(ranks) if rank == 0 else _empty_tracker(ranks)
        position["epoch_start"] = ranks[rank % saved_size]["epoch_start"]
        if any(r["gradients"] is not None for r in ranks):
            message += "; gradients accumulated since the last step are dropped"
        position["gradients"] = None
    state["training"] = position
    if rank == 0:
        warnings.warn(message + ".", stacklevel=2)
    return state


def _summed_trackers(ranks: list[dict[str, Any]]) -> dict[str, Any]:
    trackers = [r["tracker"] for r in ranks if r["tracker"] and r["tracker"]["sums"] is not None]
    if not trackers:
        return _empty_tracker(ranks)
    sums = torch.stack([t["sums"] for t in trackers]).sum(0)
    return {"sums": sums, "count": sum(int(t["count"]) for t in trackers)}


def _empty_tracker(ranks: list[dict[str, Any]]) -> dict[str, Any]:
    return {"sums": None, "count": 0}


# -- saving -------------------------------------------------------------------------------------
def _full_weights(model: torch.nn.Module) -> dict[str, Any] | None:
    """A sharded module's full ``state_dict``, gathered from its shards and offloaded to the
    CPU (a collective: call it on every rank); None for a module that is not sharded."""
    if not (distributed.is_active() and is_sharded(model)):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options)


def save_weights(trainer: Trainer, path: str | os.PathLike) -> None:
    """The full ``state_dict`` to ``path``, written by rank 0 (call it on every rank: a
    sharded module's shards are gathered first, offloaded to the CPU)."""
    model = trainer.model
    weights = _full_weights(model)
    if trainer.is_main_process:
        if weights is None:
            checkpoint_io.save_weights(model, path)
        else:
            checkpoint_io.save_state_dict(weights, path)


def save_pretrained(trainer: Trainer, path: str | os.PathLike) -> None:
    """The module's ``save_pretrained`` folder (a HuggingFace model: its config and
    ``model.safetensors``) at ``path``, written by rank 0 (call it on every rank). It is
    written into ``path.partial`` and then moved into place, so a crash never leaves a
    half-written folder at ``path``."""
    path = os.fspath(path)
    weights = _full_weights(trainer.model)
    if not trainer.is_main_process:
        return
    partial = f"{path}.partial"
    _remove_path(partial)
    try:
        if weights is None:
            trainer.model.save_pretrained(partial)
        else:
            trainer.model.save_pretrained(partial, state_dict=weights)
    except BaseException:
        _remove_path(partial)
        raise
    _move_into_place(partial, path)


def save_full(
    trainer: Trainer,
    path: str | os.PathLike,
    epoch: int | None = None,
    logs: Mapping[str, Any] | None = None,
    saved_by: Callback | None = None,
) -> None:
    """A full checkpoint of the trainer (call it on every rank): a file written by rank 0,
    or, for a sharded module, a DCP directory written by every rank. ``saved_by``: the
    callback saving from its own hook (see `Trainer.checkpoint_state`)."""
    path = os.fspath(path)
    checkpoint_io.check_full_checkpoint_path(path)  # on every rank, before any collective
    ranks = _gather_local_states(trainer)
    if distributed.is_active() and is_sharded(trainer.model):
        _save_sharded(trainer, path, epoch, logs, ranks, saved_by)
        return
    if trainer.is_main_process:
        state = trainer.checkpoint_state(epoch=epoch, logs=logs, saved_by=saved_by)
        if ranks is not None:
            state["ranks"] = ranks
        if is_sharded_checkpoint(path):  # a sharded backup resumed without sharding
            shutil.rmtree(path)
        checkpoint_io.save_checkpoint(path, state)


def _sharded_state_dict(trainer: Trainer) -> dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    state = {"model": get_model_state_dict(trainer.model)}
    if trainer.optimizer is not None:
        state["optimizer"] = get_optimizer_state_dict(trainer.model, trainer.optimizer)
    return state


def _save_sharded(
    trainer: Trainer,
    path: str,
    epoch: int | None,
    logs: Mapping[str, Any] | None,
    ranks: list[dict[str, Any]] | None,
    saved_by: Callback | None,
) -> None:
    """Every rank writes its shards into ``path.partial``; rank 0 then adds ``state.pt`` and
    swaps the directory in, so a crash never leaves a half-written checkpoint at ``path``.

    With ``Trainer(async_save=True)`` the shards are copied to the CPU and written in the
    background (``torch.distributed.checkpoint.async_save``); training goes on, and the
    swap happens when the next save starts or `fit` ends (at most one save in flight).
    """
    import torch.distributed.checkpoint as dcp

    finish_saves()
    partial = f"{path}.partial"
    main = trainer.is_main_process
    if main:
        shutil.rmtree(partial, ignore_errors=True)
    dist.barrier()
    state = None
    if main:  # captured now: the callbacks and position of this save
        state = trainer.checkpoint_state(epoch=epoch, logs=logs, saved_by=saved_by)
        del state["model"], state["optimizer"]  # in the shards
        state = copy.deepcopy(state)
        state["ranks"] = ranks
    if getattr(trainer, "async_save", False):
        future = dcp.async_save(
            _sharded_state_dict(trainer), checkpoint_id=partial, process_group=_cpu_group()
        )
        _in_flight.append((future, lambda: _swap_in(partial, path, state)))
        return
    dcp.save(_sharded_state_dict(trainer), checkpoint_id=partial)
    dist.barrier()  # every shard is on disk
    _swap_in(partial, path, state)


def _swap_in(partial: str, path: str, state: dict[str, Any] | None) -> None:
    """Rank 0 (``state`` given): ``state.pt`` into the written directory, then rename it."""
    if state is None:
        return
    checkpoint_io.save_checkpoint(os.path.join(partial, STATE_FILE), state)
    _move_into_place(partial, path)


def _move_into_place(partial: str, path: str) -> None:
    """Rename the written directory ``partial`` to ``path``, replacing what ``path`` held."""
    old = f"{path}.old"
    _remove_path(old)
    if os.path.exists(path):  # a directory of an earlier save, or a single-file checkpoint
        os.replace(path, old)
    os.replace(partial, path)
    _remove_path(old)


def _remove_path(path: str) -> None:
    """Delete a file or a directory tree, if there is one."""
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


_in_flight: list[tuple[Any, Any]] = []  # (future, finish) of the asynchronous save, if any
_cpu_groups: list[Any] = []


def _cpu_group() -> Any:
    """A gloo group of its own for the background save: its collectives run while the
    training's collectives go on in the default group (and NCCL's cannot run on a thread)."""
    if not _cpu_groups:
        _cpu_groups.append(dist.new_group(backend="gloo"))
    return _cpu_groups[0]


def finish_saves() -> None:
    """Wait for the asynchronous save in flight, and put it in place (every rank)."""
    while _in_flight:
        future, finish = _in_flight.pop()
        future.result()  # on rank 0, done means every rank's shards and the metadata are
        finish()


# -- loading ------------------------------------------------------------------------------------
def is_sharded_checkpoint(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a DCP directory written by `save_full`."""
    return os.path.isfile(os.path.join(os.fspath(path), STATE_FILE))


def _check_sharded(path: str) -> None:
    if not is_sharded_checkpoint(path):
        hint = ""
        if os.path.isfile(os.path.join(path, "config.json")):
            hint = (
                ": it looks like a save_pretrained folder, which the model class's "
                "from_pretrained(path) loads"
            )
        raise checkpoint_io.CheckpointFileError(
            path, f"is a directory but not a sharded checkpoint (no {STATE_FILE} in it){hint}"
        )


def read_full(path: str | os.PathLike) -> dict[str, Any]:
    """A full checkpoint's dict; for a DCP directory, ``state.pt`` with the directory under
    ``SHARDED_KEY`` (the module and optimizer are loaded by `load_in_place`)."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        return checkpoint_io.load_file(path)
    _check_sharded(path)
    state = checkpoint_io.load_file(os.path.join(path, STATE_FILE))
    state[SHARDED_KEY] = path
    return state


def load_in_place(
    model: torch.nn.Module,
    optimizer: Any,
    path: str,
    optimizer_class: str | None = None,
    scaler: tuple[Any, Mapping[str, Any]] | None = None,
    ema: tuple[Any, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Load a DCP directory into ``model`` (sharded on any number of ranks, or plain in one
    process) and ``optimizer``, then the ``(object, state)`` pairs ``scaler`` and ``ema``
    (loaded last: it checks the state before it writes); return the module's loaded
    ``state_dict``.

    ``optimizer_class`` (the class name ``state.pt`` records) is checked first. A plain
    module, its optimizer and the scaler are put back as they were when anything fails (DCP
    loads in place, and reading an optimizer's state dict creates its state).
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    _check_sharded(path)
    model = checkpoint_io._plain_module(model)
    # A plain module loads the whole checkpoint by itself, on whichever rank calls this.
    plain = not (distributed.is_active() and is_sharded(model))
    if optimizer is not None:
        checkpoint_io.check_optimizer_class(path, optimizer, optimizer_class)
    restorable = [model, optimizer, scaler and scaler[0]] if plain else []
    restore = checkpoint_io.snapshot(target for target in restorable if target is not None)
    try:
        state = {"model": get_model_state_dict(model)}
        if optimizer is not None:
            state["optimizer"] = get_optimizer_state_dict(model, optimizer)
        with warnings.catch_warnings():  # "assuming the intent is to load in a single process"
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            try:
                dcp.load(state, checkpoint_id=path, no_dist=plain)
            except CheckpointException as error:  # a BaseException: `except Exception` misses it
                # its text is every rank's traceback: the last line says what is wrong
                cause = str(error).strip().splitlines()[-1][:300]
                raise checkpoint_io.CheckpointFileError(
                    path,
                    f"cannot be loaded into {type(model).__name__} (damaged, or another "
                    f"model's checkpoint): {cause}. Nothing was changed",
                ) from None
        set_model_state_dict(model, state["model"])
        if optimizer is not None:
            set_optimizer_state_dict(model, optimizer, state["optimizer"])
        for target, saved in (pair for pair in (scaler, ema) if pair is not None):
            target.load_state_dict(saved)
    except BaseException:
        restore()
        raise
    return state["model"]


def load_checkpoint(
    path: str | os.PathLike,
    model: torch.nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> dict[str, Any]:
    """Load a weights file or a full checkpoint (``.pt`` or HDF5) into a model and optimizer.

    Returns the loaded dict (the ``state_dict`` for a weights file; for a full checkpoint
    ``{"model", "optimizer", "epoch", "logs", ...}``)::

        model = Net()
        optimizer = torch.optim.Adam(model.parameters())
        state = load_checkpoint("ckpt/03-0.41.pt", model, optimizer)
        state["epoch"], state["logs"]

    A sharded checkpoint's directory is loaded too. All or nothing: when the file cannot be
    read, or does not fit the model or optimizer, the error names the file and both are left
    exactly as they were.
    """
    if os.path.isdir(path):  # a sharded (DCP) checkpoint directory
        return load_sharded_checkpoint(path, model, optimizer)
    data = checkpoint_io.load_file(path)
    full = checkpoint_io.is_full_checkpoint(data)
    if optimizer is not None and (not full or data.get("optimizer") is None):
        raise ValueError(
            f"{os.fspath(path)!r} holds no optimizer state (it is a weights-only file); "
            "call load_checkpoint(path, model) without an optimizer, or save a full "
            "checkpoint (ModelCheckpoint(save_weights_only=False) or trainer.save(path))."
        )
    checkpoint_io.load_states(
        path,
        model=None if model is None else (model, data["model"] if full else data),
        optimizer=None if optimizer is None else (optimizer, data["optimizer"]),
        optimizer_class=data.get("optimizer_class") if full else None,
    )
    return data


def load_sharded_checkpoint(
    path: str | os.PathLike, model: torch.nn.Module | None, optimizer: Any
) -> dict[str, Any]:
    """`load_checkpoint` for a DCP directory: loads the module (and the
    optimizer) and returns the checkpoint's dict with the module's weights under "model"."""
    state = read_full(path)
    if model is not None:
        state["model"] = load_in_place(
            model, optimizer, os.fspath(path), state.get("optimizer_class")
        )
    elif optimizer is not None:
        raise ValueError("Loading the optimizer of a sharded checkpoint needs its model too.")
    return state


def load_weights(trainer: Trainer, path: str | os.PathLike) -> None:
    """A weights file or a checkpoint into the trainer's module (full weights are sharded
    on load for a sharded module; every rank reads the file)."""
    model = trainer.model
    if os.path.isdir(os.fspath(path)):
        load_in_place(model, None, os.fspath(path))
        return
    if not (distributed.is_active() and is_sharded(model)):
        load_checkpoint(path, model=model)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    data = checkpoint_io.load_file(path)
    weights = data["model"] if checkpoint_io.is_full_checkpoint(data) else data
    weights = checkpoint_io.module_keys(model, weights)  # a compiled module's `_orig_mod.` keys
    set_model_state_dict(model, weights, options=StateDictOptions(full_state_dict=True))


# -- backups ------------------------------------------------------------------------------------
def _describe(state: Mapping[str, Any] | None) -> str:
    if state is None:
        return "no backup"
    position = state.get("training") or {}
    return (
        f"a backup at epoch {position.get('epoch')}, batch {position.get('batch')} "
        f"(global step {state.get('global_step')})"
    )


def load_backup(trainer: Trainer, path: str, backup_dir: str) -> dict[str, Any] | None:
    """The backup at ``path`` (None when there is none), after every rank has checked that
    all of them see the same one; otherwise every rank raises the same error."""
    state: dict[str, Any] | None = None
    error: Exception | None = None
    try:
        if os.path.exists(path):
            state = read_full(path)
        seen = _describe(state)
    except Exception as failure:  # reported after the check, so no rank is left waiting
        error, seen = failure, f"an unreadable backup ({type(failure).__name__})"
    if distributed.is_active():
        everyone: list[Any] = [None] * distributed.world_size()
        dist.all_gather_object(everyone, seen)
        if len(set(everyone)) > 1:
            views = ", ".join(f"rank {r}: {s}" for r, s in enumerate(everyone))
            raise RuntimeError(
                f"BackupAndRestore: the processes do not see the same backup in "
                f"{backup_dir!r} ({views}). backup_dir must be one folder that every process "
                "reads and writes: on several nodes, a shared filesystem (NFS, Lustre, a "
                "mounted bucket), not a node-local disk. Point backup_dir to a shared "
                "folder, or delete the stale backups to start again."
            )
    if error is not None:
        raise error
    return state


def remove(path: str) -> None:
    """Delete a backup file or DCP directory (rank 0)."""
    finish_saves()
    _remove_path(path)
