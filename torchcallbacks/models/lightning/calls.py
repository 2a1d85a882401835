"""Which of Lightning's hooks the `Trainer` calls, and the calls of one run resolved once.

Lightning 2.x calls hooks on the module, on its ``lightning.pytorch.callbacks.Callback``
objects (with ``(trainer, pl_module, ...)`` before the arguments, and before the module's
own hook) and a few on the data module. `MODULE_HOOKS`, `CALLBACK_HOOKS` and
`DATAMODULE_HOOKS` list every one this Trainer calls; `NOT_CALLED` the few it does not,
with the reason a warning gives (`warn_uncalled`).

`HookCalls` resolves, once per `fit`, `evaluate` or `predict`, which hooks someone defines:
for each name an attribute that is None when nobody overrides it (the per-batch cost of a
hook nobody defines is one ``is None`` test), else one callable that calls the callbacks'
hooks and then the module's, returning the module's result (``on_train_batch_start``
returning -1 ends the epoch).
"""

from __future__ import annotations

import functools
import inspect
import sys
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch

from torchcallbacks.overrides import user_method

# The hooks Lightning calls on a LightningModule, all called here (in Lightning's order).
MODULE_HOOKS = (
    "prepare_data", "setup", "configure_sharded_model", "configure_model",
    "configure_optimizers", "configure_callbacks", "teardown",
    "on_fit_start", "on_fit_end", "on_train_start", "on_train_end",
    "on_train_epoch_start", "on_train_epoch_end",
    "on_before_batch_transfer", "transfer_batch_to_device", "on_after_batch_transfer",
    "on_train_batch_start", "on_train_batch_end",
    "optimizer_step", "on_before_zero_grad", "optimizer_zero_grad", "on_before_backward",
    "backward", "on_after_backward", "on_before_optimizer_step",
    "configure_gradient_clipping", "lr_scheduler_step",
    "on_validation_model_zero_grad", "on_validation_model_eval", "on_validation_model_train",
    "on_test_model_eval", "on_test_model_train", "on_predict_model_eval",
    "on_validation_start", "on_validation_end", "on_validation_epoch_start",
    "on_validation_epoch_end", "on_validation_batch_start", "on_validation_batch_end",
    "on_test_start", "on_test_end", "on_test_epoch_start", "on_test_epoch_end",
    "on_test_batch_start", "on_test_batch_end",
    "on_predict_start", "on_predict_end", "on_predict_epoch_start", "on_predict_epoch_end",
    "on_predict_batch_start", "on_predict_batch_end",
    "on_save_checkpoint", "on_load_checkpoint",
)  # fmt: skip

# The hooks Lightning calls on a lightning Callback that are called here.
CALLBACK_HOOKS = (
    "setup", "teardown", "on_fit_start", "on_fit_end", "on_train_start", "on_train_end",
    "on_train_epoch_start", "on_train_epoch_end", "on_train_batch_start", "on_train_batch_end",
    "on_before_zero_grad", "on_before_backward", "on_after_backward",
    "on_before_optimizer_step",
    "on_validation_start", "on_validation_end", "on_validation_epoch_start",
    "on_validation_epoch_end", "on_validation_batch_start", "on_validation_batch_end",
    "on_test_start", "on_test_end", "on_test_epoch_start", "on_test_epoch_end",
    "on_test_batch_start", "on_test_batch_end",
    "on_predict_start", "on_predict_end", "on_predict_epoch_start", "on_predict_epoch_end",
    "on_predict_batch_start", "on_predict_batch_end",
    "on_save_checkpoint", "on_load_checkpoint", "state_dict", "load_state_dict",
    "on_exception",
)  # fmt: skip

# The data module's hooks called here (with its loaders, prepare_data and setup are called
# by `torchcallbacks.data.inputs.from_data_module`). Its batch-transfer hooks take
# precedence over the module's, as in Lightning.
TRANSFER_HOOKS = ("on_before_batch_transfer", "transfer_batch_to_device", "on_after_batch_transfer")
DATAMODULE_HOOKS = ("prepare_data", "setup", *TRANSFER_HOOKS, "teardown", "state_dict",
                    "load_state_dict", "on_exception")  # fmt: skip

