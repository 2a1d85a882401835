"""Data adaptation: turn what `fit`/`evaluate`/`predict` receive into batches on the device.

In-memory tensors and arrays are batched by slicing with a per-epoch permutation (one
``index_select`` per tensor and batch, on the device when the data fits there) instead of a
per-sample ``Dataset`` + ``collate``, which is the largest cost of a small model's step.
Datasets become DataLoaders; DataLoaders and other iterables of batches are used as given.
pandas DataFrames and Series are taken wherever NumPy arrays are (pandas is never imported
unless the input is a pandas object). A data module (an object with ``train_dataloader()``,
such as a ``LightningDataModule``) gives its loaders through `from_data_module`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import (
    DataLoader,
    Dataset,
    DistributedSampler,
    IterableDataset,
    Sampler,
    Subset,
)

from torchcallbacks.distributed import process_group as distributed
from torchcallbacks.overrides import user_method
from torchcallbacks.utils import expected_sync

# Keep in-memory data on the GPU only when it takes at most this share of the free memory.
_DEVICE_DATA_SHARE = 0.25


def move_to_device(batch: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """Move tensors inside nested tuples/lists/dicts to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, Mapping):
        return {k: move_to_device(v, device, non_blocking) for k, v in batch.items()}
    if isinstance(batch, tuple | list):
        return type(batch)(move_to_device(v, device, non_blocking) for v in batch)
    return batch


def _is_pandas(value: Any) -> bool:
    return type(value).__module__.split(".")[0] == "pandas" and hasattr(value, "to_numpy")


def _pandas_to_numpy(value: Any) -> np.ndarray:
    """A numeric DataFrame/Series as a NumPy array (nullable columns' missing values: NaN)."""
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    dtypes = value.dtypes.items() if hasattr(value, "columns") else [(value.name, value.dtype)]
    numeric = (is_numeric_dtype, is_bool_dtype)
    other = {name: str(dtype) for name, dtype in dtypes if not any(t(dtype) for t in numeric)}
    if other:
        raise TypeError(
            f"pandas {type(value).__name__} has non-numeric column(s) {other}; encode them as "
            "numbers first (e.g. pd.get_dummies(df), or df[col].astype('category').cat.codes)."
        )
    array = np.asarray(value.to_numpy())
    # A frame is a table of features, floating point as in Keras (int or bool columns
    # alike); a Series keeps integer labels, and its booleans become floats.
    if hasattr(value, "columns") or array.dtype in (object, bool):
        array = value.to_numpy(dtype=np.float64, na_value=np.nan)
    return array


def pandas_as_numpy(value: Any) -> Any:
    """A pandas object as the NumPy array the data is made of; any other value as it is."""
    return _pandas_to_numpy(value) if _is_pandas(value) else value


