"""Checkpoint files: safe loading, atomic writes, ``.pt``, HDF5 and safetensors formats.

Two kinds of file, in formats chosen by the extension (``.h5``/``.hdf5`` is HDF5 written
with h5py, ``.safetensors`` the safetensors format, anything else `torch.save`):

- *weights*: exactly the module's ``state_dict`` (`save_weights`), in any of the three;
- *full checkpoints*: the dict of `Trainer.checkpoint_state` (`save_checkpoint`): module,
  optimizer, epoch, callback states, RNG states and the exact-resume state, all tensors and
  plain containers. A safetensors file holds named tensors only, so full checkpoints are
  ``.pt`` or HDF5 files (a ``.safetensors`` path for one raises a ``ValueError``).

Loading never unpickles arbitrary objects: ``.pt`` files go through
``torch.load(weights_only=True)``, HDF5 files hold only datasets and JSON attributes, and
safetensors files only a JSON header and the tensors' bytes.
Every write goes to a temporary file in the target's folder, is flushed to disk and then
renamed over the target, so a crash never leaves a truncated file under the final name.
The HDF5 layout is documented in ``docs/checkpoint_format.md``.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import io
import json
import os
import pickle
import uuid
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, BinaryIO

import numpy as np
import torch

from torchcallbacks.utils import original_module, require

FORMAT = "torchcallbacks.checkpoint"
WEIGHTS_FORMAT = "torchcallbacks.weights"
HDF5_SUFFIXES = (".h5", ".hdf5")
SAFETENSORS_SUFFIX = ".safetensors"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_ZIP_MAGIC = b"PK\x03\x04"
# HDF5 names of the top-level entries of a full checkpoint that differ from the dict keys.
_H5_GROUP_NAMES = {"model": "model_weights"}
# Same-width integer types for the torch dtypes NumPy (hence HDF5) cannot represent.
# Stored as unsigned ints of the width; read back through the signed torch view type.
_BITCAST = {1: torch.uint8, 2: torch.int16, 4: torch.int32}
# The only names a dataset's ``torch_dtype`` attribute may hold (those of this torch).
_BITCAST_DTYPES = {
    name: getattr(torch, name)
    for name in (
        "bfloat16",
        "complex32",
        "float8_e4m3fn",
        "float8_e4m3fnuz",
        "float8_e5m2",
        "float8_e5m2fnuz",
        "float8_e8m0fnu",
        "float4_e2m1fn_x2",
    )
    if isinstance(getattr(torch, name, None), torch.dtype)
}
_PLAIN_LEAVES = (torch.Tensor, type(None), bool, int, float, str)


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint file holds pickled objects other than tensors and plain containers."""


class CheckpointFileError(ValueError):
    """A file cannot be loaded as a checkpoint: empty, truncated, damaged, not a checkpoint,
    or not matching the model. The message names the file (``path``) and what is wrong."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path!r} {problem}.")
        self.path = path


# -- atomic writes ---------------------------------------------------------------------------
@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically.

    The temporary file is fsync'ed before ``os.replace`` (and the folder after it). If the
    block raises, the temporary file is removed and any previous ``path`` is left intact.
    Temporary files left by an earlier write of the same ``path`` that was killed are
    removed once this one succeeds::

        with atomic_write("ckpt/model.pt") as tmp:
            torch.save(state, tmp)
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex[:12]}.tmp")
        # os.open with 0o666 lets the umask decide the final file's permissions, as open() does.
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as error:
        raise write_error(path, error) from error
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        if isinstance(error, OSError) and error.filename is None:
            raise write_error(path, error) from error
        raise
    if os.name == "posix":  # make the rename itself durable (not every filesystem can)
        with contextlib.suppress(OSError):
            _fsync(folder, os.O_RDONLY)
    _remove_leftovers(folder, os.path.basename(path))


def _remove_leftovers(folder: str, name: str) -> None:
    """Remove ``.<name>.<12 hex>.tmp`` files: earlier writes of ``name`` that were killed."""
    with contextlib.suppress(OSError):
        for entry in os.listdir(folder):
            middle = entry.removeprefix(f".{name}.").removesuffix(".tmp")
            if entry == f".{name}.{middle}.tmp" and len(middle) == 12 and _is_hex(middle):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(folder, entry))


def _is_hex(text: str) -> bool:
    return all(char in "0123456789abcdef" for char in text)


def write_atomically(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, then rename it over ``path``.

    The bytes go through a Python file object, so a full disk raises ``OSError(ENOSPC)`` (torch's
    own file writer would report ``unexpected pos``); any failure raises an ``OSError`` naming
    ``path`` and the cause, removes the temporary file and leaves a previous ``path`` intact.
    """
    with atomic_write(path) as tmp, open(tmp, "wb") as file:
        try:
            write(file)
        except RuntimeError as error:  # torch's writer reports the OSError of the file object
            cause = _os_error_in(error)
            if cause is None:
                raise
            raise write_error(os.fspath(path), cause) from error


