"""An exponential moving average (EMA) of a module's weights: Keras's optimizer ``use_ema``.

``Trainer(model, ..., ema_momentum=0.99)`` keeps one: after every optimizer step each
trainable parameter's average becomes ``momentum * average + (1 - momentum) * weight``
(the first step copies the weights, as Keras does), and `fit` ends with the averages
copied into the module. `SwapEMAWeights` puts them in the module for validation,
evaluation and prediction.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch.optim.swa_utils import get_ema_multi_avg_fn


class ExponentialMovingAverage:
    """The moving averages of ``module``'s trainable floating-point parameters.

    Example (what the `Trainer` does with ``ema_momentum``)::

        ema = ExponentialMovingAverage(model, momentum=0.99)
        for batch in batches:
            ...
            optimizer.step()
            ema.update()
        ema.copy_to_module()  # the module now holds the averages

    The parameters are those that require a gradient at the first `update` (Keras averages
    the trainable variables); the averages live on the parameters' devices and add one copy
    of them to memory.
    """

    def __init__(self, module: torch.nn.Module, momentum: float) -> None:
        if isinstance(momentum, bool) or not 0.0 <= float(momentum) <= 1.0:
            raise ValueError(
                f"ema_momentum must be a float in [0, 1] (Keras uses 0.99), got {momentum!r}."
            )
        self.module = module
        self.momentum = float(momentum)
        self.updates = 0  # optimizer steps averaged so far
        self.swapped = False  # True while the averages are in the module (`swap`)
        self._lerp = get_ema_multi_avg_fn(self.momentum)
        self._watched: torch.optim.Optimizer | None = None  # see `watch`
        self._hook: Any = None
        self._stepped = False
        self._names: list[str] = []
        self._parameters: list[torch.Tensor] = []
        self._averages: list[torch.Tensor] = []

    def _bind(self) -> None:
        """Choose the parameters and allocate the averages (at the first update or load)."""
        named = [
            (name, parameter)
            for name, parameter in self.module.named_parameters()
            if parameter.requires_grad and parameter.is_floating_point()
        ]
        self._names = [name for name, _ in named]
        self._parameters = [parameter.detach() for _, parameter in named]
        self._averages = [parameter.clone() for parameter in self._parameters]

    def watch(self, optimizer: torch.optim.Optimizer) -> None:
        """Make the next `update` count only if ``optimizer`` really takes its step (a
        ``GradScaler`` skips the steps whose gradients hold inf or NaN). Call it before
        the step; a cheap identity check once ``optimizer`` is watched."""
        if optimizer is not self._watched:
            if self._hook is not None:
                self._hook.remove()
            self._hook = optimizer.register_step_post_hook(self._record_step)
            self._watched = optimizer

    def _record_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self._stepped = True

    @torch.no_grad()
    def update(self) -> None:
        """Fold the current weights into the averages (call after each optimizer step)."""
        if self._watched is not None:
            stepped, self._stepped = self._stepped, False
            if not stepped:  # skipped by a GradScaler
                return
        if not self._parameters:
            self._bind()
        if self.updates == 0:
            _copy(self._averages, self._parameters)
        elif self._averages:
            self._lerp(self._averages, self._parameters, self.updates)
        self.updates += 1

    @torch.no_grad()
    def swap(self) -> None:
        """Exchange the weights in the module and the averages (a second call undoes it)."""
        for parameter, average in zip(self._parameters, self._averages):
            held = parameter.clone()
            parameter.copy_(average)
            average.copy_(held)
        self.swapped = not self.swapped

    @torch.no_grad()
    def copy_to_module(self) -> None:
        """Put the averages in the module for good, as Keras's ``finalize_variable_values``
        (and its ``ema_overwrite_frequency``) do; the averages keep their values."""
        if self.updates == 0:
            return
        if self.swapped:  # the module holds the averages already
            _copy(self._averages, self._parameters)
            self.swapped = False
        else:
            _copy(self._parameters, self._averages)

    def averages(self) -> dict[str, torch.Tensor]:
        """The averaged weights by parameter name (live tensors), whatever is swapped."""
        held = self._parameters if self.swapped else self._averages
        return dict(zip(self._names, held))

    def state_dict(self) -> dict[str, Any]:
        """Momentum, step count and averages (live tensors), for full checkpoints. While the
        averages are swapped in, the module's state holds them and ``training_weights`` the
        weights training goes on from."""
        return {
            "momentum": self.momentum,
            "updates": self.updates,
            "averages": self.averages(),
            "training_weights": dict(zip(self._names, self._averages)) if self.swapped else None,
        }

    @torch.no_grad()
    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what `state_dict` returned, after the module's own state was loaded.

        The module holds the training weights afterwards, even when the checkpoint was
        written while the averages were swapped in. The momentum stays this object's. A
        state that does not match the module's trainable parameters (names and shapes)
        raises a ``ValueError`` before anything is changed.
        """
        saved = state["averages"]
        training = state.get("training_weights")
        shapes = {
            name: tuple(parameter.shape)
            for name, parameter in self.module.named_parameters()
            if parameter.requires_grad and parameter.is_floating_point()
        }
        if set(saved) != set(shapes):
            raise ValueError(
                "The checkpoint's EMA does not match the module's trainable parameters: "
                f"missing {sorted(set(shapes) - set(saved))}, unexpected "
                f"{sorted(set(saved) - set(shapes))}."
            )
        resized = [
            f"{name}: {tuple(tensor.shape)} in the checkpoint, {shapes[name]} in the module"
            for source in (saved, training or {})
            for name, tensor in source.items()
            if tuple(tensor.shape) != shapes.get(name)
        ]
        if resized:
            raise ValueError(f"The checkpoint's EMA has other shapes: {'; '.join(resized[:5])}.")
        self._bind()
        for name, parameter, average in zip(self._names, self._parameters, self._averages):
            average.copy_(saved[name])
            if training is not None:
                parameter.copy_(training[name])
        self.updates = int(state["updates"])
        self.swapped = False


def _copy(targets: list[torch.Tensor], sources: list[torch.Tensor]) -> None:
    for target, source in zip(targets, sources):
        target.copy_(source)
