"""Checks of user input made before any training: output paths and `fit` arguments.

Each check raises at once with a message naming the argument (or path), the value and the
fix, so that a mistake costs no training time. `check_output_path` is what the callbacks
that write files (ModelCheckpoint, CSVLogger, JSONLogger, TensorBoard, BackupAndRestore)
call in ``on_train_begin``.
"""

from __future__ import annotations

import difflib
import numbers
import os
import string
import tempfile
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from torchcallbacks.data.inputs import is_array_like, pandas_as_numpy
from torchcallbacks.metrics import METRICS
from torchcallbacks.utils import expected_sync


def check_output_path(path: str | os.PathLike, owner: str, folder: bool = False) -> None:
    """Raise an ``OSError`` naming ``path`` when ``owner`` could not write it.

    ``path`` is a file to write (``folder=False``) or a folder to write files in. Nothing is
    created: the nearest existing folder on the way is probed with a temporary file.
    """
    path = os.path.abspath(os.fspath(path))
    if not folder and os.path.isdir(path):
        raise IsADirectoryError(
            21, f"{owner} cannot write the file {path!r}: it is an existing folder", path
        )
    if folder and os.path.exists(path) and not os.path.isdir(path):
        raise NotADirectoryError(
            20, f"{owner} needs the folder {path!r}, but a file has that name", path
        )
    existing = path if folder else os.path.dirname(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise NotADirectoryError(
            20,
            f"{owner} cannot write {path!r}: {existing!r} on the way is a file, not a folder",
            path,
        )
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".torchcallbacks-probe-"):
            pass
    except OSError as error:
        raise OSError(
            error.errno,
            f"{owner} cannot write {path!r}: {error.strerror} in {existing!r}. Choose a folder "
            "this process can write to",
            path,
        ) from error


def check_output_template(template: str, owner: str) -> None:
    """`check_output_path` for a path template: the file itself when it has no
    ``{placeholder}``, else the folder before the first placeholder."""
    if "{" not in template:
        check_output_path(template, owner)
    else:
        check_output_path(os.path.dirname(template.split("{", 1)[0]) or ".", owner, folder=True)


def check_path_template(template: str) -> None:
    """Raise a ``ValueError`` for a ModelCheckpoint path template that cannot be formatted:
    unbalanced braces, positional ``{}`` fields, or a format that does not suit the value
    (``epoch``/``batch`` are ints, logged values floats)."""
    try:
        fields = [
            (field, spec or "")
            for _, field, spec, _ in string.Formatter().parse(template)
            if field is not None
        ]
    except ValueError as error:
        raise ValueError(
            f"ModelCheckpoint filepath {template!r} is not a valid path template ({error}): "
            "write placeholders as {name} or {name:format}, e.g. 'ckpt/{epoch:02d}.pt', and "
            "double literal braces ({{ and }})."
        ) from None
    for field, spec in fields:
        # str.format takes any name ("val_top-5") but reads "." and "[" as attribute or
        # item access, and an empty or numeric field as positional.
        if not field or field.isdigit() or any(c in field for c in ".[!"):
            raise ValueError(
                f"ModelCheckpoint filepath {template!r}: the placeholder {{{field}}} needs the "
                "name of a logged value, 'epoch' or 'batch', e.g. 'ckpt/{epoch:02d}.pt'."
            )
        sample = 1 if field in ("epoch", "batch") else 0.5
        try:
            format(sample, spec)
        except ValueError as error:
            kind = "an int" if isinstance(sample, int) else "a float"
            example = "{epoch:02d}" if isinstance(sample, int) else f"{{{field}:.4f}}"
            raise ValueError(
                f"ModelCheckpoint filepath {template!r}: {{{field}:{spec}}} cannot format "
                f"{field}, {kind} ({error}); use e.g. {example}."
            ) from None


class NonFiniteInputWarning(UserWarning):
    """The inputs given to `fit` hold NaN or infinite values. Silence it with
    ``warnings.simplefilter("ignore", NonFiniteInputWarning)``."""