def _to_tensor(value: Any) -> Any:
    value = pandas_as_numpy(value)
    if isinstance(value, np.ndarray):
        if not value.flags.writeable:  # pandas' copy-on-write views: torch warns about them
            value = value.copy()
        tensor = torch.from_numpy(value)
        return tensor.float() if tensor.dtype == torch.float64 else tensor
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, Mapping):
        return {k: _to_tensor(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        if value and all(isinstance(v, int | float | np.number) for v in value):
            raise TypeError(
                f"got a {type(value).__name__} of {len(value)} numbers, where a list or tuple "
                "holds one array per input or output: pass one array, np.asarray(values) or "
                "torch.tensor(values)."
            )
        return tuple(_to_tensor(v) for v in value)
    raise TypeError(f"expected a tensor, NumPy array or pandas object, got {type(value).__name__}")


def as_weights(sample_weight: Any) -> torch.Tensor:
    """Sample weights (a tensor, NumPy array or list of numbers) as a float tensor."""
    if isinstance(sample_weight, list | tuple):
        sample_weight = np.asarray(sample_weight, dtype=np.float32)
    weights = _to_tensor(sample_weight)
    if not isinstance(weights, torch.Tensor):
        raise ValueError(
            "sample_weight must be one array of weights, one row per sample (it weighs every "
            f"output of a multi-output model); got {type(sample_weight).__name__}."
        )
    return weights.float()


def _leaves(structure: Any) -> list[torch.Tensor]:
    if isinstance(structure, Mapping):
        return [t for v in structure.values() for t in _leaves(v)]
    if isinstance(structure, tuple):
        return [t for v in structure for t in _leaves(v)]
    return [structure]


def _rebuild(structure: Any, leaves: Iterator[torch.Tensor]) -> Any:
    if isinstance(structure, Mapping):
        return {k: _rebuild(v, leaves) for k, v in structure.items()}
    if isinstance(structure, tuple):
        return tuple(_rebuild(v, leaves) for v in structure)
    return next(leaves)


def _is_array(x: Any) -> bool:
    return isinstance(x, torch.Tensor | np.ndarray) or _is_pandas(x)


def is_array_like(x: Any) -> bool:
    if _is_array(x):
        return True
    if isinstance(x, Mapping):
        return bool(x) and all(is_array_like(v) for v in x.values())
    if isinstance(x, tuple | list):
        return bool(x) and all(_is_array(v) for v in x)
    return False


def _fits_on_device(tensors: list[torch.Tensor], device: torch.device) -> bool:
    if device.type != "cuda":
        return device.type == "cpu" or all(t.device == device for t in tensors)
    free, _ = torch.cuda.mem_get_info(device)
    return sum(t.numel() * t.element_size() for t in tensors) <= free * _DEVICE_DATA_SHARE


class TensorBatches:
    """Batches of in-memory tensors: ``(inputs, targets)``, ``(inputs, targets,
    sample_weight)`` when weights are given, or ``(inputs, None)`` when ``y`` is None.

    Distributed, each rank takes every world_size-th sample of the epoch's order. Training
    shards are padded to equal length like DistributedSampler's (every rank must take the
    same number of steps); evaluation shards are not, so no sample counts twice.
    """

    def __init__(
        self,
        x: Any,
        y: Any,
        batch_size: int,
        shuffle: bool,
        device: torch.device,
        rank: int = 0,
        world_size: int = 1,
        equal_shards: bool = True,
        sample_weight: Any = None,
    ) -> None:
        self.structure: tuple[Any, ...] = (_to_tensor(x), None if y is None else _to_tensor(y))
        if sample_weight is not None:
            if y is None:
                raise ValueError("sample_weight needs targets: pass y as well.")
            self.structure += (as_weights(sample_weight),)
        tensors = [t for part in self.structure if part is not None for t in _leaves(part)]
        lengths = {len(t) for t in tensors}
        if len(lengths) != 1:
            counts = ", ".join(
                f"{label} has {len(_leaves(part)[0])}"
                for label, part in zip(("x", "y", "sample_weight"), self.structure)
                if part is not None
            )
            raise ValueError(
                f"x, y and sample_weight have different numbers of samples: {counts}; every "
                "input, target and weight array needs the same first dimension."
            )
        self.num_samples = lengths.pop()
        self.device = device
        self.on_device = _fits_on_device(tensors, device)
        target = device if self.on_device else torch.device("cpu")
        self.tensors = [t.to(target) for t in tensors]
        if not self.on_device and device.type == "cuda":
            self.tensors = [t.pin_memory() for t in self.tensors]
        self.batch_size = batch_size
        self.shuffle = shuffle
        if not equal_shards and self.num_samples < world_size:
            rank, world_size = 0, 1  # no empty shard: every rank scores the few samples
        self.rank, self.world_size = rank, world_size
        self.equal_shards = equal_shards
        self.shard_size = _shard_size(self.num_samples, rank, world_size, equal_shards)
        self.single = all(isinstance(part, torch.Tensor) for part in self.structure)

    def __len__(self) -> int:
        return math.ceil(self.shard_size / self.batch_size)

    def epoch(
        self,
        epoch: int,
        generator: torch.Generator,
        skip: int = 0,
        after_skip: Callable[[], None] | None = None,
    ) -> Iterator[Any]:
        """The batches of one epoch, from batch ``skip`` on; the order comes from ``generator``.

        Skipped batches are never read. ``after_skip`` runs before the first batch is made.
        """
        order = None
        if self.shuffle:
            order = torch.randperm(self.num_samples, generator=generator)
        if self.world_size > 1:
            base = order if order is not None else torch.arange(self.num_samples)
            order = _shard(base, self.rank, self.world_size, self.equal_shards)
        if order is not None and self.on_device:
            with expected_sync():  # once per epoch
                order = order.to(self.tensors[0].device)
        non_blocking = self.device.type == "cuda"
        bs, total = self.batch_size, self.shard_size
        if after_skip is not None:
            after_skip()
        for start in range(skip * bs, total, bs):
            if order is None:
                parts = [t[start : start + bs] for t in self.tensors]
            else:
                index = order[start : start + bs]
                parts = [t.index_select(0, index) for t in self.tensors]
            if not self.on_device:
                parts = [p.to(self.device, non_blocking=non_blocking) for p in parts]
            yield self._structure(parts)

    @property
    def sharded(self) -> bool:
        """Whether each rank sees only its part of the data."""
        return self.world_size > 1

    def sample_order(self) -> torch.Tensor | None:
        """For unshuffled distributed data: the sample index of each row of the rank-major
        concatenation of every rank's batches (padding rows included); else None."""
        if self.world_size == 1 or self.shuffle:
            return None
        return sharded_order(self.num_samples, self.world_size, self.equal_shards)

    def _structure(self, parts: list[torch.Tensor]) -> Any:
        if self.single:
            return tuple(parts)
        leaves = iter(parts)
        inputs = _rebuild(self.structure[0], leaves)
        if self.structure[1] is None:
            return inputs, None
        return (inputs, *(_rebuild(part, leaves) for part in self.structure[1:]))


def _shard_size(num_samples: int, rank: int, world_size: int, equal: bool) -> int:
    if equal:
        return math.ceil(num_samples / world_size)
    return len(range(rank, num_samples, world_size))


def _shard(order: torch.Tensor, rank: int, world_size: int, equal: bool) -> torch.Tensor:
    """This rank's part of ``order``; ``equal`` pads it like DistributedSampler
    (drop_last=False) by repeating samples from the start."""
    if not equal:
        return order[rank::world_size]
    shard_size = math.ceil(len(order) / world_size)
    padded = order.repeat(math.ceil(shard_size * world_size / len(order)))
    return padded[: shard_size * world_size][rank::world_size]


def sharded_order(num_samples: int, world_size: int, equal: bool) -> torch.Tensor:
    """Sample indices in the order a rank-major gather of unshuffled shards returns them."""
    base = torch.arange(num_samples)
    return torch.cat([_shard(base, rank, world_size, equal) for rank in range(world_size)])


class ShardSampler(Sampler[int]):
    """Every world_size-th index from ``rank`` on, unpadded and in order: evaluation and
    prediction shards of a Dataset (DistributedSampler would repeat samples to even them)."""

    def __init__(self, num_samples: int, rank: int, world_size: int) -> None:
        self.indices = range(rank, num_samples, world_size)
        self.num_samples, self.world_size = num_samples, world_size

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class LoaderBatches:
    """Batches from a DataLoader or any iterable of batches, moved to the device.

    ``seeds_sampler``: the loader's DistributedSampler is the trainer's own, seeded each
    epoch from the data generator's seed (restored with it on resume).
    """

    def __init__(
        self, loader: Iterable[Any], device: torch.device, seeds_sampler: bool = False
    ) -> None:
        self.loader = loader
        self.device = device
        self.seeds_sampler = seeds_sampler
        # Not iter(loader) for a DataLoader: it draws a seed (and starts the workers).
        self.reiterable = isinstance(loader, DataLoader) or iter(loader) is not loader
        self._iterator: Iterator[Any] | None = None

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    @property
    def sharded(self) -> bool:
        sampler = getattr(self.loader, "sampler", None)
        return isinstance(sampler, DistributedSampler | ShardSampler)

    def sample_order(self) -> torch.Tensor | None:
        """As `TensorBatches.sample_order`, for a loader with a `ShardSampler` or an
        unshuffled DistributedSampler."""
        sampler = getattr(self.loader, "sampler", None)
        if isinstance(sampler, ShardSampler):
            return sharded_order(sampler.num_samples, sampler.world_size, equal=False)
        if not isinstance(sampler, DistributedSampler) or sampler.shuffle or sampler.drop_last:
            return None
        dataset_size = len(sampler.dataset)  # type: ignore[arg-type]
        return sharded_order(dataset_size, sampler.num_replicas, equal=True)

    def has_len(self) -> bool:
        try:
            len(self.loader)  # type: ignore[arg-type]
        except TypeError:
            return False
        return True

    def epoch(
        self,
        epoch: int,
        generator: torch.Generator,
        skip: int = 0,
        after_skip: Callable[[], None] | None = None,
    ) -> Iterator[Any]:
        """One pass (re-iterable loaders) or the continuation of a one-shot iterator.

        ``skip`` batches are drawn and dropped (a DataLoader's order comes from the RNG
        state, which the trainer restores before this runs on resume); ``after_skip`` runs
        once they are.
        """
        sampler = getattr(self.loader, "sampler", None)
        if isinstance(sampler, DistributedSampler):
            if self.seeds_sampler:
                sampler.seed = generator.initial_seed()
            sampler.set_epoch(epoch)
        if self.reiterable:
            iterator = iter(self.loader)
        else:
            if self._iterator is None:
                self._iterator = iter(self.loader)
            iterator = self._iterator
        for _ in range(skip):
            next(iterator)
        if after_skip is not None:
            after_skip()
        if self.device.type == "cpu":  # loaders yield CPU tensors: nothing to move
            yield from iterator
            return
        non_blocking = self.device.type == "cuda"
        for batch in iterator:
            yield move_to_device(batch, self.device, non_blocking)


def make_batches(
    x: Any,
    y: Any,
    batch_size: int | None,
    shuffle: bool,
    device: torch.device,
    rank: int = 0,
    world_size: int = 1,
    generator: torch.Generator | None = None,
    training: bool = False,
    sample_weight: Any = None,
) -> TensorBatches | LoaderBatches:
    """Pick the adapter for ``x`` (see module docstring). Distributed, ``training`` data is
    sharded in equal lengths (padded), other data without padding. An IterableDataset is
    batched with ``batch_size`` when one is given (its items are samples, as a DataLoader
    takes them); without one, its items are the batches."""
    batch_size_given = batch_size is not None
    batch_size = 32 if batch_size is None else batch_size
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    if is_array_like(x):
        return TensorBatches(
            x, y, batch_size, shuffle, device, rank, world_size, training, sample_weight
        )
    if sample_weight is not None:
        raise ValueError(
            f"sample_weight is only accepted with tensor or NumPy inputs; x is a "
            f"{type(x).__name__}: make its batches (inputs, targets, sample_weight) instead."
        )
    if y is not None:
        raise ValueError(
            f"y is only accepted with tensor or NumPy inputs; x is a {type(x).__name__}, whose "
            "batches must already be (inputs, targets) pairs."
        )
    if isinstance(x, IterableDataset) and batch_size_given:
        x = DataLoader(
            x,
            batch_size=batch_size,
            generator=torch.Generator() if generator is None else generator,
            pin_memory=device.type == "cuda",
        )
    if isinstance(x, DataLoader):
        batches = LoaderBatches(x, device)
        if world_size > 1 and training and not batches.sharded:
            warnings.warn(
                f"Under torchrun each of the {world_size} processes iterates this whole "
                "DataLoader: they train on the same batches, with no speed-up. Give it a "
                "DistributedSampler (DataLoader(dataset, sampler=DistributedSampler(dataset))) "
                "or pass the Dataset itself, which the Trainer shards.",
                stacklevel=3,
            )
        return batches
    if isinstance(x, Dataset) and hasattr(x, "__len__"):
        sampler: Sampler[int] | None = None
        if world_size > 1 and training:
            sampler = DistributedSampler(x, num_replicas=world_size, rank=rank, shuffle=shuffle)
        elif len(x) >= world_size > 1:  # else every rank scores the few samples
            sampler = ShardSampler(len(x), rank, world_size)
        loader = DataLoader(
            x,
            batch_size=batch_size,
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            # A DataLoader draws a seed from its generator at every pass (and its shuffling
            # sampler another): without one of its own, from torch's global generator.
            generator=torch.Generator() if generator is None else generator,
            pin_memory=device.type == "cuda",
        )
        return LoaderBatches(loader, device, seeds_sampler=isinstance(sampler, DistributedSampler))
    if isinstance(x, list | tuple) and x and all(isinstance(i, DataLoader) for i in x):
        raise ValueError(
            f"got a {type(x).__name__} of {len(x)} DataLoaders where one is taken: several "
            "loaders in one run (Lightning's dataloader_idx) are not supported. Pass one "
            "DataLoader (e.g. over a ConcatDataset of their datasets), or evaluate each "
            "loader in its own call."
        )
    if isinstance(x, str | bytes):  # iterable, but its characters are no batches
        raise TypeError(
            f"got the {type(x).__name__} {x!r} where data is taken: load a file first (e.g. "
            "pandas.read_csv(path) or numpy.load(path)) and pass the arrays."
        )
    if isinstance(x, Iterable):
        return LoaderBatches(x, device)
    raise TypeError(
        f"cannot make batches of a {type(x).__name__}: pass a DataLoader, a Dataset, tensors "
        "or NumPy arrays (with y to train or evaluate), or an iterable of (inputs, targets) "
        "batches."
    )


def validation_batches(
    validation_data: Any,
    batch_size: int | None,
    device: torch.device,
    rank: int = 0,
    world_size: int = 1,
) -> TensorBatches | LoaderBatches | None:
    """The batches of `fit`'s ``validation_data``: ``(x_val, y_val)``, ``(x_val, y_val,
    sample_weight)`` (or a list of those arrays, as Keras takes), or anything `make_batches`
    takes; None without validation data."""
    if validation_data is None:
        return None
    if isinstance(validation_data, list) and _is_keras_pair(validation_data):
        validation_data = tuple(validation_data)
    if isinstance(validation_data, tuple) and len(validation_data) in (2, 3):
        x_val, y_val, weights = (*validation_data, None)[:3]
        return make_batches(
            x_val, y_val, batch_size, False, device, rank, world_size, sample_weight=weights
        )
    if isinstance(validation_data, tuple):
        raise ValueError(
            "validation_data must be (x_val, y_val), (x_val, y_val, sample_weight), a "
            "DataLoader, a Dataset or an iterable of batches; got a tuple of "
            f"{len(validation_data)} items."
        )
    return make_batches(validation_data, None, batch_size, False, device, rank, world_size)


def _is_keras_pair(parts: list[Any]) -> bool:
    """Whether a list given as ``validation_data`` is Keras's ``[x_val, y_val]`` (or with
    ``sample_weight``), whose inputs or targets may be lists or dicts of arrays, rather than
    a list of batches: batches are all of one kind (``(inputs, targets)`` pairs or dicts),
    never a bare array."""
    if len(parts) not in (2, 3) or not all(is_array_like(part) for part in parts):
        return False
    return any(_is_array(part) for part in parts) or len({type(part) for part in parts}) > 1


def batch_count(batches: TensorBatches | LoaderBatches) -> int | None:
    """The number of batches, when known."""
    if isinstance(batches, LoaderBatches) and not batches.has_len():
        return None
    return len(batches)


def split_validation(
    x: Any, y: Any, fraction: float, sample_weight: Any = None
) -> tuple[tuple[Any, Any, Any], tuple[Any, Any, Any]]:
    """Split off the *last* ``fraction`` of the samples, before any shuffling (as Keras):
    ``(x, y, sample_weight)`` for training and for validation."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation_split must be in (0, 1), got {fraction}")
    if is_array_like(x):
        x, y = _to_tensor(x), None if y is None else _to_tensor(y)
        sample_weight = None if sample_weight is None else as_weights(sample_weight)
        total = len(_leaves(x)[0])
        cut = int(total * (1.0 - fraction))
        if cut == 0 or cut == total:
            raise ValueError(
                f"validation_split={fraction} leaves no training or no validation samples "
                f"out of {total}"
            )
        parts = (x, y, sample_weight)
        head = tuple(_map(part, lambda t: t[:cut]) for part in parts)
        tail = tuple(_map(part, lambda t: t[cut:]) for part in parts)
        return head, tail  # type: ignore[return-value]
    if isinstance(x, Dataset) and hasattr(x, "__len__"):
        total = len(x)
        cut = int(total * (1.0 - fraction))
        return (Subset(x, range(cut)), None, None), (Subset(x, range(cut, total)), None, None)
    raise ValueError(
        "validation_split needs tensors, NumPy arrays or a Dataset; with a DataLoader or "
        "another iterable pass validation_data instead."
    )


def _map(structure: Any, fn: Any) -> Any:
    if structure is None:
        return None
    return _rebuild(structure, iter([fn(t) for t in _leaves(structure)]))


_DATA_MODULE_LOADERS = (
    "train_dataloader",
    "val_dataloader",
    "test_dataloader",
    "predict_dataloader",
)


def from_data_module(x: Any, stage: str, validation_data: Any = None) -> tuple[Any, Any]:
    """``(data, validation_data)`` for ``stage`` ("fit", "validate", "test" or "predict").

    When ``x`` is a data module (defines one of ``train_dataloader``, ``val_dataloader``,
    ``test_dataloader``, ``predict_dataloader``: a ``LightningDataModule``, a LightningModule
    with its own loaders, or any such object), its ``prepare_data()`` (on rank 0) and
    ``setup(stage)`` run, and its loaders for the stage are returned: for "fit" the training
    loader, and ``val_dataloader()`` unless ``validation_data`` is given; for "validate"
    ``val_dataloader()``; for "test" ``test_dataloader()``, else ``val_dataloader()``.
    Anything else is returned as it is.
    """
    if isinstance(x, DataLoader | Dataset) or is_array_like(x):
        return x, validation_data
    loaders = {name: user_method(x, name) for name in _DATA_MODULE_LOADERS}
    if not any(loaders.values()):
        return x, validation_data
    wanted = {
        "fit": ["train_dataloader"],
        "validate": ["val_dataloader"],
        "test": ["test_dataloader", "val_dataloader"],
        "predict": ["predict_dataloader"],
    }[stage]
    name = next((n for n in wanted if loaders[n] is not None), None)
    if name is None:
        raise ValueError(
            f"{type(x).__name__} is used as a data module, but defines no "
            f"{' or '.join(f'{n}()' for n in wanted)}, which {_VERB[stage]} needs; define it, "
            "or pass a DataLoader."
        )
    prepare = user_method(x, "prepare_data")
    if prepare is not None:
        prepare_data(prepare)
    setup = user_method(x, "setup")
    if setup is not None:
        setup("validate" if name == "val_dataloader" else stage)
    data = loaders[name]()
    if stage == "fit" and validation_data is None and loaders["val_dataloader"] is not None:
        validation_data = loaders["val_dataloader"]()
    return data, validation_data


_VERB = {"fit": "fit", "validate": "validate", "test": "evaluate", "predict": "predict"}


def prepare_data(prepare: Callable[[], Any]) -> None:
    """Run a ``prepare_data`` hook on rank 0; every rank waits for its downloads."""
    if distributed.rank() == 0:
        prepare()
    if distributed.is_active():
        torch.distributed.barrier()