def _os_error_in(error: BaseException) -> OSError | None:
    """The OSError among ``error``'s causes and contexts, if any."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def write_error(path: str, error: OSError) -> OSError:
    """``error`` again, as an OSError of the same errno that names ``path`` and the cause."""
    cause = error.strerror or str(error)
    hint = ""
    if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        hint = " Free some space (or choose another folder) and run again."
    elif error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = " Choose a folder this process can write to."
    return OSError(error.errno, f"cannot write {path!r}: {cause}.{hint}", path)


def _fsync(path: str, flags: int = os.O_RDWR) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- saving ----------------------------------------------------------------------------------
def is_hdf5_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` names an HDF5 file (``.h5``/``.hdf5``)."""
    return os.fspath(path).lower().endswith(HDF5_SUFFIXES)


def is_safetensors_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a safetensors file (``.safetensors``)."""
    return os.fspath(path).lower().endswith(SAFETENSORS_SUFFIX)


def check_full_checkpoint_path(path: str | os.PathLike) -> None:
    """Raise a ``ValueError`` when ``path`` cannot hold a full checkpoint (``.safetensors``)."""
    if is_safetensors_path(path):
        raise ValueError(
            f"{os.fspath(path)!r}: a .safetensors file holds weights only (named tensors), "
            "not the optimizer, callback and resume state of a full checkpoint. Save the "
            "weights there (save_weights, or ModelCheckpoint(..., save_weights_only=True)), "
            "or give a full checkpoint a .pt or .h5 path."
        )


def save_weights(module: torch.nn.Module, path: str | os.PathLike) -> None:
    """Write ``module.state_dict()`` to ``path`` atomically (HDF5 for ``.h5``/``.hdf5``,
    safetensors for ``.safetensors``)."""
    save_state_dict(_plain_module(module).state_dict(), path)


def save_state_dict(weights: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write a module's ``state_dict`` as `save_weights` does."""
    if is_hdf5_path(path):
        _save_h5(path, {"model": weights}, WEIGHTS_FORMAT)
    elif is_safetensors_path(path):
        _save_safetensors(path, weights)
    else:
        write_atomically(path, lambda file: torch.save(weights, file))


def save_checkpoint(path: str | os.PathLike, state: Mapping[str, Any]) -> None:
    """Write a full checkpoint (the dict of `Trainer.checkpoint_state`) to ``path`` atomically.

    Only tensors, ``None``/bool/int/float/str and dict/list/tuple containers are accepted, so
    that the file loads with ``torch.load(weights_only=True)``; anything else raises a
    ``TypeError`` naming where it is before a byte is written.
    """
    check_full_checkpoint_path(path)
    _check_plain(state, "state")
    if is_hdf5_path(path):
        _save_h5(path, state, str(state.get("format", FORMAT)))
    else:
        write_atomically(path, lambda file: torch.save(dict(state), file))


def _plain_module(module: torch.nn.Module) -> torch.nn.Module:
    """The user's module inside DDP's, DataParallel's and ``torch.compile``'s wrappers."""
    wrappers = (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)
    module = original_module(module)
    return original_module(module.module) if isinstance(module, wrappers) else module