NOT_CALLED = {
    "on_sanity_check_start": "this Trainer runs no sanity check before training (as "
    "lightning.Trainer(num_sanity_val_steps=0))",
    "on_sanity_check_end": "this Trainer runs no sanity check before training (as "
    "lightning.Trainer(num_sanity_val_steps=0))",
}

# What `HookCalls` resolves: the hooks called on the module and its Lightning callbacks.
_RESOLVED = tuple(dict.fromkeys(MODULE_HOOKS + CALLBACK_HOOKS[:-3]))
_MODULE_ONLY = frozenset(MODULE_HOOKS) - frozenset(CALLBACK_HOOKS)


def _chain(functions: list[Callable[..., Any]]) -> Callable[..., Any] | None:
    """One callable for ``functions`` (called in order; the last one's result returned)."""
    if not functions:
        return None
    if len(functions) == 1:
        return functions[0]
    *first, last = functions

    def call(*args: Any, **kwargs: Any) -> Any:
        for function in first:
            function(*args, **kwargs)
        return last(*args, **kwargs)

    return call


class HookCalls:
    """The hooks of one run, resolved once (see the module docstring): ``calls.<hook>`` is
    None or a callable taking the module hook's arguments."""

    def __init__(
        self,
        module: torch.nn.Module,
        view: Any = None,
        callbacks: Iterable[Any] = (),
        datamodule: Any = None,
    ) -> None:
        self.callbacks = list(callbacks)
        for name in _RESOLVED:
            functions = []
            if name not in _MODULE_ONLY:
                functions = [
                    functools.partial(method, view, module)
                    for callback in self.callbacks
                    if (method := user_method(callback, name)) is not None
                ]
            own = user_method(module, name)
            if name in TRANSFER_HOOKS and datamodule is not None:
                own = user_method(datamodule, name) or own  # the data module's first
            if own is not None:
                functions.append(own)
            setattr(self, name, _chain(functions))

    def __getattr__(self, name: str) -> Any:  # for type checkers: every hook is set above
        raise AttributeError(name)


def warn_uncalled(module: torch.nn.Module, callbacks: Iterable[Any], datamodule: Any) -> None:
    """One warning naming each hook the module, its Lightning callbacks or the data module
    define that this Trainer does not call (Lightning's hooks outside the lists above)."""
    unknown = []
    owners = [(module, MODULE_HOOKS, "LightningModule")]
    owners += [(callback, CALLBACK_HOOKS, "Callback") for callback in callbacks]
    if datamodule is not None:
        owners.append((datamodule, DATAMODULE_HOOKS, "LightningDataModule"))
    for owner, called, base in owners:
        for name in _lightning_hooks(base):
            if name not in called and user_method(owner, name) is not None:
                reason = NOT_CALLED.get(name, "this Trainer does not call it")
                unknown.append(f"{type(owner).__name__}.{name} ({reason})")
    if unknown:
        warnings.warn(
            "These hooks are defined but will not be called: " + "; ".join(unknown) + ".",
            stacklevel=5,
        )


def _lightning_hooks(base: str) -> tuple[str, ...]:
    """The hook names of Lightning's ``base`` class that a user may override: ours, plus
    those of the installed Lightning (a hook a newer Lightning adds is then named too)."""
    ours = {
        "LightningModule": MODULE_HOOKS,
        "Callback": CALLBACK_HOOKS + tuple(NOT_CALLED),
        "LightningDataModule": DATAMODULE_HOOKS,
    }[base]
    names = dict.fromkeys(ours)
    lightning = sys.modules.get("lightning.pytorch")  # a Lightning class exists only then
    if lightning is not None:
        hooks = sys.modules["lightning.pytorch.core.hooks"]
        classes = {
            "LightningModule": [hooks.ModelHooks, hooks.DataHooks, hooks.CheckpointHooks],
            "Callback": [lightning.Callback],
            "LightningDataModule": [hooks.DataHooks, lightning.LightningDataModule],
        }[base]
        for cls in classes:
            names.update(
                dict.fromkeys(
                    name
                    for name, value in vars(cls).items()
                    if inspect.isfunction(value) and not name.startswith("_")
                )
            )
    return tuple(n for n in names if not n.endswith("_dataloader"))
