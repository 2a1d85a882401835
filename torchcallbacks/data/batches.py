"""The parts of a batch: inputs, targets and sample weights; what `predict` runs on; the
batch size; and the outputs of many batches put together.

Batches are ``(inputs, targets)``, ``(inputs, targets, sample_weight)`` or a dict whose
``labels`` are the targets (HuggingFace's collators).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from torchcallbacks.distributed import process_group as distributed

if TYPE_CHECKING:
    from torchcallbacks.weighting import ClassWeights


def split_batch(batch: Any) -> tuple[Any, Any]:
    """``(inputs, targets)`` of a batch: a pair, or a dict whose ``labels`` are the targets
    (HuggingFace's collators) and whose other keys are the inputs."""
    if isinstance(batch, tuple | list) and len(batch) == 2:
        return batch[0], batch[1]
    if isinstance(batch, Mapping) and "labels" in batch:
        return {k: v for k, v in batch.items() if k != "labels"}, batch["labels"]
    length = f" of length {len(batch)}" if isinstance(batch, tuple | list) else ""
    keys = f" with keys {sorted(batch)} and no 'labels'" if isinstance(batch, Mapping) else ""
    raise ValueError(
        "each batch must be an (inputs, targets) pair or (inputs, targets, sample_weight); "
        f"got {type(batch).__name__}{length}"
        f"{keys}. Wrap single tensors as TensorDataset(x, y), or pass x and y to fit; a dict "
        "batch gives its targets under 'labels'."
    )


def split_weighted_batch(
    batch: Any, class_weights: ClassWeights | None = None
) -> tuple[Any, Any, Any]:
    """``(inputs, targets, sample_weight)`` of an ``(x, y)`` or ``(x, y, sample_weight)``
    batch; with ``class_weights`` the weights come from the targets' classes (training)."""
    size = len(batch) if isinstance(batch, tuple | list) else 0
    if size == 2:
        (inputs, targets), weights = batch, None
    elif size == 3:
        inputs, targets, weights = batch
    else:
        inputs, targets = split_batch(batch)  # any other form, or the error for a bad one
        weights = None
    if class_weights is not None:
        if weights is not None:
            raise ValueError(
                "You cannot `class_weight` and `sample_weight` at the same time: the batches "
                "already carry sample weights."
            )
        weights = class_weights(targets)
    return inputs, targets, weights


def predict_inputs(batch: Any) -> Any:
    """What the module runs on in `predict`: targets and weights are left out, as Keras's
    predict ignores them (a dict batch loses its ``labels``)."""
    if isinstance(batch, tuple | list) and len(batch) in (1, 2, 3):
        batch = batch[0]
    if isinstance(batch, Mapping) and "labels" in batch:
        return split_batch(batch)[0]
    return batch


def batch_size(targets: Any) -> int:
    if isinstance(targets, torch.Tensor):
        return targets.shape[0]
    if isinstance(targets, Mapping):
        return batch_size(next(iter(targets.values())))
    if isinstance(targets, tuple | list):
        return batch_size(targets[0])
    return len(targets)


def cast_floating(inputs: Any, dtype: torch.dtype | None) -> Any:
    """``inputs`` with floating tensors (inside tuples, lists and dicts too) cast to ``dtype``;
    the containers themselves when nothing needs a cast (a ``BatchEncoding`` stays one)."""
    if dtype is None:
        return inputs
    if isinstance(inputs, torch.Tensor):
        return inputs.to(dtype) if inputs.is_floating_point() else inputs
    if isinstance(inputs, Mapping):
        cast = {k: cast_floating(v, dtype) for k, v in inputs.items()}
        return inputs if all(cast[k] is v for k, v in inputs.items()) else cast
    if isinstance(inputs, tuple | list):
        items = [cast_floating(v, dtype) for v in inputs]
        return inputs if all(a is b for a, b in zip(items, inputs)) else tuple(items)
    return inputs


# The value of padded positions in outputs put together from batches of different lengths:
# HuggingFace's Trainer pads predictions and labels with it, and it is the ``ignore_index``
# of torch's cross-entropy (the built-in accuracy leaves such labels out too).
PAD_VALUE = -100


def pad_value(dtype: torch.dtype) -> bool | int:
    """`PAD_VALUE` in ``dtype``: False for booleans, 0 for unsigned integers."""
    if dtype == torch.bool:
        return False
    if not dtype.is_floating_point and not dtype.is_complex and not dtype.is_signed:
        return 0
    return PAD_VALUE


def concatenate_rows(tensors: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
    """The batches' rows in one tensor. Batches of different lengths along the dimensions
    after the first (sequence lengths padded per batch) are padded at the end of those
    dimensions to the longest, with `pad_value`. Batches whose outputs differ in their
    number of dimensions cannot be lined up: their rows come back as a list."""
    if len({t.shape[1:] for t in tensors}) == 1 and tensors[0].ndim:
        return torch.cat(tensors)
    if len({t.ndim for t in tensors}) != 1 or not tensors[0].ndim:
        return [row for t in tensors for row in (t.unbind(0) if t.ndim else [t])]
    dtype = functools.reduce(torch.promote_types, [t.dtype for t in tensors])
    shape = [sum(len(t) for t in tensors)]
    shape += [max(t.shape[dim] for t in tensors) for dim in range(1, tensors[0].ndim)]
    rows = tensors[0].new_full(shape, pad_value(dtype), dtype=dtype)
    start = 0
    for t in tensors:
        rows[(slice(start, start + len(t)), *(slice(0, size) for size in t.shape[1:]))] = t
        start += len(t)
    return rows


def concatenate_outputs(outputs: list[Any], gather: bool, order: torch.Tensor | None = None) -> Any:
    """Concatenate per-batch outputs on the CPU (`concatenate_rows`: ragged batches are
    padded with `PAD_VALUE`); with ``gather``, add every rank's rows and, when ``order``
    gives each row's sample index, put them back in input order."""
    if not outputs:
        return torch.empty(0)
    first = outputs[0]
    if isinstance(first, torch.Tensor):
        local = concatenate_rows(outputs)
        if gather:
            dtype = local.dtype if isinstance(local, torch.Tensor) else first.dtype
            local = distributed.gather(local, pad_value(dtype))
        if isinstance(local, list):
            local = [row.cpu() for row in local]
        else:
            local = local.cpu()
        if order is None or len(order) != len(local):
            return local
        # Each sample's first row: the padding rows of the last shards repeat samples (in
        # batches of other lengths, so their padded parts may differ).
        rows = torch.arange(len(order))
        own_rows = rows.new_full((int(order.max()) + 1,), len(order))
        own_rows = own_rows.scatter_reduce(0, order, rows, reduce="amin")
        if isinstance(local, list):
            return [local[row] for row in own_rows.tolist()]
        return local[own_rows]
    if isinstance(first, Mapping):
        return {k: concatenate_outputs([o[k] for o in outputs], gather, order) for k in first}
    if isinstance(first, tuple | list) and all(
        isinstance(item, str) for output in outputs for item in output
    ):  # the rows of a string field (a DataLoader collates them into a list per batch)
        if gather:
            raise ValueError(
                "predict under torchrun gathers the outputs' tensors from every process; "
                "strings cannot be gathered. Return them as tensors (indices of the "
                "samples), or predict in one process."
            )
        return [item for output in outputs for item in output]
    if isinstance(first, tuple | list):
        parts = (
            concatenate_outputs([o[i] for o in outputs], gather, order) for i in range(len(first))
        )
        return type(first)(parts)
    return outputs