_DATA_CALLS = {
    "fit": "trainer.fit(train_loader, validation_data=val_loader, epochs=...)",
    "evaluate": "trainer.evaluate(loader)",
    "predict": "trainer.predict(loader)",
}


def check_not_given_a_module(method: str, x: Any, following: Any) -> None:
    """Refuse Lightning's ``trainer.fit(model, train_loader, ...)`` (and ``evaluate``/
    ``predict``): this Trainer already holds its module, so the loaders would land in ``y``
    or ``batch_size``. ``trainer.fit(model)`` alone is a module that gives its own loaders."""
    if isinstance(x, torch.nn.Module) and following is not None:
        raise TypeError(
            f"trainer.{method}({type(x).__name__}, {type(following).__name__}, ...) passes a "
            "module first, as calls to Lightning's Trainer do; this Trainer holds the module "
            "it was built with (Trainer(model)): leave it out, "
            f"{_DATA_CALLS[method]}."
        )


def check_fit_arguments(trainer: Any, arguments: Mapping[str, Any]) -> None:
    """Check the arguments of `Trainer.fit` (its locals) before any data is touched."""
    _check_count("epochs", arguments["epochs"], minimum=0)
    _check_count("initial_epoch", arguments["initial_epoch"], minimum=0)
    _check_count("batch_size", arguments["batch_size"], minimum=1, none="32")
    _check_count("steps_per_epoch", arguments["steps_per_epoch"], minimum=1, none="the whole data")
    _check_count("validation_steps", arguments["validation_steps"], minimum=1, none="all")
    _check_count(
        "validation_batch_size", arguments["validation_batch_size"], minimum=1, none="batch_size"
    )
    x, y = arguments["x"], arguments["y"]
    _check_not_empty("x", x)
    validation = arguments["validation_data"]
    if isinstance(validation, tuple) and validation:
        _check_not_empty("validation_data", validation[0])
    elif validation is not None:
        _check_not_empty("validation_data", validation)
    scored = trainer.objective.loss_spec is not None and not trainer._kind.computes_own_loss
    if y is None and is_array_like(x) and scored:
        raise ValueError(
            "fit(x) was given no y, but the loss "
            f"{_name(trainer.objective.loss_spec)} needs targets: pass y=..., or give the "
            "inputs and targets together as a Dataset, a DataLoader or (inputs, targets) "
            "batches."
        )
    split = arguments["validation_split"]
    if split and validation is not None:  # Keras ignores it without a word
        warnings.warn(
            f"validation_split={split!r} is not used: validation_data is given, and takes its "
            "place (as in Keras). Pass only one of them.",
            stacklevel=3,
        )
    check_weights_reach(trainer, arguments["sample_weight"], arguments["class_weight"])
    check_optimizer_trains(trainer)
    if not isinstance(validation, tuple):
        warn_unused_batch_size(
            validation,
            arguments["validation_batch_size"],
            "validation_batch_size",
            "validation_data",
        )
    for name, value in (("x", x), ("y", y)):
        _warn_non_finite(name, value)


def check_optimizer_trains(trainer: Any) -> None:
    """Refuse an optimizer that holds none of the module's trainable parameters (built on
    another module, or on a copy): training would leave the module as it is. One that
    holds some (frozen layers left out, or given to it) is fine."""
    optimizer = trainer.optimizer
    if not isinstance(optimizer, torch.optim.Optimizer):
        return
    trainable = {id(p) for p in trainer.model.parameters() if p.requires_grad}
    if any(id(p) in trainable for group in optimizer.param_groups for p in group["params"]):
        return
    model, kind = type(trainer.model).__name__, type(optimizer).__name__
    if not trainable:
        raise ValueError(
            f"The model ({model}) has no trainable parameter (every one has "
            "requires_grad=False), so fit would change nothing. Unfreeze the layers to train "
            "(parameter.requires_grad_(True)) and build the optimizer on them."
        )
    raise ValueError(
        f"The optimizer ({kind}) holds none of the trainable parameters of the model "
        f"({model}): fit would leave the model unchanged. Was it built on another model, or "
        "on a copy made before? Build it on the parameters of the model given to Trainer "
        f"(torch.optim.{kind}(model.parameters(), ...)), or pass a name (optimizer='adam') "
        "and the Trainer builds it."
    )