def _check_plain(value: Any, where: str) -> None:
    if isinstance(value, _PLAIN_LEAVES):
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str | int) or isinstance(key, bool):
                raise TypeError(
                    f"checkpoint keys must be str or int; {where} has the key {key!r} "
                    f"({type(key).__name__})."
                )
            _check_plain(item, f"{where}[{key!r}]")
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_plain(item, f"{where}[{index}]")
        return
    raise TypeError(
        f"checkpoint state may hold only tensors, None, bool, int, float, str and "
        f"dict/list/tuple containers (so that it loads with torch.load(weights_only=True)); "
        f"{where} is a {type(value).__name__}: {value!r:.80}. Convert it in the state_dict() "
        "that produced it (e.g. float(x) for a NumPy scalar, torch.from_numpy for an array)."
    )


# -- loading ---------------------------------------------------------------------------------
def is_full_checkpoint(data: Any) -> bool:
    """Whether ``data`` (from `load_file`) is a full checkpoint rather than bare weights."""
    return isinstance(data, Mapping) and data.get("format") == FORMAT


def load_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a weights or full-checkpoint file of any format, never running code from it.

    Returns the ``state_dict`` for a weights file and the checkpoint dict for a full one.
    A ``.pt`` file holding pickled objects other than tensors and plain containers raises
    `UnsafeCheckpointError`; an empty, truncated or damaged file, or one that is no
    checkpoint at all, raises `CheckpointFileError`. Both name the file.
    """
    path = os.fspath(path)
    with open(path, "rb") as file:
        head = file.read(16)
    if not head:
        raise CheckpointFileError(
            path, "is empty (0 bytes): a write to it never finished, or it was emptied"
        )
    if is_safetensors_path(path) or _is_safetensors(head):
        return _load_safetensors(path, head)
    if head.startswith(_HDF5_MAGIC):
        try:
            return _load_h5(path)
        except (OSError, KeyError, ValueError, TypeError, AttributeError) as error:
            raise CheckpointFileError(
                path, f"is a damaged HDF5 file (truncated or corrupted: {error})"
            ) from error
    if head.startswith(_ZIP_MAGIC) and not zipfile.is_zipfile(path):
        raise CheckpointFileError(
            path, "is a truncated or damaged torch.save file (its zip directory is missing)"
        )
    if not head.startswith(_ZIP_MAGIC) and not _is_pickle(head):
        raise CheckpointFileError(
            path,
            f"is not a checkpoint: neither a torch.save file nor HDF5 (it starts with "
            f"{head[:8]!r})",
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "Unsupported global" not in str(error) and "weights_only" not in str(error):
            raise CheckpointFileError(path, f"is a damaged torch.save file ({error})") from error
        raise UnsafeCheckpointError(
            f"Refusing to load {path!r}: it contains pickled Python objects other than tensors "
            "and plain containers, and unpickling them could run arbitrary code. torchcallbacks "
            "only loads files with torch.load(weights_only=True). If you wrote this file "
            "yourself and trust it, load it with torch.load(path, weights_only=False) and pass "
            f"the state_dict to model.load_state_dict(). Details: {error}"
        ) from error
    except (RuntimeError, EOFError, OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        detail = f"{type(error).__name__}: {error}".splitlines()[0]
        raise CheckpointFileError(
            path, f"is a truncated or damaged torch.save file ({detail})"
        ) from error


def _is_pickle(head: bytes) -> bool:
    """Whether ``head`` starts like a pickle of protocol 2 or later (torch's legacy format)."""
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def load_states(
    path: str | os.PathLike,
    model: tuple[torch.nn.Module, Mapping[str, Any]] | None = None,
    optimizer: tuple[torch.optim.Optimizer, Mapping[str, Any]] | None = None,
    scaler: tuple[Any, Mapping[str, Any]] | None = None,
    others: Sequence[tuple[Any, Mapping[str, Any]]] = (),
    ema: tuple[Any, Mapping[str, Any]] | None = None,
    optimizer_class: str | None = None,
) -> None:
    """Load ``(object, state)`` pairs read from ``path`` (``others``: more optimizers), all
    or nothing.

    The model's keys and shapes and every optimizer (`check_optimizer_fits`, with
    ``optimizer_class`` the class name the file records for the first) are checked before
    anything is written (``load_state_dict`` would copy the matching tensors before it
    raises); any other failure puts every object back as it was. ``ema`` is loaded last, after the
    module: its ``load_state_dict`` must check the state before it writes. Errors name
    ``path``.
    """
    if model is not None:
        module = _plain_module(model[0])
        model = (module, with_tied_keys(module, module_keys(module, model[1])))
        _check_fits(path, *model)
    if optimizer is not None:
        check_optimizer_fits(path, *optimizer, saved_class=optimizer_class)
    for other, other_state in others:
        check_optimizer_fits(path, other, other_state)
    pairs = [pair for pair in (model, optimizer, scaler, *others) if pair is not None]
    restore = snapshot(target for target, _ in pairs)
    for target, state in [*pairs, *([ema] if ema is not None else [])]:
        try:
            target.load_state_dict(state)
        except Exception as error:
            restore()
            raise CheckpointFileError(
                os.fspath(path),
                f"does not fit the {type(target).__name__} it was loaded into ({error}); "
                "nothing was changed",
            ) from error


def module_keys(module: torch.nn.Module, state: Mapping[str, Any]) -> Mapping[str, Any]:
    """``state`` with its keys named as ``module`` names them: weights saved from a
    ``torch.compile``d module (keys with ``_orig_mod.``) fit the plain module, and weights of
    the plain module fit one holding compiled submodules."""
    own = module.state_dict().keys()
    if all(key in own for key in state):
        return state
    plain = {key.replace("_orig_mod.", ""): key for key in own}
    return {
        key if key in own else plain.get(key.replace("_orig_mod.", ""), key): value
        for key, value in state.items()
    }


def with_tied_keys(module: torch.nn.Module, state: Mapping[str, Any]) -> Mapping[str, Any]:
    """``state`` with the keys it leaves out because they name a tensor it holds under another
    key: tied weights (a language model's output layer and its input embeddings), which
    HuggingFace's ``save_pretrained`` and safetensors' ``save_model`` write once."""
    own = module.state_dict(keep_vars=True)
    missing = [key for key in own if key not in state]
    if not missing:
        return state
    holders = {id(value): key for key, value in own.items() if key in state}
    filled = dict(state)
    for key in missing:
        if id(own[key]) in holders:  # the same Parameter or buffer object under two names
            filled[key] = state[holders[id(own[key])]]
    return filled


def snapshot(objects: Iterable[Any]) -> Callable[[], None]:
    """A function that puts each of ``objects`` (anything with ``state_dict`` and
    ``load_state_dict``) back as it is now."""
    saved = [(target, copy.deepcopy(target.state_dict())) for target in objects]

    def restore() -> None:
        for target, state in saved:
            target.load_state_dict(state)

    return restore


# Torch optimizers told apart by the hyper-parameters in their parameter groups: the class
# of a file written before checkpoints recorded it (AdamW keeps Adam's, with
# decoupled_weight_decay=True since torch 2.6).
_CLASS_BY_HYPERPARAMETERS = (
    ({"betas", "amsgrad"}, "Adam"),
    ({"momentum", "dampening", "nesterov"}, "SGD"),
    ({"alpha", "centered"}, "RMSprop"),
    ({"lr_decay", "initial_accumulator_value"}, "Adagrad"),
    ({"rho"}, "Adadelta"),
    ({"momentum_decay"}, "NAdam"),
    ({"etas", "step_sizes"}, "Rprop"),
    ({"lambd", "t0"}, "ASGD"),
    ({"history_size", "line_search_fn"}, "LBFGS"),
    ({"betas", "decoupled_weight_decay"}, "RAdam"),
    ({"betas", "capturable"}, "Adamax"),
)


# Keys of parameter groups that are no hyper-parameter of the optimizer: its parameters and
# their names, what torch's LR schedulers and `set_learning_rate` add.
_GROUP_BOOKKEEPING = {"params", "param_names", "initial_lr", "lr_ratio"}


def saved_optimizer_class(state: Mapping[str, Any], recorded: str | None) -> str | None:
    """The class name of the optimizer that wrote ``state``: ``recorded`` (what the file
    says), else inferred from its hyper-parameters for torch's optimizers; None if unknown."""
    if recorded is not None:
        return recorded
    groups = state.get("param_groups") or [{}]
    keys = set(groups[0])
    for needed, name in _CLASS_BY_HYPERPARAMETERS:
        if needed <= keys:
            adamw = name == "Adam" and groups[0].get("decoupled_weight_decay") is True
            return "AdamW" if adamw else name
    return None


def check_optimizer_fits(
    path: str | os.PathLike,
    optimizer: torch.optim.Optimizer,
    state: Mapping[str, Any],
    saved_class: str | None = None,
) -> None:
    """Raise `CheckpointFileError` naming ``path`` and both optimizer classes when the
    optimizer ``state`` read from it (an ``optimizer.state_dict()``) was not written by an
    optimizer like ``optimizer``: another class (``saved_class``, the name the file records,
    else inferred), another number of parameter groups or of parameters in a group, or
    other per-parameter state (keys and shapes, where ``optimizer`` already has state).
    Nothing is changed; call it once per optimizer, before loading any."""
    if not isinstance(state, Mapping) or not {"state", "param_groups"} <= set(state):
        raise CheckpointFileError(
            os.fspath(path), "holds no optimizer state_dict (no 'state' and 'param_groups')"
        )
    saved = saved_optimizer_class(state, saved_class)
    problem = _class_difference(optimizer, state, saved, saved_class is not None)
    _raise_unfit(path, optimizer, saved, problem or _layout_difference(optimizer, state))


def check_optimizer_class(
    path: str | os.PathLike, optimizer: torch.optim.Optimizer, saved_class: str | None
) -> None:
    """`check_optimizer_fits` for the class alone (``saved_class``: what the file records;
    None: unknown, accepted)."""
    recorded = saved_class is not None
    _raise_unfit(
        path, optimizer, saved_class, _class_difference(optimizer, {}, saved_class, recorded)
    )


def _raise_unfit(
    path: str | os.PathLike, optimizer: Any, saved: str | None, problem: str | None
) -> None:
    if problem is None:
        return
    raise CheckpointFileError(
        os.fspath(path),
        f"holds optimizer state written by {saved or 'another optimizer'}, which does not fit "
        f"the {type(optimizer).__name__} it was loaded into ({problem}). Nothing was loaded: "
        "the model and the optimizer are as they were. Build the optimizer as the run that "
        f"wrote the file did ({saved or 'the same class'}, the same parameter groups), or load "
        "only the weights: load_checkpoint(path, model) or trainer.load_weights(path)",
    )


def _class_difference(
    optimizer: torch.optim.Optimizer, state: Mapping[str, Any], saved: str | None, recorded: bool
) -> str | None:
    """What tells the optimizer that wrote ``state`` (``saved``) from ``optimizer``, if
    anything; without a ``recorded`` class, by their hyper-parameters."""
    if recorded:
        return None if saved == type(optimizer).__name__ else "another optimizer class"
    ours = saved_optimizer_class({"param_groups": optimizer.param_groups}, None)
    if ours is not None and saved is not None:
        return None if ours == saved else "another optimizer class"
    groups = state.get("param_groups") or []
    unknown = set().union(*(set(g) for g in groups)) - set(optimizer.defaults) - _GROUP_BOOKKEEPING
    if unknown:
        return f"its parameter groups hold {sorted(unknown)}, unknown to this optimizer"
    return None


def _layout_difference(optimizer: torch.optim.Optimizer, state: Mapping[str, Any]) -> str | None:
    groups = state["param_groups"]
    if len(groups) != len(optimizer.param_groups):
        return (
            f"{len(groups)} parameter group(s) in the file, {len(optimizer.param_groups)} in "
            "the optimizer"
        )
    sizes = [len(g["params"]) for g in groups]
    own_sizes = [len(g["params"]) for g in optimizer.param_groups]
    if sizes != own_sizes:
        return f"parameters per group: {sizes} in the file, {own_sizes} in the optimizer"
    ids = [i for g in groups for i in g["params"]]
    parameters = dict(zip(ids, [p for g in optimizer.param_groups for p in g["params"]]))
    for key, saved_state in state["state"].items():
        if key not in parameters:
            return f"its state names parameter {key!r}, which none of its groups holds"
        current = optimizer.state.get(parameters[key])
        if not current:
            continue
        if set(saved_state) != set(current):
            return (
                f"the state of parameter {key!r} holds {sorted(saved_state)} in the file, "
                f"{sorted(current)} in the optimizer"
            )
        for name, value in saved_state.items():
            mine = current[name]
            if isinstance(value, torch.Tensor) and isinstance(mine, torch.Tensor):
                if value.shape != mine.shape:
                    return (
                        f"{name} of parameter {key!r} has shape {tuple(value.shape)} in the "
                        f"file, {tuple(mine.shape)} in the optimizer"
                    )
    return None


def _check_fits(path: str | os.PathLike, module: torch.nn.Module, state: Mapping[str, Any]) -> None:
    own = module.state_dict()
    missing = [key for key in own if key not in state]
    unexpected = [key for key in state if key not in own]
    resized = [
        f"{key}: {tuple(state[key].shape)} in the file, {tuple(own[key].shape)} in the model"
        for key in own
        if key in state
        and isinstance(state[key], torch.Tensor)
        and tuple(state[key].shape) != tuple(own[key].shape)
    ]
    if missing or unexpected or resized:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        if resized:
            parts.append(f"other shapes ({'; '.join(resized[:5])})")
        raise CheckpointFileError(
            os.fspath(path),
            f"does not match {type(module).__name__}: {', '.join(parts)}. Was it saved from "
            "another architecture? The model was left unchanged",
        )


# -- safetensors -----------------------------------------------------------------------------
def require_safetensors() -> Any:
    """``safetensors.torch``, or an ImportError naming ``torchcallbacks[safetensors]``."""
    require("safetensors", "safetensors", feature="safetensors weights files (.safetensors)")
    import safetensors.torch

    return safetensors.torch


def _save_safetensors(path: str | os.PathLike, weights: Mapping[str, Any]) -> None:
    safetensors_torch = require_safetensors()
    tensors: dict[str, torch.Tensor] = {}
    storages: set[int] = set()
    for key, value in weights.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(
                f"cannot write {os.fspath(path)!r}: a .safetensors file holds tensors only, and "
                f"the state_dict entry {key!r} is a {type(value).__name__}. Save to a .pt path."
            )
        value = value.detach().cpu()
        storage = value.untyped_storage().data_ptr()
        if storage in storages:  # tied weights: safetensors refuses tensors that share memory
            value = value.clone()
        storages.add(storage)
        tensors[key] = value.contiguous()
    data = safetensors_torch.save(tensors, metadata={"format": "pt"})
    write_atomically(path, lambda file: file.write(data))


def _is_safetensors(head: bytes) -> bool:
    """Whether ``head`` starts like a safetensors file: the header's length (8 bytes, little
    endian), then the JSON header."""
    return len(head) > 8 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") > 1


def _load_safetensors(path: str, head: bytes) -> dict[str, Any]:
    safetensors_torch = require_safetensors()
    from safetensors import SafetensorError

    if not _is_safetensors(head):
        raise CheckpointFileError(
            path, f"is not a safetensors file (it starts with {head[:8]!r}, not a header)"
        )
    try:
        return dict(safetensors_torch.load_file(path, device="cpu"))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointFileError(
            path, f"is a truncated or damaged safetensors file ({error})"
        ) from error


# -- HDF5 ------------------------------------------------------------------------------------
def require_h5py() -> Any:
    """The h5py module, or an ImportError saying to install ``torchcallbacks[h5]``."""
    return require("h5py", "h5", feature="HDF5 checkpoints (.h5/.hdf5)")


def _save_h5(path: str | os.PathLike, state: Mapping[str, Any], file_format: str) -> None:
    h5py = require_h5py()
    from torchcallbacks._version import __version__

    state = {_H5_GROUP_NAMES.get(key, key): value for key, value in state.items()}
    # Built in memory, then written by Python: the HDF5 library itself never writes to the
    # disk, where a full device can crash it (a segfault, and a temporary file left behind).
    buffer = io.BytesIO()
    with h5py.File(buffer, "w", track_order=True) as file:
        _write_tree(file, state)
        file.attrs["format"] = json.dumps(file_format)
        file.attrs["torchcallbacks_version"] = json.dumps(__version__)
    write_atomically(path, lambda target: target.write(buffer.getbuffer()))


def _load_h5(path: str) -> dict[str, Any]:
    h5py = require_h5py()
    with h5py.File(path, "r") as file:
        data = _read_tree(file)
        full = file.attrs.get("format") == json.dumps(FORMAT)
    if full:
        names = {h5_name: key for key, h5_name in _H5_GROUP_NAMES.items()}
        return {names.get(key, key): value for key, value in data.items()}
    return data.get("model_weights", data)


def _has_tensor(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, Mapping):
        return any(_has_tensor(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_tensor(v) for v in value)
    return False


def _write_tree(group: Any, tree: Mapping[str, Any] | list | tuple) -> None:
    """Dicts, lists and tuples holding tensors become groups, tensors datasets, the rest
    JSON attributes; ``__type__`` and ``__keys__`` keep container types and key order."""
    items = list(tree.items()) if isinstance(tree, Mapping) else list(enumerate(tree))
    kind = type(tree).__name__ if isinstance(tree, list | tuple) else "dict"
    group.attrs["__type__"] = json.dumps(kind)
    group.attrs["__keys__"] = json.dumps([key for key, _ in items])
    names = [str(key) for key, _ in items]
    if len(set(names)) != len(names) or any("/" in name or name.startswith("__") for name in names):
        raise ValueError(
            f"cannot store the keys {[key for key, _ in items]!r} in HDF5 (keys must be "
            "distinct as strings, without '/' and not starting with '__'); use a .pt path."
        )
    for name, (_, value) in zip(names, items):
        if isinstance(value, torch.Tensor):
            _write_dataset(group, name, value)
        elif _has_tensor(value):
            _write_tree(group.create_group(name, track_order=True), value)
        else:
            group.attrs[name] = json.dumps(_to_json(value), allow_nan=True)


def _write_dataset(group: Any, name: str, tensor: torch.Tensor) -> None:
    tensor = tensor.detach().cpu().contiguous()
    try:
        group.create_dataset(name, data=tensor.numpy())
    except TypeError:  # no NumPy dtype (bfloat16, float8, ...): store the bits
        size = tensor.element_size()
        bits = tensor.view(_BITCAST[size]).numpy().view(f"u{size}")
        group.create_dataset(name, data=bits)
        group[name].attrs["torch_dtype"] = str(tensor.dtype).removeprefix("torch.")


def _read_tree(group: Any) -> Any:
    keys = json.loads(group.attrs["__keys__"]) if "__keys__" in group.attrs else None
    if keys is None:  # written by another tool: its datasets and groups, by name
        keys = list(group)
    values = []
    for key in keys:
        name = str(key)
        if name in group:
            item = group[name]
            values.append(_read_dataset(item) if hasattr(item, "dtype") else _read_tree(item))
        else:
            values.append(_from_json(json.loads(group.attrs[name])))
    kind = json.loads(group.attrs.get("__type__", '"dict"'))
    if kind == "list":
        return values
    if kind == "tuple":
        return tuple(values)
    return dict(zip(keys, values))


def _read_dataset(dataset: Any) -> torch.Tensor:
    array = np.array(dataset[()])
    dtype_name = dataset.attrs.get("torch_dtype")
    if dtype_name is None:
        return torch.from_numpy(array)
    dtype = _BITCAST_DTYPES.get(dtype_name) if isinstance(dtype_name, str) else None
    if dtype is None:
        raise ValueError(
            f"its dataset {dataset.name!r} has torch_dtype {dtype_name!r}, which is none of the "
            f"dtypes stored as bits ({', '.join(_BITCAST_DTYPES)})"
        )
    view_dtype = _BITCAST[dtype.itemsize]
    signed = array.view(torch.empty((), dtype=view_dtype).numpy().dtype)
    return torch.from_numpy(signed).view(view_dtype).view(dtype)


def _to_json(value: Any) -> Any:
    """JSON-ready form that keeps tuples and non-str dict keys (tagged)."""
    if isinstance(value, tuple):
        return {"__tuple__": [_to_json(v) for v in value]}
    if isinstance(value, list):
        return [_to_json(v) for v in value]
    if isinstance(value, Mapping):
        if all(isinstance(k, str) for k in value):
            return {k: _to_json(v) for k, v in value.items()}
        return {"__items__": [[k, _to_json(v)] for k, v in value.items()]}
    return value


def _from_json(value: Any) -> Any:
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    if isinstance(value, dict):
        if set(value) == {"__tuple__"}:
            return tuple(_from_json(v) for v in value["__tuple__"])
        if set(value) == {"__items__"}:
            return {k: _from_json(v) for k, v in value["__items__"]}
        return {k: _from_json(v) for k, v in value.items()}
    return value


# -- reproducibility -------------------------------------------------------------------------
