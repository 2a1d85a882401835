"""Model outputs: which tensor the loss and metrics score, and clear errors when the output's
structure does not fit the loss.

HuggingFace models return a ``ModelOutput`` (a dict-like object with ``loss``, ``logits``
and more). With a ``loss=`` given, the loss and metrics score its ``logits``; `predict`
returns them. A dict or tuple output with a single named loss is refused with the output's
keys and the ways to choose one. transformers is never imported here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch


def is_model_output(output: Any) -> bool:
    """Whether ``output`` is a transformers ``ModelOutput`` (detected without importing it)."""
    return any(
        cls.__name__ == "ModelOutput" and cls.__module__.split(".")[0] == "transformers"
        for cls in type(output).__mro__
    )


def _field(output: Any, name: str) -> Any:
    if isinstance(output, Mapping):
        return output.get(name)
    return getattr(output, name, None)


def returned_loss(output: Any) -> torch.Tensor | None:
    """The loss a module computed itself: a ``loss`` attribute (ModelOutput) or key."""
    loss = _field(output, "loss")
    return loss if isinstance(loss, torch.Tensor) else None


def logits_of(output: Any) -> Any:
    """What metrics score in an output: its ``logits`` (attribute or key), else its first
    tensor other than the loss; a tensor output is itself."""
    if isinstance(output, torch.Tensor):
        return output
    logits = _field(output, "logits")
    if isinstance(logits, torch.Tensor):
        return logits
    values = output.items() if isinstance(output, Mapping) else enumerate(output)
    for key, value in values:
        if key != "loss" and isinstance(value, torch.Tensor):
            return value
    return None


def logits_or_output(output: Any) -> Any:
    """The output's ``logits`` (attribute or key) when it has them, else the output."""
    if isinstance(output, torch.Tensor):
        return output
    logits = _field(output, "logits")
    return logits if isinstance(logits, torch.Tensor) else output


def prediction_of(output: Any) -> Any:
    """What `predict` returns for one batch: a ModelOutput's logits, else the output."""
    if not isinstance(output, torch.Tensor) and is_model_output(output):
        logits = _field(output, "logits")
        if isinstance(logits, torch.Tensor):
            return logits
    return output


def describe(output: Any) -> str:
    """The output's structure in words: its keys (with shapes) or its length."""
    if isinstance(output, Mapping):
        parts = [f"{key!r}: {_shape(value)}" for key, value in output.items()]
        return f"a {type(output).__name__} with keys {{{', '.join(parts)}}}"
    if isinstance(output, Sequence):
        shapes = ", ".join(map(_shape, output))
        return f"a {type(output).__name__} of {len(output)} outputs ({shapes})"
    return f"a {type(output).__name__}"


def _shape(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"shape {tuple(value.shape)}"
    return type(value).__name__


def scored_output(output: Any, targets: Any, loss_spec: Any, metric_spec: Any) -> Any:
    """The part of a non-tensor ``output`` that the loss scores, or a ValueError that says how
    to choose one. A ModelOutput with ``logits`` and a single loss: the logits."""
    single = not isinstance(loss_spec, list | tuple | dict)
    if single and is_model_output(output):
        logits = _field(output, "logits")
        if isinstance(logits, torch.Tensor):
            return logits
    structured = isinstance(output, Mapping | tuple | list)
    if single and structured and _needs_tensor(loss_spec, metric_spec):
        name = _spec_repr(loss_spec)
        if isinstance(output, Mapping):
            choice = f"give a loss per key, e.g. loss={{{next(iter(output), 'name')!r}: {name}}}"
        else:
            choice = f"give a list with one loss per output, in order (loss=[{name}, ...])"
        raise ValueError(
            f"The model returns {describe(output)}, but loss={_spec_repr(loss_spec)} is a single "
            f"loss, which scores one tensor. Choose what to score: {choice}; or make forward "
            "return the tensor to score (a HuggingFace ModelOutput is scored on its logits)."
        )
    if (
        isinstance(loss_spec, dict)
        and isinstance(output, Mapping)
        and isinstance(targets, torch.Tensor)
    ):
        raise ValueError(
            f"loss is a dict over the outputs {sorted(loss_spec)}, but the targets are a single "
            f"tensor of shape {tuple(targets.shape)}; the model returns {describe(output)}. Give "
            "the targets as a dict with the same keys (y={key: target, ...}), or score one "
            "output: make forward return it (or its logits) and pass loss= on that tensor."
        )
    return output


def _needs_tensor(loss_spec: Any, metric_spec: Any) -> bool:
    """Whether the single loss or the metrics are ones that only take tensors: names and
    torch's loss modules (a callable of the user's may take the whole structure)."""
    if isinstance(loss_spec, str | torch.nn.modules.loss._Loss):
        return True
    metrics = metric_spec if isinstance(metric_spec, list | tuple) else [metric_spec]
    return any(isinstance(metric, str) for metric in metrics)


def _spec_repr(loss_spec: Any) -> str:
    return repr(loss_spec) if isinstance(loss_spec, str) else type(loss_spec).__name__ + "()"