def warn_unused_batch_size(
    data: Any, batch_size: Any, name: str = "batch_size", data_name: str = "x", stacklevel: int = 3
) -> None:
    """Warn that ``batch_size`` given with data that comes in batches (a DataLoader, a data
    module, any iterable of batches) is not used, as Keras 3 warns about ``shuffle`` with a
    dataset. Tensors, arrays and Datasets are batched with it."""
    if batch_size is None or data is None or is_array_like(data):
        return
    if isinstance(data, IterableDataset) or (
        isinstance(data, Dataset) and hasattr(data, "__len__")
    ):
        return
    own = getattr(data, "batch_size", None)
    batches = f"batches of {own}" if isinstance(own, int) else "batches"
    warnings.warn(
        f"{name}={batch_size!r} is not used: {data_name} is a {type(data).__name__}, which "
        f"makes its own {batches}. Set the batch size where the batches are made (e.g. "
        f"DataLoader(dataset, batch_size={batch_size!r})) and leave {name} out, or pass the "
        f"Dataset itself to have it batched with {name}.",
        stacklevel=stacklevel,
    )


def check_weights_reach(trainer: Any, sample_weight: Any, class_weight: Any = None) -> None:
    """Refuse weights the module's own ``training_step`` would never see."""
    given = "sample_weight" if sample_weight is not None else "class_weight"
    if trainer._kind.takes_weights or (sample_weight is None and class_weight is None):
        return
    raise ValueError(
        f"{type(trainer.model).__name__} computes its loss in its own training_step, which "
        f"{given}= cannot reach. Weight the loss inside training_step instead (the batches "
        "can carry the weights: yield (x, y, w) and unpack them there)."
    )


def _check_count(name: str, value: Any, minimum: int, none: str | None = None) -> None:
    if value is None and none is not None:
        return
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= minimum:
        return
    allowed = "a positive integer" if minimum == 1 else "an integer >= 0"
    default = f", or None for {none}" if none is not None else ""
    raise ValueError(f"{name} must be {allowed}{default}; got {name}={value!r}.")


def _length(data: Any) -> int | None:
    if is_array_like(data):
        leaves = [data] if isinstance(data, torch.Tensor | np.ndarray) else None
        if leaves is None:
            values = data.values() if isinstance(data, Mapping) else data
            leaves = list(values)
        return len(leaves[0]) if leaves and hasattr(leaves[0], "__len__") else None
    if isinstance(data, DataLoader | Dataset):
        try:
            return len(data)  # type: ignore[arg-type]
        except TypeError:
            return None
    return None


def _check_not_empty(name: str, data: Any) -> None:
    if _length(data) == 0:
        kind = type(data).__name__
        raise ValueError(
            f"{name} is empty (a {kind} with 0 samples or batches): there is nothing to "
            f"{'validate on' if name.startswith('validation') else 'train on'}. Check how it "
            "was built (a filter or a split that kept nothing?)."
        )


def _warn_non_finite(name: str, value: Any) -> None:
    value = pandas_as_numpy(value)  # a DataFrame's NaN (and its nullable columns' NA)
    tensors = [value] if isinstance(value, torch.Tensor | np.ndarray) else []
    if isinstance(value, Mapping):
        tensors = list(value.values())
    elif isinstance(value, list | tuple):
        tensors = list(value)
    for tensor in map(pandas_as_numpy, tensors):
        if not isinstance(tensor, torch.Tensor | np.ndarray) or tensor.ndim == 0 or not len(tensor):
            continue
        if isinstance(tensor, np.ndarray) and tensor.dtype.kind in "fc":
            # NumPy itself: torch.from_numpy warns about read-only arrays (pandas' views)
            finite = np.isfinite(tensor.reshape(len(tensor), -1)).all(axis=1)
            bad = np.flatnonzero(~finite).tolist()
        elif isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
            with expected_sync():  # once per fit
                finite = torch.isfinite(tensor.reshape(len(tensor), -1)).all(dim=1)
                bad = (~finite).nonzero().flatten().tolist()
        else:
            continue
        if bad:
            warnings.warn(
                f"{name} holds NaN or infinite values in {len(bad)} sample(s), the first at "
                f"index {bad[0]}: training on them gives NaN losses (TerminateOnNaN stops "
                "such a run). Clean or drop those samples; to train anyway, silence this "
                "with warnings.simplefilter('ignore', torchcallbacks.checks."
                "NonFiniteInputWarning).",
                NonFiniteInputWarning,
                stacklevel=4,
            )
            return


