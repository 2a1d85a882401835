"""The parts of a batch: inputs, targets and sample weights; what `predict` runs on; the
batch size; and the outputs of many batches put together.

Batches are ``(inputs, targets)``, ``(inputs, targets, sample_weight)`` or a dict whose
``labels`` are the targets (HuggingFace's collators).
"""

from __future__ import annotations

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


def concatenate_outputs(outputs: list[Any], gather: bool, order: torch.Tensor | None = None) -> Any:
    """Concatenate per-batch outputs on the CPU; with ``gather``, add every rank's rows and,
    when ``order`` gives each row's sample index, put them back in input order."""
    if not outputs:
        return torch.empty(0)
    first = outputs[0]
    if isinstance(first, torch.Tensor):
        local = torch.cat(outputs)
        if not gather:
            return local.cpu()
        gathered = distributed.gather(local).cpu()
        if order is None or len(order) != len(gathered):
            return gathered
        in_order = gathered.new_empty((int(order.max()) + 1, *gathered.shape[1:]))
        in_order[order] = gathered  # padding rows repeat samples and write the same values
        return in_order
    if isinstance(first, Mapping):
        return {k: concatenate_outputs([o[k] for o in outputs], gather, order) for k in first}
    if isinstance(first, tuple | list):
        parts = (
            concatenate_outputs([o[i] for o in outputs], gather, order) for i in range(len(first))
        )
        return type(first)(parts)
    return outputs