def _name(loss: Any) -> str:
    return repr(loss) if isinstance(loss, str) else getattr(loss, "__name__", type(loss).__name__)


def logged_names(trainer: Any) -> list[str]:
    """The names the logs of a fit will hold by the trainer's loss and metrics (and their
    ``val_`` forms); empty when not known before training (a LightningModule's ``self.log``,
    losses per output before the first batch, a metric object's dict result before its
    first compute)."""
    objective = getattr(trainer, "objective", None)
    if not getattr(objective, "names_known", True):
        return []
    logged = list(getattr(objective, "log_names", []) or [])
    return logged + [f"val_{name}" for name in logged]


def closest_names(name: str, names: Iterable[str], count: int = 3) -> list[str]:
    """The names of ``names`` that ``name`` may be a misspelling of, best first. Names are
    compared without their ``val_`` prefix: one starting with the other (``acc``,
    ``accuracy``) or close by `difflib`; those of the other stage (``loss`` for
    ``val_los``) only when none of the same stage is close."""
    stem = name.removeprefix("val_")
    found: list[tuple[bool, bool, float, str]] = []
    for other in names:
        other_stem = other.removeprefix("val_")
        extends = min(len(stem), len(other_stem)) >= 2 and (
            stem.startswith(other_stem) or other_stem.startswith(stem)
        )
        ratio = difflib.SequenceMatcher(None, stem, other_stem).ratio()
        if other != name and (extends or ratio >= 0.6):
            other_stage = other.startswith("val_") != name.startswith("val_")
            found.append((other_stage, not extends, -ratio, other))
    found.sort()
    same_stage = [entry for entry in found if not entry[0]]
    return [entry[-1] for entry in same_stage or found][:count]


def did_you_mean(names: list[str]) -> str:
    """`` Did you mean 'a' or 'b'?`` (empty without names)."""
    if not names:
        return ""
    quoted = [repr(name) for name in names]
    alternatives = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
    return f" Did you mean {alternatives}?"


def missing_monitor_hint(monitor: str, logs: Mapping[str, Any]) -> str:
    """For a monitor missing from ``logs``: what it may be instead, or why it is missing."""
    if monitor.startswith("val_") and monitor.removeprefix("val_") in logs:
        if not any(key.startswith("val_") for key in logs):
            return (
                f" {monitor!r} is logged only in epochs that validate: pass validation_data= "
                f"or validation_split= to fit (see validation_freq), or monitor "
                f"{monitor.removeprefix('val_')!r}."
            )
    hint = did_you_mean(closest_names(monitor, logs))
    stem = monitor.removeprefix("val_")
    if not hint and stem in METRICS and stem not in logs:  # metrics= left out
        return f" The Trainer computes no {stem!r}: pass metrics=[{stem!r}] to the Trainer."
    return hint


def unknown_monitor(trainer: Any, monitor: str) -> tuple[str, list[str]]:
    """For a monitor that is not among the names the fit logs (`logged_names`): a sentence
    saying what it logs, and the closest names; ``("", [])`` when the name is logged or
    the names are not known before training."""
    names = logged_names(trainer)
    if not names or monitor in names:
        return "", []
    half = len(names) // 2
    logs = f"it logs {', '.join(names[:half])}, and {', '.join(names[half:])} when validating"
    return f"{monitor!r} is not a metric this fit logs ({logs}).", closest_names(monitor, names)
